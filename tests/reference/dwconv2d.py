"""DepthwiseConv2D reference: kernel (KH, KW, C, M), output channel c*M + m, computed as a
sum over taps of shifted slices of the zero-padded input (one multiply-add per tap); the
backward tap by tap over the same slices."""
import numpy as np

from .activations import activation
from .conv2d import output_size


def dwconv2d(x_nhwc, w_hwcm, bias=None, strides=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
             act="linear", magnitude=False, dtype=np.float64, **act_params):
    """act(depthwise_conv(x, w) + bias).  magnitude=True: the same on |x|, |w|, |bias|.
    dtype=np.float32 turns this into the plain NumPy implementation the benchmark times."""
    x = np.asarray(x_nhwc, dtype)
    w = np.asarray(w_hwcm, dtype)
    if magnitude:
        x, w = np.abs(x), np.abs(w)
    n, h, wd, c = x.shape
    kh, kw, _, m = w.shape
    top, bottom, left, right = pads
    (sh, sw), (dh, dw) = strides, dilation
    oh = output_size(h, kh, sh, dh, top, bottom)
    ow = output_size(wd, kw, sw, dw, left, right)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    y = np.zeros((n, oh, ow, c, m), dtype)
    for ky in range(kh):
        for kx in range(kw):
            rows = slice(ky * dh, ky * dh + (oh - 1) * sh + 1, sh)
            cols = slice(kx * dw, kx * dw + (ow - 1) * sw + 1, sw)
            y += xp[:, rows, cols, :, None] * w[ky, kx]
    y = y.reshape(n, oh, ow, c * m)
    if bias is not None:
        y = y + (np.abs(bias) if magnitude else np.asarray(bias, dtype))
    return y if magnitude or dtype != np.float64 else activation(y, act, **act_params)


def dwconv2d_backward(x_nhwc, w_hwcm, dy_nhwc, strides=(1, 1), dilation=(1, 1),
                      pads=(0, 0, 0, 0), magnitude=False):
    """Gradients of the depthwise convolution: (dx, dw, db) in float64.  For each tap,
    dw[ky, kx, c, m] = sum over batch and output pixels of x(tap pixel, c) * dy(c*M + m),
    and dx(tap pixel, c) += sum_m dy(c*M + m) * w[ky, kx, c, m]."""
    x, w, dy = (np.asarray(a, np.float64) for a in (x_nhwc, w_hwcm, dy_nhwc))
    if magnitude:
        x, w, dy = np.abs(x), np.abs(w), np.abs(dy)
    n, h, wd, c = x.shape
    kh, kw, _, m = w.shape
    top, bottom, left, right = pads
    (sh, sw), (dh, dw_) = strides, dilation
    oh, ow = dy.shape[1], dy.shape[2]
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    dxp = np.zeros_like(xp)
    dy5 = dy.reshape(n, oh, ow, c, m)
    dw = np.zeros_like(w)
    for ky in range(kh):
        for kx in range(kw):
            rows = slice(ky * dh, ky * dh + (oh - 1) * sh + 1, sh)
            cols = slice(kx * dw_, kx * dw_ + (ow - 1) * sw + 1, sw)
            dw[ky, kx] = np.einsum("nhwc,nhwcm->cm", xp[:, rows, cols, :], dy5)
            dxp[:, rows, cols, :] += np.einsum("nhwcm,cm->nhwc", dy5, w[ky, kx])
    return dxp[:, top:top + h, left:left + wd, :], dw, dy.sum(axis=(0, 1, 2))
