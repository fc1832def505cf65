"""Build edgecore's one compiled module, ``edgecore._kernels``, from ``kernels/``.

Everything numeric lives in ``kernels/_kernels.pyx``, which includes one ``.pxi`` per
kernel family plus the plan runner, so the runner calls every kernel directly (a
``cimport`` of a non-inline ``cdef`` across extensions would fail at import because
``kernels/`` is not a package path).  The GEMM micro-kernels are the only C: Cython cannot
spell SIMD vector types, so ``kernels/f32_gemm_microkernels.h`` uses GCC/Clang vector
extensions (NEON on aarch64, SSE/AVX2/AVX-512 on x86-64, picked once per process).

Threads: the kernels split their work with OpenMP (Cython ``prange``) when the compiler
setuptools uses can build and link an OpenMP program; ``build_ext`` below finds out by
compiling, linking and loading a small one, trying in turn
  -fopenmp / -fopenmp                   GCC (libgomp), Clang with a shared libomp
  -fopenmp / -fopenmp -static-openmp    Termux's clang, which ships only a static libomp
  -Xpreprocessor -fopenmp / -lomp       Apple clang with Homebrew's libomp
and builds without OpenMP (every kernel single-threaded, same results) when none works.
``edgecore.build_info()`` says what was chosen.

Switches (environment variables):
  EDGECORE_DEBUG_KERNELS=1  bounds/wraparound/initialized checks on, -O0 -g
  EDGECORE_NATIVE=1         add -march=native (opt-in: the wheel must run on any CPU of
                            its architecture; runtime ISA selection covers x86-64 anyway)
  EDGECORE_OPENMP=0         build without OpenMP; =1 fail the build unless one variant
                            works; unset: use OpenMP when it works
"""
import ctypes
import os
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - Cython is a build requirement in pyproject.toml
    sys.exit("building edgecore needs Cython >= 3.0 (pip installs it from pyproject.toml)")

DEBUG = os.environ.get("EDGECORE_DEBUG_KERNELS", "0") == "1"
NATIVE = os.environ.get("EDGECORE_NATIVE", "0") == "1"
OPENMP = os.environ.get("EDGECORE_OPENMP", "").strip()  # "0", "1" or "" (auto)

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

# (compile flags, link flags) to try, in order; the first whose probe builds, links and
# loads is used.
OPENMP_VARIANTS = [
    (["-fopenmp"], ["-fopenmp"]),
    (["-fopenmp"], ["-fopenmp", "-static-openmp"]),
    (["-Xpreprocessor", "-fopenmp"], ["-lomp"]),
]

# The probe: a parallel region whose team really ran, in a shared object like the
# extension (a link that leaves an OpenMP symbol unresolved fails when it is loaded).
_PROBE = r"""
#include <omp.h>
int ec_openmp_probe(void) {
    int n = 0;
    #pragma omp parallel num_threads(2) reduction(+:n)
    n += 1;
    return n + 100 * (omp_get_max_threads() > 0);
}
"""


class BuildExt(build_ext):
    """build_ext that decides, for the compiler it is about to use, how to get OpenMP."""

    def build_extensions(self):
        flags = self._openmp_flags()
        for ext in self.extensions:
            if flags is not None:
                ext.extra_compile_args = list(ext.extra_compile_args) + flags[0]
                ext.extra_link_args = list(ext.extra_link_args) + flags[1]
                link = " ".join(flags[1])
            else:
                link = ""
            # What build_info() reports: how OpenMP was linked ("" without it).
            ext.define_macros = list(ext.define_macros) + [("EC_OPENMP_LINK", f'"{link}"')]
        super().build_extensions()

    def _openmp_flags(self):
        if OPENMP == "0" or sys.platform == "win32":
            self._say("EDGECORE_OPENMP=0: building without OpenMP (single-threaded kernels)"
                      if OPENMP == "0" else "no OpenMP on this platform")
            return None
        for compile_flags, link_flags in OPENMP_VARIANTS:
            if self._probe(compile_flags, link_flags):
                self._say(f"OpenMP: compile {' '.join(compile_flags)}, link "
                          f"{' '.join(link_flags)}")
                return compile_flags, link_flags
        if OPENMP == "1":
            sys.exit("EDGECORE_OPENMP=1 but the compiler cannot build and link an OpenMP "
                     "program with any of " + repr(OPENMP_VARIANTS))
        self._say("OpenMP not available for this compiler: building single-threaded kernels")
        return None

    def _probe(self, compile_flags, link_flags):
        """Compile, link (as a shared object) and load the probe with these flags."""
        cc = self.compiler
        with tempfile.TemporaryDirectory(prefix="edgecore-omp-") as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(_PROBE)
            lib = os.path.join(tmp, "probe" + (cc.shared_lib_extension or ".so"))
            try:
                objects = cc.compile([src], output_dir=tmp, extra_postargs=compile_flags)
                cc.link_shared_object(objects, lib, extra_postargs=link_flags)
            except Exception:  # CompileError / LinkError: this variant does not work
                return False
            if self._cross_compiling():
                return True  # cannot load what was built for another machine
            try:
                return ctypes.CDLL(lib).ec_openmp_probe() >= 101
            except (OSError, AttributeError):
                return False

    def _cross_compiling(self):
        plat = getattr(self, "plat_name", None)
        import sysconfig

        return plat is not None and plat != sysconfig.get_platform()

    def _say(self, text):
        print(f"edgecore build: {text}", file=sys.stderr)


extensions = [
    Extension(
        "edgecore._kernels",
        sources=["kernels/_kernels.pyx"],
        include_dirs=["kernels"],
        extra_compile_args=compile_args,
        depends=[os.path.join("kernels", f) for f in sorted(os.listdir("kernels"))],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES, annotate=DEBUG),
      cmdclass={"build_ext": BuildExt})
