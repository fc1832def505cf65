"""Conv2D reference (NHWC input, HWIO kernel, groups, dilation, asymmetric pads) as an
explicit im2col over the zero-padded input followed by one matrix product per group."""
import numpy as np

from .activations import activation


def same_pads(size, k, s, d=1):
    """Keras/TF 'same' padding of one axis: (before, after), the odd pixel after."""
    total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def output_size(size, k, s, d, pad_before, pad_after):
    return (size + pad_before + pad_after - (k - 1) * d - 1) // s + 1


def im2col(x_nhwc, kh, kw, strides, dilation, pads):
    """(N*OH*OW, KH*KW*C) rows ordered (ky, kx, c), i.e. the HWIO kernel reshaped."""
    x = np.asarray(x_nhwc, np.float64)
    n, h, w, c = x.shape
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    oh = output_size(h, kh, strides[0], dilation[0], top, bottom)
    ow = output_size(w, kw, strides[1], dilation[1], left, right)
    cols = np.empty((n, oh, ow, kh, kw, c))
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    cols[:, oy, ox, ky, kx, :] = xp[:, oy * strides[0] + ky * dilation[0],
                                                    ox * strides[1] + kx * dilation[1], :]
    return cols.reshape(n * oh * ow, kh * kw * c), (n, oh, ow)


def conv2d(x_nhwc, w_hwio, bias=None, strides=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
           groups=1, act="linear", magnitude=False, **act_params):
    """act(conv(x, w) + bias); with magnitude=True, conv(|x|, |w|) + |bias| instead (the
    scale of the float32 rounding error, see check.py)."""
    x = np.asarray(x_nhwc, np.float64)
    w = np.asarray(w_hwio, np.float64)
    if magnitude:
        x, w = np.abs(x), np.abs(w)
    kh, kw, cig, co = w.shape
    cog = co // groups
    outs = []
    for g in range(groups):
        cols, (n, oh, ow) = im2col(x[..., g * cig:(g + 1) * cig], kh, kw, strides, dilation, pads)
        outs.append(cols @ w[..., g * cog:(g + 1) * cog].reshape(kh * kw * cig, cog))
    y = np.concatenate(outs, axis=1).reshape(n, oh, ow, co)
    if bias is not None:
        y = y + (np.abs(bias) if magnitude else np.asarray(bias, np.float64))
    return y if magnitude else activation(y, act, **act_params)
