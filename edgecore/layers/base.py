"""What every layer family implements.

A layer family module lists the Keras class names it claims, parses their config (both
Keras 2 and Keras 3 spellings), gives the shape rule, the variables it expects (Keras order,
with other versions' names as aliases), how those variables are packed into the model's
one weights buffer, and its forward lowering into plan ops.  `registry.py` holds the list.

Shapes here exclude the batch axis; `None` is an unknown (symbolic) dimension.
"""
import numpy as np

from ..errors import ModelFormatError, ShapeError, UnsupportedLayerError


class Layer:
    keras_classes = ()
    # Stateless layers whose output is their input at inference (Dropout, GaussianNoise...)
    # set this; the planner then aliases the tensors instead of emitting an op.
    identity_at_inference = False
    # Where Keras 3 finds a class that is not in keras.layers (keras.applications' own
    # layers); a saved .h5 names it, as .keras does, so Keras 3 can load the file back.
    keras3_module = None

    def __init__(self, spec, ctx):
        self.name = spec.name
        self.class_name = spec.class_name
        self.config = spec.config
        self.calls = spec.calls  # CallSpecs from the config (Functional models only)
        self.module = spec.module  # the Python module a .keras config names (else None)
        self.ctx = ctx
        self._trainable = bool(spec.config.get("trainable", True))
        self.parse(spec.config)

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Keras's setter (a nested model overrides it to set every layer inside too)."""
        self._trainable = bool(value)

    # --- config ----------------------------------------------------------------------
    def parse(self, config):
        """Read the options this layer supports; raise for those it does not."""

    def unsupported(self, reason):
        return UnsupportedLayerError(reason, path=self.ctx.path, layer=self.name,
                                     layer_class=self.class_name)

    def format_error(self, reason):
        return ModelFormatError(reason, path=self.ctx.path, layer=self.name,
                                layer_class=self.class_name)

    def shape_error(self, reason):
        return ShapeError(reason, path=self.ctx.path, layer=self.name,
                          layer_class=self.class_name)

    def option(self, config, key, default, *aliases):
        for k in (key,) + aliases:
            if k in config:
                return config[k]
        return default

    # --- shapes ----------------------------------------------------------------------
    def output_shapes(self, input_shapes, call):
        """Output shapes (no batch axis) for the given input shapes of one call."""
        raise NotImplementedError

    def expect_inputs(self, input_shapes, count, rank=None):
        if len(input_shapes) != count:
            raise self.shape_error(f"takes {count} input tensor(s), got {len(input_shapes)}")
        if rank is not None:
            for shape in input_shapes:
                if len(shape) != rank:
                    raise self.shape_error(
                        f"needs inputs of rank {rank + 1} (batch included), got shape "
                        f"{(None,) + tuple(shape)}")

    # --- weights ---------------------------------------------------------------------
    def variables(self):
        """((canonical_name, (aliases...)), ...) in Keras get_weights() order."""
        return ()

    def weight_shapes(self, input_shapes):
        """Shapes of variables(), derived from the config and the first call's inputs."""
        return []

    def param_sizes(self, weight_shapes, folded_bn=None):
        """{key: float count} this layer needs in the weights buffer; folded_bn: the
        BatchNormalization a rewrite folded into this call (its kernel gains a bias)."""
        return {}

    def pack(self, raw, views):
        """Write packed parameters into `views` ({key: float32 view}, the keys
        param_sizes gave) from `raw` (the Keras-order arrays, a folded BatchNormalization
        already applied); called once per layout, one layer at a time."""

    @staticmethod
    def elements(shapes):
        total = 0
        for shape in shapes:
            n = 1
            for d in shape:
                n *= d
            total += n
        return total

    def count_params(self):
        """Number of weights, as Keras's layer.count_params()."""
        return self.elements(getattr(self, "var_shapes", None) or [])

    def get_weights(self):
        """The layer's weights as Keras's get_weights(): Keras order and shapes, from the
        model's weight store (its current values: trained, set or as loaded)."""
        store = getattr(self.ctx, "store", None)
        if store is None:
            raise RuntimeError(f"layer {self.name!r} does not belong to a loaded model")
        return store.weights_of(self)

    def set_weights(self, weights):
        """Keras's layer.set_weights: arrays in get_weights order and shapes (ShapeError
        naming the layer otherwise).  predict, fit and save use them from now on."""
        store = getattr(self.ctx, "store", None)
        if store is None:
            raise RuntimeError(f"layer {self.name!r} does not belong to a loaded model")
        store.set_weights(self, weights)

    @property
    def trainable_weights(self):
        """The weights an optimizer would update, as Keras's layer.trainable_weights
        (arrays of the current values; a nested model's flags apply inside it)."""
        from .model import weight_trainable_flags

        flags = weight_trainable_flags(self)
        return [w for w, f in zip(self.get_weights(), flags) if f] if any(flags) else []

    @property
    def non_trainable_weights(self):
        from .model import weight_trainable_flags

        flags = weight_trainable_flags(self)
        return [w for w, f in zip(self.get_weights(), flags) if not f]

    def non_trainable_variables(self):
        """Names of variables Keras counts as non-trainable even when the layer is
        trainable (BatchNormalization's moving statistics, Normalization's state)."""
        return ()

    # --- training ----------------------------------------------------------------------
    # A layer a training plan reads in Keras layout ("live": trained, updating state such
    # as BatchNormalization's moving statistics, or frozen but on the backward path with
    # a packed form the backward kernels cannot read) has its variables in the trainer's
    # params buffer; the trainer owns where (plan/builder.LiveRegions via b.live_of).

    # Whether the backward pass reads this layer's weights in Keras layout where its
    # packed form differs (a GEMM panel layout): a frozen one that gradients cross is then
    # kept live.  Layers whose packed form is the Keras one read it in place.
    backward_reads_keras_layout = False

    def trainable_variables(self):
        """Names of the variables an optimizer updates when the layer trains."""
        frozen = set(self.non_trainable_variables())
        return tuple(name for name, _ in self.variables() if name not in frozen)

    def batch_dependent(self, node):
        """Whether, in Keras's fit, this call's output depends on the other samples of the
        batch (a BatchNormalization on batch statistics): it cannot be cached per sample."""
        return False

    def live_layout(self, trained):
        """[(key, floats, trainable)] this layer keeps in the params buffer when live:
        by default its Keras variables as they are (Keras layout)."""
        trainable = set(self.trainable_variables()) if trained else set()
        return [(name, self.elements([shape]), name in trainable)
                for (name, _), shape in zip(self.variables(), self.var_shapes)]

    def live_pack(self, raw, views):
        """Fill the live views from the Keras-order weights."""
        for (name, _), array in zip(self.variables(), raw):
            views[name][:] = np.asarray(array, dtype=np.float32).ravel()

    def live_weights(self, views):
        """Keras-order weights of a live layer from its views."""
        return [views[name].reshape(shape).copy()
                for (name, _), shape in zip(self.variables(), self.var_shapes)]

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        """Emit ops for dL/d(inputs) given dy = dL/d(output); need_dx[i] says whether
        input i needs its gradient.  Returns one gradient tensor (or None) per input, and
        writes parameter gradients into the layer's live grads.  Overwrites; the caller
        accumulates."""
        raise self.unsupported(f"{self.class_name} is not trainable in edgecore (no backward "
                               f"pass); set trainable=False on it and on every layer before "
                               f"it, so no gradient has to cross it")

    def check_trainable(self, node):
        """Raise UnsupportedLayerError (at compile) if this call, in the part of the model
        a training step runs, needs something edgecore does not implement."""

    def trains_in_edgecore(self):
        """Whether lower_backward exists for this layer (checked at compile)."""
        return type(self).lower_backward is not Layer.lower_backward

    # --- lowering --------------------------------------------------------------------
    def lower(self, b, node):
        """Emit the ops computing node.outputs from node.inputs into plan builder b."""
        raise NotImplementedError

    def __repr__(self):
        return f"<{self.class_name} {self.name!r}>"


def int_pair(value, what, layer):
    """Keras accepts an int or a pair for sizes, strides, dilation."""
    if isinstance(value, int):
        return (value, value)
    try:
        a, b = value
        return (int(a), int(b))
    except (TypeError, ValueError):
        raise layer.format_error(f"{what} must be an int or a pair, got {value!r}") from None


def check_channels_last(layer, config):
    fmt = config.get("data_format", "channels_last") or "channels_last"
    if fmt != "channels_last":
        raise layer.unsupported(f"data_format={fmt!r}; only channels_last (NHWC) is supported")


def conv_output_length(size, kernel, stride, dilation, padding):
    """Keras's conv_output_length for 'valid'/'same'; None stays None."""
    if size is None:
        return None
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        return (size + stride - 1) // stride
    return (size - effective + stride) // stride


def same_padding(size, kernel, stride, dilation):
    """(before, after) padding of Keras/TF 'same': the odd pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def pack_live_gemm(b, kernel, k, n, bias=None, groups=1):
    """Ops packing a live (Keras-layout, params-buffer) kernel (k, n * groups) and bias
    into arena temporaries in the GEMM micro-kernel's panel layout, one (k, n) block per
    group (a grouped Conv2D's HWIO kernel); returns (packed, packed_bias).  Packing every
    step costs k*n*groups copies against the GEMM's m*k*n*groups multiply-adds."""
    from .. import _kernels

    packed = b.temp((groups * _kernels.gemm_packed_size(k, n),))
    b.op("pack_gemm_b", packed, kernel, ints=(k, n, groups))
    packed_bias = None
    if bias is not None:
        packed_bias = b.temp((groups * _kernels.gemm_packed_bias_size(n),))
        b.op("pack_gemm_bias", packed_bias, bias, ints=(n, groups))
    return packed, packed_bias


# Where Keras's own classes live; a .keras file names the module of every layer.
KERAS_MODULES = ("keras.", "tf_keras.")


def check_keras_module(layer):
    """Refuse a layer whose .keras config names a module outside Keras: a user's own class
    that shares a name with one of keras.applications' (LayerScale is a common one)."""
    if layer.module is not None and not str(layer.module).startswith(KERAS_MODULES):
        raise layer.unsupported(f"{layer.class_name} from module {layer.module!r} is a custom "
                                f"class, not the one keras.applications defines")
