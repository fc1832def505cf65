"""Layout references: ZeroPadding2D / Cropping2D as one window copy, Concatenate,
UpSampling2D (nearest and bilinear, and their backward) and Permute (transpose)."""
import numpy as np


def window_copy(x_nhwc, oh, ow, top, left):
    """y[b, i, j] = x[b, i - top, j - left] where inside x, else 0."""
    x = np.asarray(x_nhwc, np.float64)
    n, h, w, c = x.shape
    y = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            if 0 <= i - top < h and 0 <= j - left < w:
                y[:, i, j] = x[:, i - top, j - left]
    return y


def upsample_nearest(x_nhwc, fh, fw):
    return np.repeat(np.repeat(np.asarray(x_nhwc, np.float64), fh, axis=1), fw, axis=2)


def upsample_nearest_backward(dy_nhwc, fh, fw, magnitude=False):
    """dx = the sum of dy over each fh x fw block (magnitude: of |dy|)."""
    dy = np.asarray(dy_nhwc, np.float64)
    dy = np.abs(dy) if magnitude else dy
    n, oh, ow, c = dy.shape
    return dy.reshape(n, oh // fh, fh, ow // fw, fw, c).sum(axis=(2, 4))


def _half_pixel(out_size, in_size, f32=False):
    """TF ResizeBilinear with half_pixel_centers=True: source coordinate, clamped
    neighbours and lerp weight for every output index (in float64 here, or with f32 in
    float32 as TF and the kernel compute them)."""
    if f32:
        scale = np.float32(in_size) / np.float32(out_size)
        src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    else:
        src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    lo = np.floor(src)
    i0 = np.maximum(lo, 0).astype(int)
    i1 = np.minimum(np.ceil(src), in_size - 1).astype(int)
    return i0, i1, src - lo


def upsample_bilinear(x_nhwc, oh, ow):
    """tf.image.resize(x, (oh, ow), method='bilinear', antialias=False).

    Checked by hand once against TensorFlow 2.21 (tf.image.resize, and Keras 3.15 /
    tf_keras 2.21 UpSampling2D((2, 3), interpolation='bilinear')) on random float32 inputs
    for (5, 7) -> (10, 14), (15, 21), (3, 4); (1, 1) -> (2, 3); (4, 6) -> (9, 13): max abs
    difference 1.3e-6 for values of order 1 (TF interpolates in float32).
    TensorFlow is not a test dependency.
    """
    x = np.asarray(x_nhwc, np.float64)
    n, h, w, c = x.shape
    y0, y1, ly = _half_pixel(oh, h)
    x0, x1, lx = _half_pixel(ow, w)
    lx = lx[None, None, :, None]
    top = x[:, y0][:, :, x0] + (x[:, y0][:, :, x1] - x[:, y0][:, :, x0]) * lx
    bot = x[:, y1][:, :, x0] + (x[:, y1][:, :, x1] - x[:, y1][:, :, x0]) * lx
    return top + (bot - top) * ly[None, :, None, None]


def bilinear_matrix(out_size, in_size, magnitude=False):
    """(out_size, in_size) matrix of one axis of the bilinear forward (float32 coordinates):
    row o has 1 - lerp at i0 and lerp at i1 (one entry of 1 when they coincide).
    magnitude=True: 1 at both neighbours (a bound on every weight)."""
    i0, i1, lerp = _half_pixel(out_size, in_size, f32=True)
    lerp = lerp.astype(np.float64)
    m, rows = np.zeros((out_size, in_size)), np.arange(out_size)
    m[rows, i0] += 1.0 if magnitude else 1.0 - lerp
    m[rows, i1] += 1.0 if magnitude else lerp
    return m


def upsample_bilinear_backward(dy_nhwc, h, w, magnitude=False):
    """The adjoint of the bilinear forward with TF's float32 coordinates: dx = My^T dy Mx
    per image and channel.  magnitude=True: every weight 1 and |dy| (the sum of the
    |terms| a float32 kernel adds into each pixel, bounding its rounding error)."""
    dy = np.asarray(dy_nhwc, np.float64)
    dy = np.abs(dy) if magnitude else dy
    my = bilinear_matrix(dy.shape[1], h, magnitude)
    mx = bilinear_matrix(dy.shape[2], w, magnitude)
    return np.einsum("oh,pw,nopc->nhwc", my, mx, dy)


def concat(xs, axis):
    return np.concatenate([np.asarray(x, np.float64) for x in xs], axis=axis)


def transpose(x, perm):
    return np.transpose(np.asarray(x, np.float64), perm)
