"""Conv2D reference (NHWC input, HWIO kernel, groups, dilation, asymmetric pads) as an
explicit im2col over the zero-padded input followed by one matrix product per group; the
backward as the transposed products and an explicit col2im scatter, group by group."""
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


def conv2d_backward(x_nhwc, w_hwio, dy_nhwc, strides=(1, 1), dilation=(1, 1),
                    pads=(0, 0, 0, 0), groups=1, magnitude=False):
    """Gradients of y = conv(x, w) + b: (dx, dw, db) in float64, w (KH, KW, Cin/groups,
    Cout).  Group g sees input channels g*Cin_g.. and output channels g*Cout_g..: its dx
    channels, dw columns and db entries are those of a groups == 1 convolution on them.
    magnitude=True: the same on |x|, |w|, |dy| (the scale of the rounding error)."""
    x, w, dy = (np.asarray(a, np.float64) for a in (x_nhwc, w_hwio, dy_nhwc))
    if magnitude:
        x, w, dy = np.abs(x), np.abs(w), np.abs(dy)
    cig, cog = w.shape[2], w.shape[3] // groups
    parts = [_conv2d_backward_one(x[..., g * cig:(g + 1) * cig], w[..., g * cog:(g + 1) * cog],
                                  dy[..., g * cog:(g + 1) * cog], strides, dilation, pads)
             for g in range(groups)]
    return tuple(np.concatenate([p[i] for p in parts], axis=-1) for i in range(3))


def _conv2d_backward_one(x, w, dy, strides, dilation, pads):
    """groups == 1: dw = im2col(x)^T @ dy, db = sum of dy, dx = col2im(dy @ w^T) where
    col2im adds every (ky, kx) slice of a column back onto the input pixel it came from."""
    kh, kw, ci, co = w.shape
    n, h, wd, _ = x.shape
    cols, (_, oh, ow) = im2col(x, kh, kw, strides, dilation, pads)
    dy2 = dy.reshape(-1, co)
    dw = (cols.T @ dy2).reshape(w.shape)
    dcols = (dy2 @ w.reshape(-1, co).T).reshape(n, oh, ow, kh, kw, ci)
    top, bottom, left, right = pads
    dxp = np.zeros((n, h + top + bottom, wd + left + right, ci))
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    dxp[:, oy * strides[0] + ky * dilation[0],
                        ox * strides[1] + kx * dilation[1], :] += dcols[:, oy, ox, ky, kx, :]
    return dxp[:, top:top + h, left:left + wd, :], dw, dy2.sum(axis=0)


def conv2d_backward_fast(x_nhwc, w_hwio, dy_nhwc, strides=(1, 1), dilation=(1, 1),
                         pads=(0, 0, 0, 0)):
    """Vectorised NumPy Conv2D backward (float32 in and out, im2col by a strided view and
    one copy, col2im by one slice-add per tap) that the benchmark times; the tests check
    it against conv2d_backward."""
    n, h, wd, ci = x_nhwc.shape
    kh, kw, _, co = w_hwio.shape
    (sh, sw), (dh, dw) = strides, dilation
    top, bottom, left, right = pads
    oh, ow = dy_nhwc.shape[1], dy_nhwc.shape[2]
    dy2 = dy_nhwc.reshape(-1, co)
    w2 = w_hwio.reshape(-1, co)
    if (kh, kw, sh, sw) == (1, 1, 1, 1) and not any(pads):
        x2 = x_nhwc.reshape(-1, ci)
        return (dy2 @ w2.T).reshape(x_nhwc.shape), (x2.T @ dy2).reshape(w_hwio.shape), dy2.sum(0)
    xp = np.pad(x_nhwc, ((0, 0), (top, bottom), (left, right), (0, 0)))
    s = xp.strides
    win = np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, kh, kw, ci), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]),
        writeable=False)
    cols = win.reshape(n * oh * ow, kh * kw * ci)          # the copy im2col makes
    dcols = (dy2 @ w2.T).reshape(n, oh, ow, kh, kw, ci)
    dxp = np.zeros_like(xp)
    for ky in range(kh):
        for kx in range(kw):
            dxp[:, ky * dh:ky * dh + (oh - 1) * sh + 1:sh,
                kx * dw:kx * dw + (ow - 1) * sw + 1:sw, :] += dcols[:, :, :, ky, kx, :]
    return (dxp[:, top:top + h, left:left + wd, :], (cols.T @ dy2).reshape(w_hwio.shape),
            dy2.sum(0))
