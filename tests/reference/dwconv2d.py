"""DepthwiseConv2D reference: kernel (KH, KW, C, M), output channel c*M + m, computed as a
sum over taps of shifted slices of the zero-padded input (one multiply-add per tap)."""
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
