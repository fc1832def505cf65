"""edgecore: run and fine-tune Keras CNNs on phones and single-board computers.

    import edgecore as ec
    model = ec.load("mobilenet_v2.h5")      # .h5 from Keras 2 or 3, or a Keras 3 .keras
    model.summary()
    probs = model.predict(x)                # float32 NHWC

The only run-time dependency is numpy (Keras's HDF5 files are read and written by
edgecore.formats.h5native); the numerics are Cython kernels compiled at install time
(edgecore._kernels).
"""
import os as _os

# How idle OpenMP threads wait, unless the user chose (the runtime reads this when it
# loads, with _kernels): they spin for a while, then sleep.  A forward pass enters ~100
# parallel regions microseconds apart, and a thread asleep in the kernel costs a wake-up
# per region.  Measured on the 2-core runner (a KVM guest), MobileNetV2 0.35-96 on 2
# threads: sleeping at once (OMP_WAIT_POLICY=PASSIVE) or after GOMP_SPINCOUNT=2000 took
# ~3 ms against 0.6 ms on one thread; 30000 (~0.3 ms by libgomp's estimate of ~100,000
# iterations per ms) took 0.61 ms.  libgomp's default (300,000) starves our own threads
# longer when another process holds a core.  An explicit GOMP_SPINCOUNT outranks the
# policy in libgomp; LLVM's libomp (clang, Termux) ignores it and, with PASSIVE, never
# spins.  See README, Threads.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _os.environ["GOMP_SPINCOUNT"] = "30000"

try:
    from . import _kernels  # noqa: F401  (compiled at install time)
except ImportError as _exc:  # pragma: no cover - depends on how Python was started
    _here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.path.exists(_os.path.join(_here, _os.pardir, "kernels", "_kernels.pyx")):
        raise ImportError(
            f"edgecore was imported from its source tree ({_here}), which holds no compiled "
            "kernels: Python puts the current directory first on sys.path (python -m, "
            "python -c, a script next to edgecore/). Run from another directory or use the "
            "installed `edgecore` command; for development install with `pip install -e .`"
        ) from _exc
    raise

from .errors import (EdgecoreError, MemoryBudgetError, MissingDependencyError, ModelFormatError,
                     NonFiniteLossError, ShapeError, UnsupportedLayerError)

__version__ = "0.1.0"

__all__ = ["load", "build_info", "Model", "EdgecoreError", "ModelFormatError", "UnsupportedLayerError",
           "ShapeError", "MemoryBudgetError", "MissingDependencyError", "NonFiniteLossError", "optimizers", "losses",
           "callbacks", "utils",
           "transfer", "__version__"]


def load(path, memory_budget=None, input_shape=None, _rewrites=None, num_threads=None,
         input_channels=None):
    """Load a Keras model file (.h5 written by Keras 2 or 3, or a Keras 3 .keras).

    num_threads: threads the model's kernels use within each call (None: the CPUs this
    process may run on; 1: no thread is started).  model.num_threads changes it later.

    memory_budget: bytes (int) or a size like "48MB" / "64MiB".  The weights and, when
    the input shape is known (declared by the model or given as input_shape, without the
    batch axis), the batch-1 plan are sized from the config first; if they do not fit,
    MemoryBudgetError is raised before any weight is read.  Later plans (other batch
    sizes) are checked against the same budget before they run.

    Raises ModelFormatError for an unreadable or inconsistent file, UnsupportedLayerError
    for a layer edgecore does not implement (or refuses, like Lambda), naming the file,
    the layer and the reason.  Never executes code from the file.
    input_channels=1: a grayscale model from an RGB-pretrained one.  The first Conv2D's
    kernel is summed over its input channels with the preprocessing before it (Rescaling,
    Normalization) folded in, so a 1-channel image gives the output the RGB model gives
    for that image replicated to 3 channels, at a third of the first layer's multiply-adds
    (two thirds when per-channel offsets meet zero padding; see edgecore/grayscale.py).
    input_shape is then the 1-channel shape.  `save` writes a Keras model with that input.
    (_rewrites: graph rewrites to apply instead of the default folds; for tests.)
    """
    from .model import load_model

    if input_channels is None:
        return load_model(path, memory_budget, input_shape, _rewrites, num_threads)
    if input_channels != 1:
        raise ValueError(f"input_channels must be None or 1, got {input_channels!r}")
    from .grayscale import fold_input_channels

    rgb = load_model(path, memory_budget, None, _rewrites, num_threads)
    return fold_input_channels(rgb, memory_budget, input_shape, num_threads)


def build_info():
    """How the kernels were built and what they use here: {"openmp": bool, "openmp_version",
    "openmp_linked" (the runtime and link flags, None without OpenMP), "compiler",
    "gemm_isa" and "gemm_tile" (the GEMM micro-kernel chosen for this CPU), "dwconv_isa"
    (the depthwise micro-kernels chosen for this CPU), "activation_isa" (the float32 vector
    activations' variant; EDGECORE_ACTIVATION_ISA forces one), "cpu_count"
    (the CPUs this process may use: the default num_threads)}."""
    from .plan.threads import build_info as _build_info

    return _build_info()


def __getattr__(name):
    # Heavy parts (numpy, the file readers, the planner) load on first use, so `import edgecore` is
    # cheap on a phone; `edgecore.load` pulls them in.
    if name == "Model":
        from .model import Model

        return Model
    if name in ("optimizers", "losses", "callbacks", "utils", "transfer"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'edgecore' has no attribute {name!r}")
