"""InputLayer, Dense, and the layers that are identities at inference (Dropout family,
GaussianNoise, ActivityRegularization)."""
import numpy as np

from .. import _kernels
from .activations import (LINEAR, activation_output_shape, is_row_activation,
                          lower_activation, lower_activation_backward, parse_activation,
                          preact_shape)
from .base import Layer, check_keras_module, pack_live_gemm


class InputLayer(Layer):
    keras_classes = ("InputLayer",)

    def parse(self, config):
        shape = config.get("batch_shape", config.get("batch_input_shape"))
        if shape is None and config.get("shape") is not None:
            shape = [None] + list(config["shape"])
        if not isinstance(shape, list) or len(shape) < 2:
            raise self.format_error(f"input shape {shape!r} is not [batch, ...features]")
        if config.get("sparse") or config.get("ragged"):
            raise self.unsupported("sparse and ragged inputs are not supported")
        dtype = config.get("dtype", "float32")
        if isinstance(dtype, dict):
            dtype = (dtype.get("config") or {}).get("name", "float32")
        if dtype not in ("float32", "float16", "float64", "uint8", "int32", "int64", None):
            raise self.unsupported(f"input dtype {dtype!r}")
        self.batch_shape = tuple(None if d is None else int(d) for d in shape)
        for d in self.batch_shape[1:]:
            if d is not None and not 0 < d <= 1 << 24:
                raise self.format_error(f"input dimension {d} is out of range")

    def output_shapes(self, input_shapes, call):
        return [self.batch_shape[1:]]


class Identity(Layer):
    """Dropout, SpatialDropout, GaussianNoise/Dropout, ConvNeXt's StochasticDepth: the
    identity at inference.

    In a training plan, Dropout below no training=False call is real inverted dropout
    (Keras's rule: a mask of keep probability 1 - rate, scaled by 1 / (1 - rate)), drawn
    from a counter-based generator seeded per step (edgecore.utils.set_random_seed); the
    other noise layers would be active in Keras's fit too and are refused there.
    StochasticDepth (keras.applications.convnext, drop_path_rate) drops whole samples in
    training; at rate 0 Keras multiplies by floor(1 + U[0, 1)) = 1, an identity."""

    keras_classes = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                     "GaussianNoise", "GaussianDropout", "AlphaDropout",
                     "ActivityRegularization", "StochasticDepth")
    identity_at_inference = True

    def parse(self, config):
        if self.class_name == "StochasticDepth":
            check_keras_module(self)
        key = "drop_path_rate" if self.class_name == "StochasticDepth" else "rate"
        self.rate = float(config.get(key, 0.0) or 0.0)
        if self.class_name == "Dropout" and config.get("noise_shape") is not None:
            self.noise_shape = config["noise_shape"]
        else:
            self.noise_shape = None

    @property
    def keras3_module(self):
        return "keras.src.applications.convnext" if self.class_name == "StochasticDepth" else None

    def active_in_training(self, node):
        """Would Keras's fit apply this layer's noise at this call?"""
        if node.inference_only or self.class_name == "ActivityRegularization":
            return False
        if self.class_name in ("Dropout", "SpatialDropout1D", "SpatialDropout2D",
                               "SpatialDropout3D", "GaussianDropout", "AlphaDropout",
                               "StochasticDepth"):
            return self.rate > 0
        return True  # GaussianNoise

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        return [input_shapes[0]]

    def check_trainable(self, node):
        if self.class_name == "StochasticDepth" and self.active_in_training(node):
            raise self.unsupported(f"StochasticDepth (drop_path_rate={self.rate:g}) drops "
                                   f"whole samples' residual paths in Keras's fit here, and "
                                   f"edgecore trains only through plain Dropout; build the "
                                   f"model with drop_path_rate=0.0 (an identity) or call the "
                                   f"model part holding it with training=False")
        if self.active_in_training(node) and (self.class_name != "Dropout"
                                              or self.noise_shape is not None):
            raise self.unsupported(f"{self.class_name}"
                                   f"{' with noise_shape' if self.noise_shape else ''} is "
                                   f"active in Keras's fit here, and edgecore trains only "
                                   f"through plain Dropout; call the model part holding it "
                                   f"with training=False")

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        if not (b.training and self.active_in_training(node)):
            b.alias(y, x)
            return
        self.check_trainable(node)
        mask = b.temp(b.shape(x))
        b.dropout_masks[node] = mask
        b.op("dropout_forward", y, x, y2=mask, ints=(b.size(x), 0), floats=(self.rate,))

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        mask = b.dropout_masks.get(node)
        if mask is None:
            return [dy]
        dx = b.temp(b.shape(node.inputs[0]))
        b.op("dropout_backward", dx, mask, dy, ints=(b.size(dx),))
        return [dx]


class Dense(Layer):
    """y = act(x @ kernel + bias) over the last axis; N-D inputs are a (M, K) matrix."""

    keras_classes = ("Dense",)
    backward_reads_keras_layout = True  # the packed kernel is in GEMM panels

    def parse(self, config):
        self.units = int(config["units"]) if "units" in config else None
        if self.units is None or not 0 < self.units <= 1 << 24:
            raise self.format_error(f"units={config.get('units')!r} is not a positive size")
        self.use_bias = bool(config.get("use_bias", True))
        self.act = parse_activation(config.get("activation"), self)
        if config.get("lora_rank"):
            raise self.unsupported("LoRA-enabled Dense layers are not supported")
        if config.get("quantization_config") or config.get("dtype") in ("int8", "float8"):
            raise self.unsupported("quantized Dense layers are not supported")

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        shape = input_shapes[0]
        if not shape or shape[-1] is None:
            raise self.shape_error(f"needs a known last dimension, got input {(None,) + tuple(shape)}")
        return [activation_output_shape(self.act, tuple(shape[:-1]) + (self.units,), self)]

    def variables(self):
        return (("kernel", ()), ("bias", ())) if self.use_bias else (("kernel", ()),)

    def weight_shapes(self, input_shapes):
        k = input_shapes[0][-1]
        return [(k, self.units), (self.units,)] if self.use_bias else [(k, self.units)]

    def param_sizes(self, weight_shapes, folded_bn=None):
        k, n = weight_shapes[0]
        sizes = {"kernel": _kernels.gemm_packed_size(k, n)}
        if self.use_bias or folded_bn is not None:
            sizes["bias"] = _kernels.gemm_packed_bias_size(n)
        return sizes

    def pack(self, raw, views):
        _kernels.gemm_pack_b(np.ascontiguousarray(raw[0], dtype=np.float32), views["kernel"])
        if "bias" in views:
            _kernels.gemm_pack_bias(np.ascontiguousarray(raw[1], dtype=np.float32), views["bias"])

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        k = b.shape(x)[-1]
        m = b.size(x) // k
        act = node.activation
        live = b.live_of(self)
        if live is not None:
            # Live weights are in Keras layout; the activation stays a separate op so its
            # input (the pre-activation) is there for the backward pass.
            w, bias = pack_live_gemm(b, live.params["kernel"], k, self.units,
                                     live.params.get("bias"))
            z = y if act == LINEAR else b.temp(preact_shape(act, b.shape(y)))
            b.preact[node] = z
            b.op("gemm", z, x, w=w, b=bias, ints=(m, self.units, k))
            if z is not y:
                lower_activation(b, act, y, z)
            return
        packed = b.weights_of(self)
        if not is_row_activation(act):
            b.op("gemm", y, x, w=packed["kernel"], b=packed.get("bias"), act=act,
                 ints=(m, self.units, k))
            return
        # A row activation runs after the GEMM, in place unless it changes the shape (glu).
        shape = preact_shape(act, b.shape(y))
        z = y if shape == tuple(b.shape(y)) else b.temp(shape)
        b.op("gemm", z, x, w=packed["kernel"], b=packed.get("bias"), ints=(m, self.units, k))
        lower_activation(b, act, y, z)

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        x, y = node.inputs[0], node.outputs[0]
        k = b.shape(x)[-1]
        m = b.size(x) // k
        live = b.live_of(self)
        dz = dy
        if not dy_is_preact and node.activation != LINEAR:
            dz = b.temp(b.shape(b.preact[node]))
            lower_activation_backward(b, node.activation, dz, dy, b.preact[node], y)
        dx = b.temp(b.shape(x)) if need_dx[0] else None
        b.op("dense_backward", dx, x, dz, w=live.params["kernel"],
             y2=live.grads.get("kernel"), b=live.grads.get("bias"), b_out=True,
             scratch=_kernels.dense_grad_scratch_size(m, k, self.units),
             ints=(m, k, self.units))
        return [dx]
