"""Pooling references with Keras semantics: windows over explicit padding, where padded
cells are ignored by max and not counted by average ('same' AveragePooling2D divides by
the number of valid cells).  Backward as TensorFlow differentiates them: max pooling sends
each window's gradient to its first maximum in row-major order (MaxPoolGrad), global max
splits it equally among tied maxima (reduce_max's gradient).  NaN as TF 2.21: max pooling
skips NaN cells and never returns less than -FLT_MAX, its gradient's scan starts at the
window's first cell (which keeps it when NaN); global max propagates NaN, and its gradient
is 0 / 0 = NaN over a channel whose maximum is NaN."""
import numpy as np

from .conv2d import output_size

LOWEST = float(np.finfo(np.float32).min)


def pool2d(x_nhwc, pool, strides, pads, kind):
    """kind 'max' or 'avg'; explicit loop over output pixels and their windows."""
    x = np.asarray(x_nhwc, np.float64)
    n, h, w, c = x.shape
    (ph, pw), (sh, sw) = pool, strides
    top, bottom, left, right = pads
    oh = output_size(h, ph, sh, 1, top, bottom)
    ow = output_size(w, pw, sw, 1, left, right)
    y = np.empty((n, oh, ow, c))
    for oy in range(oh):
        for ox in range(ow):
            y0, x0 = oy * sh - top, ox * sw - left
            win = x[:, max(y0, 0):min(y0 + ph, h), max(x0, 0):min(x0 + pw, w), :]
            if kind == "max":       # TF's MaxPool: from -FLT_MAX up, a NaN never wins
                win = np.where(np.isnan(win), -np.inf, win)
                y[:, oy, ox, :] = np.maximum(win.max(axis=(1, 2)), LOWEST)
            else:
                y[:, oy, ox, :] = win.mean(axis=(1, 2))
    return y


def pool2d_fast(x_nhwc, pool, strides, pads, kind):
    """Vectorised NumPy implementation (shifted slices, float32 in -> float32 out) that the
    benchmark times; the tests check it against pool2d."""
    n, h, w, c = x_nhwc.shape
    (ph, pw), (sh, sw) = pool, strides
    top, bottom, left, right = pads
    oh = output_size(h, ph, sh, 1, top, bottom)
    ow = output_size(w, pw, sw, 1, left, right)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x_nhwc, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    acc = None
    for ky in range(ph):
        for kx in range(pw):
            win = xp[:, ky:ky + (oh - 1) * sh + 1:sh, kx:kx + (ow - 1) * sw + 1:sw, :]
            acc = win.copy() if acc is None else (np.maximum(acc, win) if kind == "max" else acc + win)
    if kind == "max":
        return acc
    ones = np.pad(np.ones((1, h, w, 1), x_nhwc.dtype), ((0, 0), (top, bottom), (left, right), (0, 0)))
    count = sum(ones[:, ky:ky + (oh - 1) * sh + 1:sh, kx:kx + (ow - 1) * sw + 1:sw, :]
                for ky in range(ph) for kx in range(pw))
    return acc / count


def global_pool(x_nhwc, kind):
    x = np.asarray(x_nhwc, np.float64)
    return x.max(axis=(1, 2)) if kind == "max" else x.mean(axis=(1, 2))


def pool2d_backward(x_nhwc, dy_nhwc, pool, strides, pads, kind):
    """dx of pool2d for kind 'max' or 'avg', float64, window by window."""
    x = np.asarray(x_nhwc, np.float64)
    dy = np.asarray(dy_nhwc, np.float64)
    n, h, w, c = x.shape
    (ph, pw), (sh, sw) = pool, strides
    top, left = pads[0], pads[2]
    dx = np.zeros_like(x)
    b_idx, c_idx = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    for oy in range(dy.shape[1]):
        for ox in range(dy.shape[2]):
            y0, y1 = max(oy * sh - top, 0), min(oy * sh - top + ph, h)
            x0, x1 = max(ox * sw - left, 0), min(ox * sw - left + pw, w)
            g = dy[:, oy, ox, :]
            if kind == "avg":
                dx[:, y0:y1, x0:x1, :] += g[:, None, None, :] / ((y1 - y0) * (x1 - x0))
                continue
            # np.argmax returns the first maximum in C (row-major) order of the window;
            # TF's scan (strict >) from the first cell never leaves a NaN first cell and
            # never takes a later NaN.
            win = x[:, y0:y1, x0:x1, :].reshape(n, -1, c)
            first = np.where(np.isnan(win[:, 0]), 0,
                             np.where(np.isnan(win), -np.inf, win).argmax(axis=1))
            np.add.at(dx, (b_idx, y0 + first // (x1 - x0), x0 + first % (x1 - x0), c_idx), g)
    return dx


def global_pool_backward(x_nhwc, dy_nc, kind):
    """dx of global_pool: dy / (H*W) everywhere for 'avg'; for 'max' dy split equally among
    the pixels equal to the maximum (TensorFlow's reduce_max gradient)."""
    x = np.asarray(x_nhwc, np.float64)
    dy = np.asarray(dy_nc, np.float64)[:, None, None, :]
    if kind == "avg":
        return np.broadcast_to(dy / (x.shape[1] * x.shape[2]), x.shape).copy()
    tied = x == x.max(axis=(1, 2), keepdims=True)
    return tied * dy / tied.sum(axis=(1, 2), keepdims=True)
