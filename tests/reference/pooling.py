"""Pooling references with Keras semantics: windows over explicit padding, where padded
cells are ignored by max and not counted by average ('same' AveragePooling2D divides by
the number of valid cells)."""
import numpy as np

from .conv2d import output_size


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
            y[:, oy, ox, :] = win.max(axis=(1, 2)) if kind == "max" else win.mean(axis=(1, 2))
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
