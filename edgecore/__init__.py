"""edgecore: run and fine-tune Keras CNNs on phones and single-board computers.

    import edgecore as ec
    model = ec.load("mobilenet_v2.h5")      # .h5 from Keras 2 or 3, or a Keras 3 .keras
    model.summary()
    probs = model.predict(x)                # float32 NHWC

Run-time dependencies are numpy and h5py; the numerics are Cython kernels compiled at
install time (edgecore._kernels).
"""
try:
    from . import _kernels  # noqa: F401  (compiled at install time)
except ImportError as _exc:  # pragma: no cover - depends on how Python was started
    import os as _os

    _here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.path.exists(_os.path.join(_here, _os.pardir, "kernels", "_kernels.pyx")):
        raise ImportError(
            f"edgecore was imported from its source tree ({_here}), which holds no compiled "
            "kernels: Python puts the current directory first on sys.path (python -m, "
            "python -c, a script next to edgecore/). Run from another directory or use the "
            "installed `edgecore` command; for development install with `pip install -e .`"
        ) from _exc
    raise

from .errors import (EdgecoreError, MemoryBudgetError, ModelFormatError, ShapeError,
                     UnsupportedLayerError)
from .model import Model

__version__ = "0.1.0"

__all__ = ["load", "Model", "EdgecoreError", "ModelFormatError", "UnsupportedLayerError",
           "ShapeError", "MemoryBudgetError", "__version__"]


def load(path, _rewrites=None):
    """Load a Keras model file (.h5 written by Keras 2 or 3, or a Keras 3 .keras).

    Raises ModelFormatError for an unreadable or inconsistent file, UnsupportedLayerError
    for a layer edgecore does not implement (or refuses, like Lambda), naming the file,
    the layer and the reason.  Never executes code from the file.
    (_rewrites: graph rewrites to apply instead of the default folds; for tests.)
    """
    from .loader import (INFERENCE_REWRITES, WeightReader, compile_inference, index_weights,
                         load_graph)

    model_file, ctx, graph = load_graph(path)
    try:
        reader = WeightReader(model_file, index_weights(model_file, graph))
        flat, weights = compile_inference(
            graph, reader, INFERENCE_REWRITES if _rewrites is None else _rewrites)
    finally:
        model_file.close()
    return Model(graph, flat, weights, ctx, trainable=model_file.spec.trainable)
