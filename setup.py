"""Build edgecore's one compiled module, ``edgecore._kernels``, from ``kernels/``.

Everything numeric lives in ``kernels/_kernels.pyx``, which includes one ``.pxi`` per
kernel family plus the plan runner, so the runner calls every kernel directly (a
``cimport`` of a non-inline ``cdef`` across extensions would fail at import because
``kernels/`` is not a package path).  The GEMM micro-kernels are the only C: Cython cannot
spell SIMD vector types, so ``kernels/f32_gemm_microkernels.h`` uses GCC/Clang vector
extensions (NEON on aarch64, SSE/AVX2/AVX-512 on x86-64, picked once per process).

Switches (environment variables):
  EDGECORE_DEBUG_KERNELS=1  bounds/wraparound/initialized checks on, -O0 -g
  EDGECORE_NATIVE=1         add -march=native (opt-in: the wheel must run on any CPU of
                            its architecture; runtime ISA selection covers x86-64 anyway)
"""
import os
import sys

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - Cython is a build requirement in pyproject.toml
    sys.exit("building edgecore needs Cython >= 3.0 (pip installs it from pyproject.toml)")

DEBUG = os.environ.get("EDGECORE_DEBUG_KERNELS", "0") == "1"
NATIVE = os.environ.get("EDGECORE_NATIVE", "0") == "1"

# One directive dict for the whole compile unit.  The checked ``def`` wrappers validate
# every shape before entering ``nogil`` code, so the cores run without Cython's checks.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "nonecheck": False,
    "cdivision": True,
    "embedsignature": True,
}

if sys.platform == "win32":  # pragma: no cover - not a target, but keep the build honest
    compile_args = ["/O2"]
else:
    compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
    # Sign-compare and unused-function warnings come from Cython's own generated code.
    compile_args += ["-Wno-unused-function", "-Wno-sign-compare"]
    if NATIVE:
        compile_args.append("-march=native")

extensions = [
    Extension(
        "edgecore._kernels",
        sources=["kernels/_kernels.pyx"],
        include_dirs=["kernels"],
        extra_compile_args=compile_args,
        depends=[os.path.join("kernels", f) for f in sorted(os.listdir("kernels"))],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES, annotate=DEBUG))
