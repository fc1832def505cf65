"""BatchNormalization, LayerNormalization and RMSNormalization, forward and backward.

BatchNormalization at inference is a per-channel affine map, y = x * s + t with
s = gamma / sqrt(moving_variance + epsilon) and t = beta - moving_mean * s, which is how
tf.nn.batch_normalization evaluates it.  Where the layer before it is a convolution or
Dense whose only consumer it is (and both are frozen, when training), graph/rewrites.py
folds it into that layer's kernel and bias and this layer disappears from the plan;
otherwise it runs standalone here, in training on batch statistics as Keras does.
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
    """Inference: a per-channel affine map (folded into the convolution before it where
    graph/rewrites.py can, else `channel_affine` from packed scale and shift).

    Training, Keras's rule: a BatchNormalization whose own `trainable` flag is set runs on
    batch statistics in fit (Keras 3: `training and self.trainable`; tf.keras the same,
    except that it honours a `training=False` recorded on the call, which flatten marks
    inference_only) and updates its moving mean and variance with the layer's momentum;
    gamma and beta train when the layer and every model around it are trainable.  A
    frozen one stays in inference mode.  tf.keras's fused kernel (4-D inputs) updates the
    moving variance with the Bessel-corrected batch variance; Keras 3 and tf.keras's 2-D
    path with the biased one.
    """

    keras_classes = ("BatchNormalization",)

    def parse(self, config):
        self.axis = config.get("axis", -1)
        self.epsilon = float(config.get("epsilon", 1e-3))
        self.center = bool(config.get("center", True))
        self.scale = bool(config.get("scale", True))
        self.momentum = float(config.get("momentum", 0.99))
        if config.get("renorm"):
            raise self.unsupported("batch renormalization (renorm=True)")
        if config.get("virtual_batch_size") or config.get("adjustment"):
            raise self.unsupported("virtual_batch_size / adjustment (ghost batch norm)")
        self.fused = config.get("fused")  # tf.keras: None means fused where it can be
        if not self.epsilon >= 0:
            raise self.format_error(f"epsilon={self.epsilon} must be >= 0")

    def axis_index(self, rank):
        """The normalised axis as a positive index into a shape with the batch axis, for
        inputs of `rank` dimensions without it."""
        return _single_axis(self, self.axis, rank + 1)

    def on_last_axis(self, rank):
        """Normalising the channel axis of channels_last data: foldable into a conv."""
        return self.axis_index(rank) == rank

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        shape = input_shapes[0]
        axis = self.axis_index(len(shape))
        if shape[axis - 1] is None:
            raise self.shape_error(f"needs a known size on axis {axis}")
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
        c = input_shapes[0][self.axis_index(len(input_shapes[0])) - 1]
        return [(c,)] * len(self.variables())

    def param_sizes(self, weight_shapes, folded_bn=None):
        c = weight_shapes[0][0]
        return {"scale": c, "shift": c}

    def pack(self, raw, views):
        scale, shift = batchnorm_scale_shift(self, raw)
        views["scale"][:] = scale
        views["shift"][:] = shift

    # --- training ----------------------------------------------------------------------
    def batch_dependent(self, node):
        return self.trainable and not node.inference_only

    def check_trainable(self, node):
        rank = len(node.inputs[0].shape)
        if (self.trainable or self.batch_dependent(node)) and not self.on_last_axis(rank):
            raise self.unsupported("training a BatchNormalization on a non-channel axis")

    def bessel(self, rank):
        """tf.keras's fused batch norm (rank-4/5 inputs) feeds the moving variance the
        Bessel-corrected batch variance; Keras 3 never does."""
        return self.ctx.keras_major == 2 and self.fused is not False and rank in (4, 5)

    def live_layout(self, trained):
        """gamma and beta (trained when the layer trains), then the moving mean and
        variance side by side (one region: the kernels take them as one operand)."""
        c = self.var_shapes[-1][0]
        layout = [(name, c, trained) for name in ("gamma", "beta")
                  if name in dict(self.variables())]
        return layout + [("moving", 2 * c, False)]

    def live_pack(self, raw, views):
        arrays = list(raw)
        for name in ("gamma", "beta"):
            if name in views:
                views[name][:] = arrays.pop(0)
        c = arrays[0].shape[0]
        views["moving"][:c] = arrays[0]
        views["moving"][c:] = arrays[1]

    def live_weights(self, views):
        weights = [views[name].copy() for name in ("gamma", "beta") if name in views]
        c = views["moving"].size // 2
        return weights + [views["moving"][:c].copy(), views["moving"][c:].copy()]

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        shape = b.shape(x)
        axis = self.axis_index(len(shape) - 1)
        c = shape[axis]
        live = b.live_of(self)
        if live is not None:
            if axis != len(shape) - 1:
                raise self.unsupported("training a BatchNormalization on a non-channel axis")
            rows = b.size(x) // c
            if b.training and self.batch_dependent(node):
                saved = b.temp((2 * c,))  # batch mean and 1/sqrt(var + epsilon)
                b.saved[node] = saved
                b.op("batchnorm_train_forward", y, x, w=live.params.get("gamma"),
                     b=live.params.get("beta"), x2=live.params["moving"], y2=saved,
                     ints=(rows, c, int(self.bessel(len(shape)))),
                     floats=(self.momentum, self.epsilon, 1.0 - self.momentum))
                return
            b.op("batchnorm_forward", y, x, w=live.params.get("gamma"),
                 b=live.params.get("beta"), x2=live.params["moving"], ints=(rows, c),
                 floats=(self.epsilon,), inplace=True)
            return
        packed = b.weights_of(self)
        if axis == len(shape) - 1:
            b.op("channel_affine", y, x, w=packed["scale"], b=packed["shift"],
                 ints=(b.size(x) // c, c), inplace=True)
            return
        # Another axis (e.g. axis=1 of NHWC): y = x * scale + shift, broadcast over it.
        from .merging import lower_binary

        param_shape = tuple(c if i == axis else 1 for i in range(len(shape)))
        lower_binary(b, "multiply", y, x, packed["scale"], shape, param_shape)
        lower_binary(b, "add", y, y, packed["shift"], shape, param_shape)

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        x = node.inputs[0]
        shape = b.shape(x)
        axis = self.axis_index(len(shape) - 1)
        c = shape[axis]
        rows = b.size(x) // c
        dx = b.temp(shape) if need_dx[0] else None
        live = b.live_of(self)
        if live is None:  # frozen, inference mode: dx = dy * scale
            from .merging import lower_binary

            param_shape = tuple(c if i == axis else 1 for i in range(len(shape)))
            if dx is not None:
                lower_binary(b, "multiply", dx, dy, b.weights_of(self)["scale"], shape,
                             param_shape)
            return [dx]
        if node in b.saved:
            b.op("batchnorm_train_backward", dx, x, dy, w=live.params.get("gamma"),
                 x2=b.saved[node], y2=live.grads.get("gamma"), b=live.grads.get("beta"),
                 b_out=True, ints=(rows, c))
        else:
            b.op("batchnorm_backward", dx, x, dy, w=live.params.get("gamma"),
                 y2=live.grads.get("gamma"), b=live.grads.get("beta"), b_out=True,
                 x2=live.params["moving"], ints=(rows, c), floats=(self.epsilon,))
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

    def param_sizes(self, weight_shapes, folded_bn=None):
        cols = int(np.prod(weight_shapes[0])) if weight_shapes else 0
        return {name: cols for name, _ in self.variables()}

    def pack(self, raw, views):
        # The packed form is the Keras one: the backward pass reads it in place too.
        for (name, _), array in zip(self.variables(), raw):
            views[name][:] = array.ravel()

    mode_name = "layer"

    def mode(self):
        return NORM_MODES["layer_rms_scaling" if self.rms_scaling else self.mode_name]

    def _params(self, b):
        """(params, grads): live ones, or the packed (Keras-layout) ones of a frozen layer."""
        live = b.live_of(self)
        return (live.params, live.grads) if live is not None else (b.weights_of(self), {})

    def _rows_cols(self, b, x):
        shape = b.shape(x)
        cols = 1
        for a in self.normalized_axes(shape[1:]):
            cols *= shape[a]
        return b.size(x) // cols, cols

    def scale_name(self):
        return "gamma"

    def lower(self, b, node):
        """One layernorm op over the normalised trailing axes (a row per other index)."""
        x, y = node.inputs[0], node.outputs[0]
        params, _ = self._params(b)
        rows, cols = self._rows_cols(b, x)
        b.op("layernorm", y, x, w=params.get(self.scale_name()), b=params.get("beta"),
             ints=(rows, cols, self.mode()), floats=(self.epsilon,), inplace=True)

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        x = node.inputs[0]
        params, grads = self._params(b)
        rows, cols = self._rows_cols(b, x)
        dx = b.temp(b.shape(x)) if need_dx[0] else None
        b.op("layernorm_backward", dx, x, dy, w=params.get(self.scale_name()),
             y2=grads.get(self.scale_name()), b=grads.get("beta"), b_out=True,
             ints=(rows, cols, self.mode()), floats=(self.epsilon,))
        return [dx]


class RMSNormalization(LayerNormalization):
    """Keras 3: y = x * rsqrt(mean(x^2) + epsilon) * scale over the trailing axes."""

    keras_classes = ("RMSNormalization",)

    def parse(self, config):
        axis = config.get("axis", -1)
        self.axes = [int(a) for a in (axis if isinstance(axis, list) else [axis])]
        epsilon = config.get("epsilon", 1e-6)
        self.epsilon = 1e-7 if epsilon is None else float(epsilon)  # None: backend epsilon

    mode_name = "rms"
    rms_scaling = False

    def variables(self):
        return (("scale", ()),)

    def scale_name(self):
        return "scale"
