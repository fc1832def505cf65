"""Conv2D, DepthwiseConv2D, SeparableConv2D (channels_last).

Padding follows Keras/TF exactly: 'valid' is none; 'same' pads so the output is
ceil(size / stride), with the odd pixel at the bottom/right (base.same_padding).  A
BatchNormalization folded in by graph/rewrites.py arrives as an already-folded kernel and
bias, so packing here never needs to know about it beyond "there is now a bias".
"""
import numpy as np

from .. import _kernels
from .activations import (LINEAR, activation_output_shape, is_row_activation,
                          lower_activation, lower_activation_backward, parse_activation,
                          preact_shape)
from .base import (Layer, check_channels_last, conv_output_length, int_pair, pack_live_gemm,
                   same_padding)

MAX_KERNEL = 1 << 12


class _Conv2DBase(Layer):
    def parse_common(self, config):
        check_channels_last(self, config)
        self.kernel_size = int_pair(config.get("kernel_size"), "kernel_size", self)
        self.strides = int_pair(config.get("strides", 1), "strides", self)
        self.dilation = int_pair(config.get("dilation_rate", 1), "dilation_rate", self)
        self.padding = str(config.get("padding", "valid")).lower()
        if self.padding not in ("valid", "same"):
            raise self.unsupported(f"padding={self.padding!r}; only 'valid' and 'same'")
        for what, pair in (("kernel_size", self.kernel_size), ("strides", self.strides),
                           ("dilation_rate", self.dilation)):
            if not all(0 < v <= MAX_KERNEL for v in pair):
                raise self.format_error(f"{what}={list(pair)} is out of range")
        self.use_bias = bool(config.get("use_bias", True))
        self.act = parse_activation(config.get("activation"), self)

    def spatial_output(self, h, w):
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation
        oh = conv_output_length(h, kh, sh, dh, self.padding)
        ow = conv_output_length(w, kw, sw, dw, self.padding)
        if (oh is not None and oh <= 0) or (ow is not None and ow <= 0):
            raise self.shape_error(f"kernel {list(self.kernel_size)} (dilation "
                                   f"{list(self.dilation)}) does not fit the {h}x{w} input")
        return oh, ow

    def pads(self, h, w, node=None):
        """(top, bottom, left, right) for a concrete input size (and a call that may have
        absorbed a ZeroPadding2D: graph/rewrites.fold_zero_padding_into_conv)."""
        if node is not None and node.extra_pads:
            return tuple(node.extra_pads)
        if self.padding == "valid":
            return (0, 0, 0, 0)
        return (same_padding(h, self.kernel_size[0], self.strides[0], self.dilation[0])
                + same_padding(w, self.kernel_size[1], self.strides[1], self.dilation[1]))

    def geometry(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        n, h, w, c = b.shape(x)
        _, oh, ow, _ = b.shape(y)
        top, _, left, _ = self.pads(h, w, node)
        return (n, h, w, c, *self.kernel_size, *self.strides, *self.dilation, top, left, oh, ow)

    def in_channels(self, input_shapes):
        self.expect_inputs(input_shapes, 1, rank=3)
        c = input_shapes[0][2]
        if c is None:
            raise self.shape_error("needs a known number of input channels")
        return c

    def activated(self, shape):
        """The output shape for the convolution's own output `shape` (glu halves it)."""
        return activation_output_shape(self.act, shape, self)

    def lower_with_activation(self, b, node, emit, live):
        """emit(out, act) lowers the convolution into `out` with a fused elementwise
        activation; a row activation (softmax, glu...) is a separate op after it.  A live
        (training) layer keeps the pre-activation instead, for its backward pass."""
        act, y = node.activation, node.outputs[0]
        shape = preact_shape(act, b.shape(y))
        if live:
            z = y if act == LINEAR else b.temp(shape)
            b.preact[node] = z
            emit(z, None)
            if z is not y:
                lower_activation(b, act, y, z)
            return
        if not is_row_activation(act):
            emit(y, act)
            return
        z = y if shape == tuple(b.shape(y)) else b.temp(shape)
        emit(z, None)
        lower_activation(b, act, y, z)

    def backward_preact(self, b, node, dy, dy_is_preact):
        """dL/d(pre-activation) from dL/d(output)."""
        if dy_is_preact or node.activation == LINEAR:
            return dy
        dz = b.temp(b.shape(b.preact[node]))
        lower_activation_backward(b, node.activation, dz, dy, b.preact[node], node.outputs[0])
        return dz


class Conv2D(_Conv2DBase):
    keras_classes = ("Conv2D", "Convolution2D")
    backward_reads_keras_layout = True  # the packed kernel is in GEMM panels

    def parse(self, config):
        self.parse_common(config)
        self.filters = int(config.get("filters", 0))
        self.groups = int(config.get("groups", 1) or 1)
        if not 0 < self.filters <= 1 << 20:
            raise self.format_error(f"filters={config.get('filters')!r} is not a positive size")
        if self.groups < 1 or self.filters % self.groups:
            raise self.format_error(f"{self.filters} filters do not split into {self.groups} groups")

    def output_shapes(self, input_shapes, call):
        c = self.in_channels(input_shapes)
        if c % self.groups:
            raise self.shape_error(f"{c} input channels do not split into {self.groups} groups")
        oh, ow = self.spatial_output(*input_shapes[0][:2])
        return [self.activated((oh, ow, self.filters))]

    def variables(self):
        return (("kernel", ()), ("bias", ())) if self.use_bias else (("kernel", ()),)

    def weight_shapes(self, input_shapes):
        c = self.in_channels(input_shapes)
        kernel = (*self.kernel_size, c // self.groups, self.filters)
        return [kernel, (self.filters,)] if self.use_bias else [kernel]

    def param_sizes(self, weight_shapes, folded_bn=None):
        kh, kw, cig, co = weight_shapes[0]
        wsize, bsize = _kernels.conv2d_packed_sizes(kh, kw, cig, co, self.groups)
        if self.use_bias or folded_bn is not None:
            return {"kernel": wsize, "bias": bsize}
        return {"kernel": wsize}

    def pack(self, raw, views):
        _kernels.conv2d_pack_weights(np.ascontiguousarray(raw[0], dtype=np.float32),
                                     self.groups, views["kernel"])
        if "bias" in views:
            _kernels.conv2d_pack_bias(np.ascontiguousarray(raw[1], dtype=np.float32),
                                      self.groups, views["bias"])

    def lower(self, b, node):
        x = node.inputs[0]
        geom = self.geometry(b, node)
        n, h, w, c = b.shape(x)
        w_shape = (*self.kernel_size, c // self.groups, self.filters)
        scratch = _kernels.conv2d_scratch_size(b.shape(x), w_shape, self.strides,
                                               self.dilation, self.pads(h, w, node), self.groups,
                                               b.nthreads)
        live = b.live_of(self)
        if live is not None:
            kernel, bias = pack_live_gemm(b, live.params["kernel"],
                                          w_shape[0] * w_shape[1] * w_shape[2],
                                          self.filters // self.groups, live.params.get("bias"),
                                          self.groups)
        else:
            packed = b.weights_of(self)
            kernel, bias = packed["kernel"], packed.get("bias")
        self.lower_with_activation(b, node, lambda out, act: b.op(
            "conv2d", out, x, w=kernel, b=bias, act=act, scratch=scratch,
            ints=(*geom, self.filters, self.groups)), live is not None)

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        x = node.inputs[0]
        geom = (*self.geometry(b, node), self.filters, self.groups)
        n, h, w, c = b.shape(x)
        scratch = _kernels.conv2d_grad_scratch_size(
            b.shape(x), (*self.kernel_size, c // self.groups, self.filters), self.strides,
            self.dilation, self.pads(h, w, node), self.groups)
        dz = self.backward_preact(b, node, dy, dy_is_preact)
        dx = b.temp(b.shape(x)) if need_dx[0] else None
        live = b.live_of(self)
        b.op("conv2d_backward", dx, x, dz, w=live.params["kernel"],
             y2=live.grads.get("kernel"), b=live.grads.get("bias"), b_out=True,
             scratch=scratch, ints=geom)
        return [dx]


class DepthwiseConv2D(_Conv2DBase):
    keras_classes = ("DepthwiseConv2D",)

    def parse(self, config):
        self.parse_common(config)
        self.depth_multiplier = int(config.get("depth_multiplier", 1))
        if not 0 < self.depth_multiplier <= 1 << 16:
            raise self.format_error(f"depth_multiplier={self.depth_multiplier} is out of range")
        if int(config.get("groups", 1) or 1) != 1:  # Keras 2 writes groups: 1 here
            raise self.unsupported("groups != 1 on a depthwise convolution")

    def output_shapes(self, input_shapes, call):
        c = self.in_channels(input_shapes)
        oh, ow = self.spatial_output(*input_shapes[0][:2])
        return [self.activated((oh, ow, c * self.depth_multiplier))]

    def variables(self):
        # Keras 2 names the kernel depthwise_kernel, Keras 3 kernel; same (kh, kw, C, M).
        kernel = ("kernel", ("depthwise_kernel",))
        return (kernel, ("bias", ())) if self.use_bias else (kernel,)

    def weight_shapes(self, input_shapes):
        c = self.in_channels(input_shapes)
        kernel = (*self.kernel_size, c, self.depth_multiplier)
        return [kernel, (c * self.depth_multiplier,)] if self.use_bias else [kernel]

    def param_sizes(self, weight_shapes, folded_bn=None):
        kh, kw, c, m = weight_shapes[0]
        sizes = {"kernel": kh * kw * c * m}
        if self.use_bias or folded_bn is not None:
            sizes["bias"] = c * m
        return sizes

    def pack(self, raw, views):
        # (kh, kw, C, M) row-major already is the kernel's HWCM layout.
        views["kernel"][:] = np.asarray(raw[0], dtype=np.float32).ravel()
        if "bias" in views:
            views["bias"][:] = raw[1]

    def _params(self, b):
        """(params, grads): HWCM is both the Keras layout and the kernel's, so a frozen
        (packed, unfolded) kernel is read in place like a live one."""
        live = b.live_of(self)
        return (live.params, live.grads) if live is not None else (b.weights_of(self), {})

    def lower(self, b, node):
        x = node.inputs[0]
        geom = self.geometry(b, node)
        params, _ = self._params(b)
        self.lower_with_activation(b, node, lambda out, act: b.op(
            "dwconv2d", out, x, w=params["kernel"], b=params.get("bias"), act=act,
            ints=(*geom, self.depth_multiplier)), b.live_of(self) is not None or b.training)

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        x = node.inputs[0]
        dz = self.backward_preact(b, node, dy, dy_is_preact)
        dx = b.temp(b.shape(x)) if need_dx[0] else None
        params, grads = self._params(b)
        b.op("dwconv2d_backward", dx, x, dz, w=params["kernel"],
             y2=grads.get("kernel"), b=grads.get("bias"), b_out=True,
             ints=(*self.geometry(b, node), self.depth_multiplier))
        return [dx]


class SeparableConv2D(_Conv2DBase):
    """Depthwise (no bias, linear) into a temporary, then a pointwise GEMM with bias."""

    keras_classes = ("SeparableConv2D", "SeparableConvolution2D")

    def parse(self, config):
        self.parse_common(config)
        self.filters = int(config.get("filters", 0))
        self.depth_multiplier = int(config.get("depth_multiplier", 1))
        if not 0 < self.filters <= 1 << 20 or not 0 < self.depth_multiplier <= 1 << 16:
            raise self.format_error("filters and depth_multiplier must be positive sizes")

    def output_shapes(self, input_shapes, call):
        self.in_channels(input_shapes)
        oh, ow = self.spatial_output(*input_shapes[0][:2])
        return [self.activated((oh, ow, self.filters))]

    def variables(self):
        names = [("depthwise_kernel", ()), ("pointwise_kernel", ())]
        return tuple(names + [("bias", ())]) if self.use_bias else tuple(names)

    def weight_shapes(self, input_shapes):
        c = self.in_channels(input_shapes)
        m = self.depth_multiplier
        shapes = [(*self.kernel_size, c, m), (1, 1, c * m, self.filters)]
        return shapes + [(self.filters,)] if self.use_bias else shapes

    backward_reads_keras_layout = True  # the packed pointwise kernel is in GEMM panels

    def param_sizes(self, weight_shapes, folded_bn=None):
        kh, kw, c, m = weight_shapes[0]
        sizes = {"depthwise": kh * kw * c * m,
                 "pointwise": _kernels.gemm_packed_size(c * m, self.filters)}
        if self.use_bias or folded_bn is not None:
            sizes["bias"] = _kernels.gemm_packed_bias_size(self.filters)
        return sizes

    def pack(self, raw, views):
        views["depthwise"][:] = np.asarray(raw[0], dtype=np.float32).ravel()
        pointwise = np.ascontiguousarray(raw[1].reshape(raw[1].shape[2], raw[1].shape[3]),
                                         dtype=np.float32)
        _kernels.gemm_pack_b(pointwise, views["pointwise"])
        if "bias" in views:
            _kernels.gemm_pack_bias(np.ascontiguousarray(raw[2], dtype=np.float32), views["bias"])

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        n, oh, ow, _ = b.shape(y)
        cm = b.shape(x)[3] * self.depth_multiplier
        live = b.live_of(self)
        mid = b.temp((n, oh, ow, cm))
        if live is not None:
            depthwise = live.params["depthwise_kernel"]
            pointwise, bias = pack_live_gemm(b, live.params["pointwise_kernel"], cm,
                                             self.filters, live.params.get("bias"))
            b.saved[node] = mid  # the pointwise GEMM's input, for its backward
        else:
            packed = b.weights_of(self)
            depthwise, pointwise, bias = packed["depthwise"], packed["pointwise"], packed.get("bias")
        b.op("dwconv2d", mid, x, w=depthwise, act=None,
             ints=(*self.geometry(b, node), self.depth_multiplier))
        self.lower_with_activation(b, node, lambda out, act: b.op(
            "gemm", out, mid, w=pointwise, b=bias, act=act,
            ints=(n * oh * ow, self.filters, cm)), live is not None)

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        """The pointwise GEMM's backward (dense) into d(mid), then the depthwise one."""
        x, y = node.inputs[0], node.outputs[0]
        n, oh, ow, _ = b.shape(y)
        cm = b.shape(x)[3] * self.depth_multiplier
        live = b.live_of(self)
        dz = self.backward_preact(b, node, dy, dy_is_preact)
        mid = b.saved[node]
        need_dmid = need_dx[0] or "depthwise_kernel" in live.grads
        dmid = b.temp(b.shape(mid)) if need_dmid else None
        m = n * oh * ow
        b.op("dense_backward", dmid, mid, dz, w=live.params["pointwise_kernel"],
             y2=live.grads.get("pointwise_kernel"), b=live.grads.get("bias"), b_out=True,
             scratch=_kernels.dense_grad_scratch_size(m, cm, self.filters),
             ints=(m, cm, self.filters))
        dx = b.temp(b.shape(x)) if need_dx[0] else None
        if need_dmid:
            b.op("dwconv2d_backward", dx, x, dmid, w=live.params["depthwise_kernel"],
                 y2=live.grads.get("depthwise_kernel"), b_out=True,
                 ints=(*self.geometry(b, node), self.depth_multiplier))
        return [dx]
