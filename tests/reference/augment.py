"""float64 NumPy references of kernels/augment.pxi (Keras 3.15 / TF semantics)."""
import math

import numpy as np


def map_coord(c, n, mode):
    """TF's MapCoordinate (image_ops.h) for one coordinate, in Python floats."""
    if mode == "constant":
        return c
    if mode == "nearest":
        return min(max(c, 0.0), n - 1.0)
    if c < 0:
        if n <= 1:
            c = 0.0
        elif mode == "reflect":
            sz2 = 2.0 * n
            if c < -sz2:
                c = sz2 * int(-c / sz2) + c
            c = c + sz2 if c < -n else -c - 1
        else:
            sz = n - 1.0
            c += n * (int(-c / sz) + 1)
    elif c > n - 1:
        if n <= 1:
            c = 0.0
        elif mode == "reflect":
            sz2 = 2.0 * n
            c -= sz2 * int(c / sz2)
            if c >= n:
                c = sz2 - c - 1
        else:
            sz = n - 1.0
            c -= n * int(c / sz)
    return min(max(c, 0.0), n - 1.0)


def projective_warp(x, t, bilinear, mode, fill):
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    y = np.empty_like(x)

    def tap(b, yy, xx):
        if yy < 0 or yy >= h or xx < 0 or xx >= w:
            return np.full(c, fill)
        return x[b, yy, xx]

    for b in range(n):
        a0, a1, a2, b0, b1, b2, c0, c1 = (float(v) for v in t[b])
        for oy in range(h):
            for ox in range(w):
                k = c0 * ox + c1 * oy + 1.0
                ix = map_coord((a0 * ox + a1 * oy + a2) / k, w, mode)
                iy = map_coord((b0 * ox + b1 * oy + b2) / k, h, mode)
                if not bilinear:
                    # std::round: half away from zero
                    rx = int(math.floor(abs(ix) + 0.5)) * (1 if ix >= 0 else -1)
                    ry = int(math.floor(abs(iy) + 0.5)) * (1 if iy >= 0 else -1)
                    y[b, oy, ox] = tap(b, ry, rx)
                    continue
                fx, fy = math.floor(ix), math.floor(iy)
                top = (fx + 1 - ix) * tap(b, fy, fx) + (ix - fx) * tap(b, fy, fx + 1)
                bot = (fx + 1 - ix) * tap(b, fy + 1, fx) + (ix - fx) * tap(b, fy + 1, fx + 1)
                y[b, oy, ox] = (fy + 1 - iy) * top + (iy - fy) * bot
    return y


def flip(x, flips, horizontal, vertical):
    y = np.array(x, np.float64)
    for b, f in enumerate(flips):
        if f and horizontal:
            y[b] = y[b, :, ::-1]
        if f and vertical:
            y[b] = y[b, ::-1]
    return y


def contrast(x, factors, lo, hi):
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - mean) * np.asarray(factors, np.float64)[:, None, None, None] + mean, lo, hi)


def brightness(x, deltas, lo, hi):
    return np.clip(np.asarray(x, np.float64) + np.asarray(deltas, np.float64)[:, None, None, None],
                   lo, hi)


def random_crop(x, starts, oh, ow):
    return np.stack([x[b, t:t + oh, l:l + ow] for b, (t, l) in enumerate(starts)]).astype(np.float64)


def resize_nearest(x, oh, ow):
    """TF ResizeNearestNeighbor, half_pixel_centers=True (float32 source coordinate)."""
    n, h, w, c = x.shape
    iy = np.minimum(np.floor((np.arange(oh, dtype=np.float32) + np.float32(0.5))
                             * np.float32(h / np.float32(oh))).astype(int), h - 1)
    ix = np.minimum(np.floor((np.arange(ow, dtype=np.float32) + np.float32(0.5))
                             * np.float32(w / np.float32(ow))).astype(int), w - 1)
    return np.asarray(x, np.float64)[:, iy][:, :, ix]
