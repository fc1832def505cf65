"""MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D.

'same' pooling pads like 'same' convolution; Keras's average then divides by the number
of real (unpadded) cells in each window, and max ignores the padding.
"""
from .base import Layer, check_channels_last, conv_output_length, int_pair, same_padding


class _Pooling(Layer):
    """Lowers to `op_name` forward and `op_name + "_backward"`, both taking the integer
    geometry the subclass computes in geometry(b, x, y)."""
    op_name = None

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        b.op(self.op_name, y, x, ints=self.geometry(b, x, y))

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        x = node.inputs[0]
        dx = b.temp(b.shape(x))
        b.op(self.op_name + "_backward", dx, x, dy, ints=self.geometry(b, x, node.outputs[0]))
        return [dx]


class _Pool2D(_Pooling):
    def parse(self, config):
        check_channels_last(self, config)
        self.pool = int_pair(config.get("pool_size", 2), "pool_size", self)
        strides = config.get("strides")
        self.strides = self.pool if strides is None else int_pair(strides, "strides", self)
        self.padding = str(config.get("padding", "valid")).lower()
        if self.padding not in ("valid", "same"):
            raise self.unsupported(f"padding={self.padding!r}")
        if min(self.pool + self.strides) <= 0:
            raise self.format_error("pool_size and strides must be positive")

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1, rank=3)
        h, w, c = input_shapes[0]
        oh = conv_output_length(h, self.pool[0], self.strides[0], 1, self.padding)
        ow = conv_output_length(w, self.pool[1], self.strides[1], 1, self.padding)
        if (oh is not None and oh <= 0) or (ow is not None and ow <= 0):
            raise self.shape_error(f"pool {list(self.pool)} does not fit the {h}x{w} input")
        return [(oh, ow, c)]

    def geometry(self, b, x, y):
        n, h, w, c = b.shape(x)
        _, oh, ow, _ = b.shape(y)
        top = left = 0
        if self.padding == "same":
            top = same_padding(h, self.pool[0], self.strides[0], 1)[0]
            left = same_padding(w, self.pool[1], self.strides[1], 1)[0]
        return (n, h, w, c, *self.pool, *self.strides, top, left, oh, ow)


class MaxPooling2D(_Pool2D):
    keras_classes = ("MaxPooling2D", "MaxPool2D")
    op_name = "maxpool2d"


class AveragePooling2D(_Pool2D):
    keras_classes = ("AveragePooling2D", "AvgPool2D")
    op_name = "avgpool2d"


class _GlobalPool2D(_Pooling):
    def parse(self, config):
        check_channels_last(self, config)
        self.keepdims = bool(config.get("keepdims", False))

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1, rank=3)
        c = input_shapes[0][2]
        return [(1, 1, c) if self.keepdims else (c,)]

    def geometry(self, b, x, y):
        n, h, w, c = b.shape(x)
        return (n, h * w, c)


class GlobalAveragePooling2D(_GlobalPool2D):
    keras_classes = ("GlobalAveragePooling2D", "GlobalAvgPool2D")
    op_name = "global_avgpool"


class GlobalMaxPooling2D(_GlobalPool2D):
    keras_classes = ("GlobalMaxPooling2D", "GlobalMaxPool2D")
    op_name = "global_maxpool"
