"""Exceptions edgecore raises.  Each names the file, the layer and the reason.

Every problem with a model file or a user's input is one of these, never a bare
KeyError/IndexError from deep inside, so a caller can catch `edgecore.EdgecoreError`
around a load and tell the user exactly which layer of which file is the trouble.
"""


class EdgecoreError(Exception):
    """Base class of every error edgecore raises on purpose."""

    def __init__(self, reason, *, path=None, layer=None, layer_class=None):
        self.reason = reason
        self.path = None if path is None else str(path)
        self.layer = layer
        self.layer_class = layer_class
        super().__init__(self._message())

    def _message(self):
        where = []
        if self.path is not None:
            where.append(f"file {self.path!r}")
        if self.layer is not None:
            cls = f" ({self.layer_class})" if self.layer_class else ""
            where.append(f"layer {self.layer!r}{cls}")
        return (", ".join(where) + ": " if where else "") + str(self.reason)

    def with_context(self, *, path=None, layer=None, layer_class=None):
        """Fill in context the raiser did not know (e.g. the file path); returns self."""
        self.path = self.path if self.path is not None or path is None else str(path)
        self.layer = self.layer if self.layer is not None else layer
        self.layer_class = self.layer_class if self.layer_class is not None else layer_class
        self.args = (self._message(),)
        return self


class ModelFormatError(EdgecoreError, ValueError):
    """The file is not a readable Keras model: corrupt, truncated, inconsistent."""


class UnsupportedLayerError(EdgecoreError, NotImplementedError):
    """The model uses a layer (or an option of one) edgecore does not implement,
    or one it refuses on principle (Lambda layers carry Python bytecode)."""


class ShapeError(EdgecoreError, ValueError):
    """Shapes do not agree: a user input, a weight, or a layer's inputs."""


class MemoryBudgetError(EdgecoreError, MemoryError):
    """The execution plan does not fit the memory budget the caller allowed."""

    def __init__(self, reason, *, required_bytes=None, allowed_bytes=None, **context):
        self.required_bytes = required_bytes
        self.allowed_bytes = allowed_bytes
        super().__init__(reason, **context)


class MissingDependencyError(EdgecoreError, ImportError):
    """A package edgecore needs at run time is not installed (the message says how)."""


class NonFiniteLossError(EdgecoreError, FloatingPointError):
    """Training met a NaN or infinite loss; the step that met it changed no weight."""
