"""ZeroPadding2D, Cropping2D, UpSampling2D, Flatten, Reshape, Permute.

Flatten and Reshape are free: NHWC row-major order is the order Keras flattens
channels_last tensors in, so the output is a view of the input.
"""
from .base import Layer, check_channels_last, int_pair


def _pad_spec(value, what, layer):
    """Keras int | (sym_h, sym_w) | ((top, bottom), (left, right)) -> (t, b, l, r)."""
    if isinstance(value, int):
        return (value,) * 4
    try:
        first, second = value
        if isinstance(first, int) and isinstance(second, int):
            return (first, first, second, second)
        return (int(first[0]), int(first[1]), int(second[0]), int(second[1]))
    except (TypeError, ValueError, IndexError):
        raise layer.format_error(f"{what}={value!r} is not a valid 2-D spec") from None


def view_backward(b, node, dy):
    """The gradient of a view (Flatten, Reshape) is dy seen in the input's shape."""
    dx = b.temp(b.shape(node.inputs[0]))
    b.alias(dx, dy)
    return [dx]


class _Window2D(Layer):
    """ZeroPadding2D and Cropping2D both copy a shifted window (kernel window_copy)."""

    sign = 1

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1, rank=3)
        h, w, c = input_shapes[0]
        t, b, l, r = self.amounts
        oh = None if h is None else h + self.sign * (t + b)
        ow = None if w is None else w + self.sign * (l + r)
        if (oh is not None and oh <= 0) or (ow is not None and ow <= 0):
            raise self.shape_error(f"cropping {list(self.amounts)} leaves nothing of {h}x{w}")
        return [(oh, ow, c)]

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        n, h, w, c = b.shape(x)
        _, oh, ow, _ = b.shape(y)
        top, _, left, _ = self.amounts
        b.op("window_copy", y, x, ints=(n, h, w, c, oh, ow, self.sign * top, self.sign * left))

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        # The gradient is the opposite window: crop what was padded, pad what was cropped.
        x, y = node.inputs[0], node.outputs[0]
        n, h, w, c = b.shape(x)
        _, oh, ow, _ = b.shape(y)
        top, _, left, _ = self.amounts
        dx = b.temp(b.shape(x))
        b.op("window_copy", dx, dy, ints=(n, oh, ow, c, h, w, -self.sign * top, -self.sign * left))
        return [dx]


class ZeroPadding2D(_Window2D):
    keras_classes = ("ZeroPadding2D",)

    def parse(self, config):
        check_channels_last(self, config)
        self.amounts = _pad_spec(config.get("padding", 1), "padding", self)
        if min(self.amounts) < 0 or max(self.amounts) > 1 << 16:
            raise self.format_error(f"padding {list(self.amounts)} is out of range")


class Cropping2D(_Window2D):
    keras_classes = ("Cropping2D",)
    sign = -1

    def parse(self, config):
        check_channels_last(self, config)
        self.amounts = _pad_spec(config.get("cropping", 0), "cropping", self)
        if min(self.amounts) < 0 or max(self.amounts) > 1 << 16:
            raise self.format_error(f"cropping {list(self.amounts)} is out of range")


class UpSampling2D(Layer):
    keras_classes = ("UpSampling2D",)

    def parse(self, config):
        check_channels_last(self, config)
        self.size = int_pair(config.get("size", 2), "size", self)
        self.interpolation = config.get("interpolation", "nearest")
        if self.interpolation not in ("nearest", "bilinear"):
            raise self.unsupported(f"interpolation={self.interpolation!r}; only nearest and bilinear")
        if not all(0 < s <= 1 << 12 for s in self.size):
            raise self.format_error(f"size={list(self.size)} is out of range")

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1, rank=3)
        h, w, c = input_shapes[0]
        return [(None if h is None else h * self.size[0],
                 None if w is None else w * self.size[1], c)]

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        n, h, w, c = b.shape(x)
        if self.interpolation == "nearest":
            b.op("upsample_nearest", y, x, ints=(n, h, w, c, *self.size))
        else:
            b.op("upsample_bilinear", y, x, ints=(n, h, w, c, h * self.size[0], w * self.size[1]))

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        x = node.inputs[0]
        n, h, w, c = b.shape(x)
        dx = b.temp(b.shape(x))
        if self.interpolation == "nearest":
            b.op("upsample_nearest_backward", dx, None, dy, ints=(n, h, w, c, *self.size))
        else:
            b.op("upsample_bilinear_backward", dx, None, dy,
                 ints=(n, h, w, c, h * self.size[0], w * self.size[1]))
        return [dx]


class _View(Layer):
    """A layer whose output is its input seen in another shape: an alias, no op."""

    def lower(self, b, node):
        b.alias(node.outputs[0], node.inputs[0])

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        return view_backward(b, node, dy)


class Flatten(_View):
    keras_classes = ("Flatten",)

    def parse(self, config):
        check_channels_last(self, config)

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        total = 1
        for d in input_shapes[0]:
            total = None if d is None or total is None else total * d
        return [(total,)]


class Reshape(_View):
    keras_classes = ("Reshape",)

    def parse(self, config):
        target = config.get("target_shape")
        if not isinstance(target, list) or not all(isinstance(d, int) for d in target):
            raise self.format_error(f"target_shape={target!r} is not a list of ints")
        if sum(1 for d in target if d == -1) > 1 or any(d == 0 or d < -1 for d in target):
            raise self.format_error(f"target_shape={target} is invalid")
        self.target = tuple(target)

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1)
        total = 1
        for d in input_shapes[0]:
            total = None if d is None or total is None else total * d
        known = 1
        for d in self.target:
            if d != -1:
                known *= d
        if total is None:
            return [tuple(None if d == -1 else d for d in self.target)]
        if -1 in self.target:
            if total % known:
                raise self.shape_error(f"cannot reshape {total} elements to {list(self.target)}")
            return [tuple(total // known if d == -1 else d for d in self.target)]
        if known != total:
            raise self.shape_error(f"cannot reshape {input_shapes[0]} ({total} elements) to "
                                   f"{list(self.target)}")
        return [self.target]


class Permute(Layer):
    keras_classes = ("Permute",)

    def parse(self, config):
        dims = config.get("dims")
        if not isinstance(dims, list) or sorted(dims) != list(range(1, len(dims) + 1)):
            raise self.format_error(f"dims={dims!r} is not a permutation of 1..n")
        if len(dims) > 5:
            raise self.unsupported(f"permutations of rank {len(dims) + 1} (at most 6)")
        self.dims = tuple(dims)

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1, rank=len(self.dims))
        return [tuple(input_shapes[0][d - 1] for d in self.dims)]

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        shape = b.shape(x)
        perm = (0,) + self.dims
        b.op("transpose", y, x, ints=(len(shape), *shape, *perm))

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        """The gradient of a transpose is dy transposed back (the inverse permutation)."""
        perm = (0,) + self.dims
        inverse = [0] * len(perm)
        for i, p in enumerate(perm):
            inverse[p] = i
        shape = b.shape(dy)
        dx = b.temp(b.shape(node.inputs[0]))
        b.op("transpose", dx, dy, ints=(len(shape), *shape, *inverse))
        return [dx]
