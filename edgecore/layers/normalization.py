"""BatchNormalization (inference form) and LayerNormalization.

BatchNormalization at inference is a per-channel affine map, y = x * s + t with
s = gamma / sqrt(moving_variance + epsilon) and t = beta - moving_mean * s, which is how
tf.nn.batch_normalization evaluates it.  Where the layer before it is a convolution or
Dense whose only consumer it is, graph/rewrites.py folds it into that layer's kernel and
bias and this layer disappears from the plan; otherwise it runs standalone here.
"""
import numpy as np

from .._kernels import NORM_MODES
from .base import Layer


def _single_axis(layer, axis, rank_with_batch):
    """A Keras axis option (int, or a one-element list in Keras 2) as a positive index."""
    if isinstance(axis, list):
        if len(axis) != 1:
            raise layer.unsupported(f"axis={axis}; normalising over several axes")
        axis = axis[0]
    if not isinstance(axis, int) or not -rank_with_batch <= axis < rank_with_batch:
        raise layer.format_error(f"axis={axis!r} is out of range for rank {rank_with_batch}")
    axis %= rank_with_batch
    if axis == 0:
        raise layer.unsupported("normalising over the batch axis")
    return axis


def batchnorm_scale_shift(layer, raw):
    """(scale, shift) in float64 from a BatchNormalization's Keras-order weights."""
    arrays = list(raw)
    gamma = arrays.pop(0).astype(np.float64) if layer.scale else None
    beta = arrays.pop(0).astype(np.float64) if layer.center else None
    mean, variance = (a.astype(np.float64) for a in arrays)
    scale = 1.0 / np.sqrt(variance + layer.epsilon)
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    return scale, shift


class BatchNormalization(Layer):
    keras_classes = ("BatchNormalization",)
    folded_into = None  # the layer it was folded into, when graph/rewrites folded it

    def parse(self, config):
        self.axis = config.get("axis", -1)
        self.epsilon = float(config.get("epsilon", 1e-3))
        self.center = bool(config.get("center", True))
        self.scale = bool(config.get("scale", True))
        self.momentum = float(config.get("momentum", 0.99))
        if config.get("renorm"):
            raise self.unsupported("batch renormalization (renorm=True)")
        if not self.epsilon >= 0:
            raise self.format_error(f"epsilon={self.epsilon} must be >= 0")

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        shape = input_shapes[0]
        self.axis_index = _single_axis(self, self.axis, len(shape) + 1)
        # The channel axis of channels_last data: foldable into the conv before it.
        self.on_last_axis = self.axis_index == len(shape)
        if shape[self.axis_index - 1] is None:
            raise self.shape_error(f"needs a known size on axis {self.axis_index}")
        return [shape]


    def variables(self):
        names = []
        if self.scale:
            names.append(("gamma", ()))
        if self.center:
            names.append(("beta", ()))
        return tuple(names + [("moving_mean", ()), ("moving_variance", ())])

    def non_trainable_variables(self):
        return ("moving_mean", "moving_variance")

    def weight_shapes(self, input_shapes):
        c = input_shapes[0][self.axis_index - 1]
        return [(c,)] * len(self.variables())

    def param_sizes(self, weight_shapes):
        if self.folded_into is not None:
            return {}
        c = weight_shapes[0][0]
        return {"scale": c, "shift": c}

    def pack(self, raw, views):
        scale, shift = batchnorm_scale_shift(self, raw)
        views["scale"][:] = scale
        views["shift"][:] = shift

    def live_layout(self, trained):
        """gamma and beta (trained when the layer trains), then the frozen moving mean and
        moving variance, as Keras stores them: inference-mode BatchNormalization, whose
        statistics never train (see edgecore.train); the kernel adds epsilon itself."""
        c = self.var_shapes[-1][0]
        layout = [(name, c, trained) for name in ("gamma", "beta")
                  if name in dict(self.variables())]
        return layout + [("moving", 2 * c, False)]

    def live_weights(self, views, read_file):
        weights = read_file()  # the moving statistics never change
        for i, (name, _) in enumerate(self.variables()):
            if name in views:
                weights[i] = views[name].copy()
        return weights

    def live_pack(self, raw, views):
        """Fill live views from the Keras weights [gamma?, beta?, mean, variance]."""
        arrays = list(raw)
        for name in ("gamma", "beta"):
            if name in views:
                views[name][:] = arrays.pop(0)
        c = arrays[0].shape[0]
        views["moving"][:c] = arrays[0]
        views["moving"][c:] = arrays[1]

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        shape = b.shape(x)
        c = shape[self.axis_index]
        if self.live:
            if self.axis_index != len(shape) - 1:
                raise self.unsupported("training a BatchNormalization on a non-channel axis")
            # Inference-mode batch normalization from the current gamma/beta: TF's
            # x * (gamma * inv_std) + (beta - mean * gamma * inv_std).
            b.op("batchnorm_forward", y, x, w=self.live_params.get("gamma"),
                 b=self.live_params.get("beta"), x2=self.live_params["moving"],
                 ints=(b.size(x) // c, c), floats=(self.epsilon,), inplace=True)
            return
        if self.axis_index == len(shape) - 1:
            b.op("channel_affine", y, x, w=self.params["scale"], b=self.params["shift"],
                 ints=(b.size(x) // c, c), inplace=True)
            return
        # Another axis (e.g. axis=1 of NHWC): y = x * scale + shift, broadcast over it.
        from .merging import lower_binary

        param_shape = tuple(c if i == self.axis_index else 1 for i in range(len(shape)))
        lower_binary(b, "multiply", y, x, self.params["scale"], shape, param_shape)
        lower_binary(b, "add", y, y, self.params["shift"], shape, param_shape)


    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        x = node.inputs[0]
        c = b.shape(x)[-1]
        dx = b.temp(b.shape(x)) if need_dx[0] else None
        b.op("batchnorm_backward", dx, x, dy, w=self.live_params.get("gamma"),
             y2=self.live_grads.get("gamma"), b=self.live_grads.get("beta"), b_out=True,
             x2=self.live_params["moving"], ints=(b.size(x) // c, c), floats=(self.epsilon,))
        return [dx]


class LayerNormalization(Layer):
    keras_classes = ("LayerNormalization",)

    def parse(self, config):
        axis = config.get("axis", -1)
        self.axes = [int(a) for a in (axis if isinstance(axis, list) else [axis])]
        self.epsilon = float(config.get("epsilon", 1e-3))
        self.center = bool(config.get("center", True))
        self.scale = bool(config.get("scale", True))
        self.rms_scaling = bool(config.get("rms_scaling", False))

    def normalized_axes(self, shape):
        rank = len(shape) + 1
        axes = sorted(a % rank for a in self.axes)
        if 0 in axes:
            raise self.unsupported("normalising over the batch axis")
        if axes != list(range(rank - len(axes), rank)):
            raise self.unsupported(f"axis={self.axes}; only trailing axes are supported")
        return axes

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        shape = input_shapes[0]
        axes = self.normalized_axes(shape)
        if any(shape[a - 1] is None for a in axes):
            raise self.shape_error("normalised axes must have known sizes")
        return [shape]

    def variables(self):
        # Keras 3 with rms_scaling still creates gamma (and beta when center=True).
        names = []
        if self.scale or self.rms_scaling:
            names.append(("gamma", ()))
        if self.center and not self.rms_scaling:
            names.append(("beta", ()))
        return tuple(names)

    def weight_shapes(self, input_shapes):
        shape = input_shapes[0]
        param = tuple(shape[a - 1] for a in self.normalized_axes(shape))
        return [param] * len(self.variables())

    def param_sizes(self, weight_shapes):
        self.cols = int(np.prod(weight_shapes[0])) if weight_shapes else None
        return {name: self.cols for name, _ in self.variables()}

    def pack(self, raw, views):
        for (name, _), array in zip(self.variables(), raw):
            views[name][:] = array.ravel()

    def lower(self, b, node):
        mode = NORM_MODES["layer_rms_scaling" if self.rms_scaling else "layer"]
        self.lower_normalization(b, node, self.params.get("gamma"), self.params.get("beta"),
                                 mode)

    def lower_normalization(self, b, node, scale, shift, mode):
        """One layernorm op over the normalised trailing axes (a row per other index)."""
        x, y = node.inputs[0], node.outputs[0]
        shape = b.shape(x)
        cols = 1
        for a in self.normalized_axes(shape[1:]):
            cols *= shape[a]
        b.op("layernorm", y, x, w=scale, b=shift, ints=(b.size(x) // cols, cols, mode),
             floats=(self.epsilon,), inplace=True)


class RMSNormalization(LayerNormalization):
    """Keras 3: y = x * rsqrt(mean(x^2) + epsilon) * scale over the trailing axes."""

    keras_classes = ("RMSNormalization",)

    def parse(self, config):
        axis = config.get("axis", -1)
        self.axes = [int(a) for a in (axis if isinstance(axis, list) else [axis])]
        epsilon = config.get("epsilon", 1e-6)
        self.epsilon = 1e-7 if epsilon is None else float(epsilon)  # None: backend epsilon

    def variables(self):
        return (("scale", ()),)

    def lower(self, b, node):
        self.lower_normalization(b, node, self.params["scale"], None, NORM_MODES["rms"])
