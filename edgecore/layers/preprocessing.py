"""Rescaling and Normalization: per-channel (or scalar) affine maps y = x * s + t.

Both run as one `channel_affine` op over the last axis (a scalar is a channel count of 1),
with s and t computed once at load in float64.  Keras's Normalization divides by
max(sqrt(variance), epsilon) with backend epsilon 1e-7; `invert=True` maps back.
"""
import numpy as np

from .base import Layer

KERAS_EPSILON = 1e-7


def _as_vector(value, layer, what):
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise layer.format_error(f"{what}={value!r} is not a finite number or list")
    return array


class _ChannelAffine(Layer):
    """Shared lowering: y = x * scale[c] + shift[c] with c over the last axis (or 1)."""

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        shape = input_shapes[0]
        width = self.affine_width()
        if width not in (1, None) and (not shape or shape[-1] not in (width, None)):
            raise self.shape_error(f"{width} per-channel values do not match input {(None,) + tuple(shape)}")
        return [shape]

    def affine_width(self):
        raise NotImplementedError

    def params_width(self):
        """How many (scale, shift) pairs are packed: one per channel, or one."""
        raise NotImplementedError

    def param_sizes(self, weight_shapes, folded_bn=None):
        return {"scale": self.params_width(), "shift": self.params_width()}

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        c = self.params_width()
        packed = b.weights_of(self)
        b.op("channel_affine", y, x, w=packed["scale"], b=packed["shift"],
             ints=(b.size(x) // c, c), inplace=True)

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        """dx = dy * scale (nothing here trains: Normalization's state is not trainable)."""
        from .merging import lower_binary

        if not need_dx[0]:
            return [None]
        x = node.inputs[0]
        shape = b.shape(x)
        dx = b.temp(shape)
        scale_shape = (1,) * (len(shape) - 1) + (self.params_width(),)
        lower_binary(b, "multiply", dx, dy, b.weights_of(self)["scale"], shape, scale_shape)
        return [dx]


class Rescaling(_ChannelAffine):
    keras_classes = ("Rescaling",)

    def parse(self, config):
        self.scale = _as_vector(config.get("scale", 1.0), self, "scale")
        self.offset = _as_vector(config.get("offset", 0.0), self, "offset")
        self.width = max(self.scale.size, self.offset.size)
        if {self.scale.size, self.offset.size} - {1, self.width}:
            raise self.format_error("scale and offset lists have different lengths")

    def affine_width(self):
        return self.width

    def params_width(self):
        return self.width

    def pack(self, raw, views):
        views["scale"][:] = np.broadcast_to(self.scale, (self.width,))
        views["shift"][:] = np.broadcast_to(self.offset, (self.width,))


class Normalization(_ChannelAffine):
    keras_classes = ("Normalization",)

    def parse(self, config):
        axis = config.get("axis", -1)
        if isinstance(axis, list):
            axis = axis[0] if len(axis) == 1 else axis
        if axis not in (-1,) and not isinstance(axis, int):
            raise self.unsupported(f"axis={axis!r}; only the last axis")
        self.axis = axis
        self.invert = bool(config.get("invert", False))
        mean, variance = config.get("mean"), config.get("variance")
        if (mean is None) != (variance is None):
            raise self.format_error("mean and variance must both be set or both be adapted")
        self.constant = None
        if mean is not None:
            self.constant = (_as_vector(mean, self, "mean"), _as_vector(variance, self, "variance"))

    def output_shapes(self, input_shapes, call):
        shape = input_shapes[0] if input_shapes else ()
        if self.axis != -1 and self.axis != len(shape):
            raise self.unsupported(f"axis={self.axis}; only the last axis")
        return super().output_shapes(input_shapes, call)

    def affine_width(self):
        return None if self.constant is None else max(v.size for v in self.constant)

    def variables(self):
        if self.constant is not None:
            return ()
        return (("mean", ()), ("variance", ()), ("count", ()))

    def non_trainable_variables(self):
        return ("mean", "variance", "count")

    def weight_shapes(self, input_shapes):
        if self.constant is not None:
            return []
        shape = input_shapes[0]
        if shape[-1] is None:
            raise self.shape_error("needs a known last dimension")
        return [(shape[-1],), (shape[-1],), ()]

    def params_width(self):
        if self.constant is not None:
            return max(v.size for v in self.constant)
        return self.var_shapes[0][-1]

    def pack(self, raw, views):
        width = self.params_width()
        mean, variance = self.constant if self.constant is not None else (raw[0], raw[1])
        mean = np.broadcast_to(np.asarray(mean, np.float64).ravel(), (width,))
        variance = np.broadcast_to(np.asarray(variance, np.float64).ravel(), (width,))
        std = np.maximum(np.sqrt(variance), KERAS_EPSILON)
        if self.invert:
            views["scale"][:] = std
            views["shift"][:] = mean
        else:
            views["scale"][:] = 1.0 / std
            views["shift"][:] = -mean / std
