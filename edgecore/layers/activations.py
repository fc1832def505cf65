"""Activation strings and the activation layers: Activation, ReLU, LeakyReLU, ELU, Softmax,
PReLU.

The formulas are in kernels/activations.pxi (elementwise; the Keras-3-only ones in
activations_k3.pxi) and kernels/softmax.pxi, rowact.pxi (softmax, log_softmax, sparsemax and
glu, which work on whole rows of the last axis); this module maps Keras names and layer
options onto them.  Every name Keras 3.15's `keras.activations.get` accepts is here except
`threshold`, which needs two arguments a string cannot give (Keras cannot call it either).
Keras 2 and 3 differ on one string: `hard_sigmoid` is clip(0.2x + 0.5, 0, 1) in Keras 2
and relu6(x + 3) / 6 in Keras 3, so the file's Keras version decides.  `glu` halves the
last axis: Keras's Dense and Conv layers still report their `units`/`filters` as the output
shape, but call the function, so the tensor they return is half that (and only shape-blind
layers can follow it in Keras); edgecore's shape rule gives the real shape.
"""
import math
from typing import NamedTuple

from .. import _kernels
from .base import Layer

CODES = _kernels.ACTIVATION_CODES


class Act(NamedTuple):
    code: int
    alpha: float = 0.0
    max_value: float = math.inf
    threshold: float = 0.0

    @property
    def is_linear(self):
        return self.code == CODES["linear"]


LINEAR = Act(CODES["linear"])
# Row activations (not elementwise: each output reads the whole last axis) are names, not
# Acts: lowered as their own op after the layer's, never fused into a GEMM epilogue.
SOFTMAX = "softmax"
LOG_SOFTMAX = "log_softmax"
GLU = "glu"  # a * sigmoid(b) of the last axis's two halves: halves it
SPARSEMAX = "sparsemax"  # Keras <= 3.15's threshold (keras-team/keras#23425)
SPARSEMAX_SIMPLEX = "sparsemax_simplex"  # the projection, as Keras computes it after #23469
ROW_ACTIVATIONS = (SOFTMAX, LOG_SOFTMAX, GLU, SPARSEMAX, SPARSEMAX_SIMPLEX)
_SPARSEMAX_MODE = {SPARSEMAX: _kernels.SPARSEMAX_MODES["keras_3_15"],
                   SPARSEMAX_SIMPLEX: _kernels.SPARSEMAX_MODES["simplex"]}

_BY_NAME = {
    "linear": LINEAR,
    "relu": Act(CODES["relu"]),
    "relu6": Act(CODES["relu"], max_value=6.0),
    "sigmoid": Act(CODES["sigmoid"]),
    "hard_sigmoid": Act(CODES["hard_sigmoid"]),
    "hard_silu": Act(CODES["hard_swish"]),
    "hard_swish": Act(CODES["hard_swish"]),
    "swish": Act(CODES["swish"]),
    "silu": Act(CODES["swish"]),
    "gelu": Act(CODES["gelu"]),
    "elu": Act(CODES["elu"], alpha=1.0),
    "celu": Act(CODES["celu"], alpha=1.0),  # elu's values, but TF's celu'(0) is 2
    "selu": Act(CODES["selu"]),
    "softplus": Act(CODES["softplus"]),
    "softsign": Act(CODES["softsign"]),
    "leaky_relu": Act(CODES["leaky_relu"], alpha=0.2),
    "tanh": Act(CODES["tanh"]),
    "exponential": Act(CODES["exponential"]),
    "mish": Act(CODES["mish"]),
    "log_sigmoid": Act(CODES["log_sigmoid"]),
    # Keras 3 only; Keras's default parameters.
    "hard_shrink": Act(CODES["hard_shrink"], threshold=0.5),
    "hard_tanh": Act(CODES["hard_tanh"]),
    "soft_shrink": Act(CODES["soft_shrink"], threshold=0.5),
    "sparse_plus": Act(CODES["sparse_plus"]),
    "sparse_sigmoid": Act(CODES["sparse_sigmoid"]),
    "squareplus": Act(CODES["squareplus"], alpha=4.0),  # alpha carries b
    "tanh_shrink": Act(CODES["tanh_shrink"]),
}
SUPPORTED_ACTIVATIONS = sorted(list(_BY_NAME) + [SOFTMAX, LOG_SOFTMAX, GLU, SPARSEMAX])
# What keras.activations.get accepts but no model file can use as a string.
_REFUSED = {"threshold": "keras.activations.threshold needs threshold and default_value, "
                         "which an activation string cannot give: Keras cannot call it either"}


def is_row_activation(act):
    return isinstance(act, str)


def _sparsemax_for(layer):
    """Keras <= 3.15 computes sparsemax's threshold from the sum of the cumulative sums
    (keras-team/keras#23425); the fix (#23469) was merged after 3.15.1, so files written by
    a later Keras get the simplex projection."""
    try:
        major, minor = (int(p) for p in str(layer.ctx.keras_version).split(".")[:2])
    except ValueError:
        return SPARSEMAX
    return SPARSEMAX_SIMPLEX if (major, minor) > (3, 15) else SPARSEMAX


def parse_activation(value, layer):
    """An Act, or a row activation's name, for a Keras activation config value (string or
    object)."""
    if value is None:
        return LINEAR
    if isinstance(value, dict):  # Keras 3 may serialise a built-in as an object
        name = (value.get("config") if isinstance(value.get("config"), str) else None)
        value = name or value.get("class_name") or value.get("registered_name")
    if not isinstance(value, str):
        raise layer.format_error(f"activation {value!r} is not a name")
    name = value.split(">")[-1]  # "keras>relu" style registered names
    if name in (SOFTMAX, LOG_SOFTMAX, GLU):
        return name
    if name == SPARSEMAX:
        return _sparsemax_for(layer)
    if name == "hard_sigmoid" and layer.ctx.keras_major == 2:
        return Act(CODES["hard_sigmoid_k2"])
    if name in _REFUSED:
        raise layer.unsupported(f"activation {value!r}: {_REFUSED[name]}")
    if name not in _BY_NAME:
        raise layer.unsupported(f"activation {value!r} is not supported; supported: "
                                f"{', '.join(SUPPORTED_ACTIVATIONS)}")
    return _BY_NAME[name]


def activation_output_shape(act, shape, layer):
    """The shape act(x) has for x of `shape` (no batch): glu halves the last axis."""
    if act != GLU:
        return tuple(shape)
    if not shape or shape[-1] is None or shape[-1] % 2:
        raise layer.shape_error(f"activation 'glu' splits the last axis in halves; it is "
                                f"{shape[-1] if shape else 'absent'}")
    return tuple(shape[:-1]) + (shape[-1] // 2,)


def preact_shape(act, shape):
    """The full shape of act's input for an output of `shape` (inverse of the above)."""
    return tuple(shape[:-1]) + (2 * shape[-1],) if act == GLU else tuple(shape)


def _rows(b, x):
    n = b.shape(x)[-1]
    return b.size(x) // n, n


def lower_activation(b, act, y, x):
    """Emit act(x) -> y (in place when the planner can), row activations included."""
    if act == SOFTMAX:
        lower_softmax(b, y, x, -1)
    elif act == LOG_SOFTMAX:
        b.op("log_softmax", y, x, ints=_rows(b, x), inplace=True)
    elif act in (SPARSEMAX, SPARSEMAX_SIMPLEX):
        rows, n = _rows(b, x)
        b.op("sparsemax", y, x, ints=(rows, n, _SPARSEMAX_MODE[act]), inplace=True,
             scratch=_kernels.sparsemax_scratch_size(n))
    elif act == GLU:
        rows, n = _rows(b, x)
        b.op("glu", y, x, ints=(rows, n // 2))
    elif act.is_linear:
        b.alias(y, x)
    else:
        b.op("activation", y, x, act=act, ints=(b.size(x),), inplace=True)


def lower_activation_backward(b, act, dx, dy, x, y):
    """dx = dL/dx of y = act(x) given dy; x is the activation's input, y its output."""
    if act == SOFTMAX:
        shape = b.shape(y)
        b.op("softmax_backward", dx, None, dy, x2=y, ints=(b.size(y) // shape[-1], shape[-1], 1))
    elif act == LOG_SOFTMAX:
        b.op("log_softmax_backward", dx, None, dy, x2=y, ints=_rows(b, y))
    elif act in (SPARSEMAX, SPARSEMAX_SIMPLEX):
        rows, n = _rows(b, x)
        b.op("sparsemax_backward", dx, x, dy, ints=(rows, n, _SPARSEMAX_MODE[act]),
             scratch=_kernels.sparsemax_scratch_size(n))
    elif act == GLU:
        rows, n = _rows(b, x)
        b.op("glu_backward", dx, x, dy, ints=(rows, n // 2))
    elif act.is_linear:
        b.alias(dx, dy)
    else:
        b.op("activation_backward", dx, x, dy, x2=y, act=act, ints=(b.size(x),))


def lower_softmax(b, y, x, axis):
    shape = b.shape(x)
    axis = axis % len(shape)
    outer = 1
    for d in shape[:axis]:
        outer *= d
    inner = 1
    for d in shape[axis + 1:]:
        inner *= d
    b.op("softmax", y, x, ints=(outer, shape[axis], inner), inplace=True)


class _ElementwiseActivationLayer(Layer):
    """A layer computing one elementwise activation; the planner can fuse it into the
    convolution or Dense before it."""

    act = LINEAR

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        return [activation_output_shape(self.act, input_shapes[0], self)]

    def elementwise_activation(self):
        return None if is_row_activation(self.act) else self.act

    def lower(self, b, node):
        lower_activation(b, self.act, node.outputs[0], node.inputs[0])

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        if dy_is_preact:
            return [dy]
        dx = b.temp(b.shape(node.inputs[0]))
        lower_activation_backward(b, self.act, dx, dy, node.inputs[0], node.outputs[0])
        return [dx]


class Activation(_ElementwiseActivationLayer):
    keras_classes = ("Activation",)

    def parse(self, config):
        self.act = parse_activation(config.get("activation"), self)


class ReLU(_ElementwiseActivationLayer):
    keras_classes = ("ReLU",)

    def parse(self, config):
        max_value = config.get("max_value")
        slope = self.option(config, "negative_slope", 0.0, "alpha")
        threshold = config.get("threshold", 0.0)
        if max_value is not None and max_value < 0:
            raise self.format_error(f"max_value must be >= 0, got {max_value}")
        self.act = Act(CODES["relu"], float(slope or 0.0),
                       math.inf if max_value is None else float(max_value),
                       float(threshold or 0.0))


class LeakyReLU(_ElementwiseActivationLayer):
    keras_classes = ("LeakyReLU",)

    def parse(self, config):
        # Keras 3 calls it negative_slope, Keras 2 alpha; the default is 0.3 in both.
        self.act = Act(CODES["leaky_relu"], float(self.option(config, "negative_slope", 0.3, "alpha")))


class ELU(_ElementwiseActivationLayer):
    keras_classes = ("ELU",)

    def parse(self, config):
        self.act = Act(CODES["elu"], float(config.get("alpha", 1.0)))


class Softmax(Layer):
    keras_classes = ("Softmax",)

    def parse(self, config):
        axis = config.get("axis", -1)
        if isinstance(axis, list):
            if len(axis) != 1:
                raise self.unsupported(f"softmax over several axes {axis}")
            axis = axis[0]
        self.axis = int(axis)

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        rank = len(input_shapes[0]) + 1
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise self.shape_error(f"axis {self.axis} is not a feature axis of a rank-{rank} input")
        return [input_shapes[0]]

    def lower(self, b, node):
        lower_softmax(b, node.outputs[0], node.inputs[0], self.axis)

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        if dy_is_preact:
            return [dy]
        y = node.outputs[0]
        shape = b.shape(y)
        axis = self.axis % len(shape)
        outer = 1
        for d in shape[:axis]:
            outer *= d
        dx = b.temp(shape)
        b.op("softmax_backward", dx, None, dy, x2=y,
             ints=(outer, shape[axis], b.size(y) // (outer * shape[axis])))
        return [dx]


class PReLU(Layer):
    keras_classes = ("PReLU",)

    def parse(self, config):
        shared = config.get("shared_axes") or []
        self.shared_axes = tuple(int(a) for a in (shared if isinstance(shared, list) else [shared]))

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        return [input_shapes[0]]

    def variables(self):
        return (("alpha", ()),)

    def weight_shapes(self, input_shapes):
        shape = list(input_shapes[0])
        for axis in self.shared_axes:
            if not 1 <= axis <= len(shape):
                raise self.format_error(f"shared axis {axis} out of range for input rank {len(shape) + 1}")
            shape[axis - 1] = 1
        if any(d is None for d in shape):
            raise self.shape_error(f"alpha needs known dimensions, input is {input_shapes[0]} "
                                   f"and shared_axes {list(self.shared_axes)}")
        return [tuple(shape)]

    def param_sizes(self, weight_shapes, folded_bn=None):
        return {"alpha": self.elements(weight_shapes)}

    def pack(self, raw, views):
        # The packed form is the Keras one: the backward pass reads it in place too.
        views["alpha"][:] = raw[0].ravel()

    def _geometry(self, b, x):
        """(n, per_sample, rank, sample_shape..., alpha_strides...) as prelu takes it."""
        shape = b.shape(x)
        sample = shape[1:]
        strides, stride = [], 1
        for d, a in zip(reversed(sample), reversed(self.var_shapes[0])):
            strides.append(0 if a == 1 and d != 1 else stride)
            stride *= a
        strides.reverse()
        return (shape[0], b.size(x) // shape[0], len(sample), *sample, *strides)

    def _params(self, b):
        live = b.live_of(self)
        return (live.params, live.grads) if live is not None else (b.weights_of(self), {})

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        params, _ = self._params(b)
        b.op("prelu", y, x, w=params["alpha"], inplace=True,
             ints=self._geometry(b, x))

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        x = node.inputs[0]
        params, grads = self._params(b)
        dx = b.temp(b.shape(x)) if need_dx[0] else None
        b.op("prelu_backward", dx, x, dy, w=params["alpha"], y2=grads.get("alpha"),
             ints=self._geometry(b, x))
        return [dx]
