"""The scaling layers keras.applications defines for itself: ConvNeXt's LayerScale and
InceptionResNetV2's CustomScaleLayer.

Both are Keras layer classes that live in the application modules
(`keras.src.applications.convnext`, `...inception_resnet_v2`, and the same in tf_keras),
not in `keras.layers`, so their files name them bare ("LayerScale") or, in tf_keras's
HDF5, by the package it registers CustomScaleLayer under ("Custom>CustomScaleLayer").
In a `.keras` file the config also names the module; one outside Keras is a user's own
class that happens to share the name, and is refused.

  * LayerScale(init_values, projection_dim): y = x * gamma, gamma a trainable vector of
    projection_dim broadcast over the last axis.  Keras 3 creates the variable without a
    name ("variable" in its HDF5 files), tf_keras names it "gamma".
  * CustomScaleLayer(scale)([a, r]): y = a + r * scale, scale a constant of the config,
    multiplied in float32 as TensorFlow does with a Python float.

ConvNeXt's StochasticDepth is an identity at inference and lives with Dropout in core.py.
"""
import math

from .base import Layer, check_keras_module
from .merging import broadcast_shapes, lower_binary, lower_binary_backward, reduce_to_shape

# LayerScale's gamma by its Keras 3 name (what a saved .h5 must say); tf_keras's is an alias.
GAMMA = "variable"


class _ApplicationLayer(Layer):
    def parse(self, config):
        check_keras_module(self)
        self.parse_options(config)

    def parse_options(self, config):
        raise NotImplementedError


class LayerScale(_ApplicationLayer):
    keras_classes = ("LayerScale",)
    keras3_module = "keras.src.applications.convnext"

    def parse_options(self, config):
        dim = config.get("projection_dim")
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= 1 << 24:
            raise self.format_error(f"projection_dim={dim!r} is not a positive size")
        self.projection_dim = dim

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        if not input_shapes[0]:
            raise self.shape_error("needs an input with a feature axis")
        return [broadcast_shapes(self, [input_shapes[0], (self.projection_dim,)])]

    def variables(self):
        return ((GAMMA, ("gamma",)),)

    def weight_shapes(self, input_shapes):
        return [(self.projection_dim,)]

    def param_sizes(self, weight_shapes, folded_bn=None):
        return {GAMMA: self.projection_dim}

    def pack(self, raw, views):
        # The packed form is the Keras one: the backward pass reads it in place too.
        views[GAMMA][:] = raw[0].ravel()

    def _gamma(self, b, rank):
        """(gamma Region, its gradient Region or None, its shape as an operand)."""
        live = b.live_of(self)
        params, grads = (live.params, live.grads) if live is not None else (b.weights_of(self), {})
        return params[GAMMA], grads.get(GAMMA), (1,) * (rank - 1) + (self.projection_dim,)

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        gamma, _, shape = self._gamma(b, len(b.shape(x)))
        lower_binary(b, "multiply", y, x, gamma, b.shape(x), shape)

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        """dx = dy * gamma (summed back over any axis x broadcast along), and, when gamma
        trains, dgamma = sum of dy * x over every axis but the last."""
        x = node.inputs[0]
        gamma, dgamma, shape = self._gamma(b, len(b.shape(x)))
        dx = b.temp(b.shape(x)) if need_dx[0] else None
        if dx is not None or dgamma is not None:
            lower_binary_backward(b, "multiply", dx, dgamma, dy, x, gamma, b.shape(x), shape)
        return [dx]


class CustomScaleLayer(_ApplicationLayer):
    # tf_keras registers the class (package "Custom"); its HDF5 files carry that prefix.
    keras_classes = ("CustomScaleLayer", "Custom>CustomScaleLayer")
    keras3_module = "keras.src.applications.inception_resnet_v2"

    def parse_options(self, config):
        scale = config.get("scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
                or not math.isfinite(scale):
            raise self.format_error(f"scale={scale!r} is not a finite number")
        self.scale = float(scale)

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 2)
        return [broadcast_shapes(self, input_shapes)]

    def lower(self, b, node):
        a, r = node.inputs
        y = node.outputs[0]
        # r * scale first, into y when it has y's shape (then a is added in place:
        # a + s == s + a bit for bit), else into a temporary.
        scaled = y if b.shape(r) == b.shape(y) else b.temp(b.shape(r))
        b.op("scale", scaled, r, ints=(b.size(r),), floats=(self.scale,), inplace=True)
        lower_binary(b, "add", y, scaled, a)

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        a, r = node.inputs
        da = reduce_to_shape(b, dy, a, b.shape(a)) if need_dx[0] else None
        dr = None
        if need_dx[1]:
            scaled = b.temp(b.shape(dy))
            b.op("scale", scaled, dy, ints=(b.size(dy),), floats=(self.scale,))
            dr = reduce_to_shape(b, scaled, r, b.shape(r))
        return [da, dr]


__all__ = ["LayerScale", "CustomScaleLayer"]
