# Image augmentation for fit: the training-time transforms of Keras's RandomFlip,
# RandomRotation, RandomZoom, RandomTranslation (one projective warp), RandomContrast,
# RandomBrightness and RandomCrop, applied to a batch with per-sample parameters the caller
# drew (edgecore/train/augment.py draws them with Keras's distributions).  NHWC float32.
#
# projective_warp is TF's ImageProjectiveTransformV3, which Keras 3's TensorFlow backend
# calls (ops.image.affine_transform): output pixel (x, y) reads input (a0 x + a1 y + a2,
# b0 x + b1 y + b2) / (c0 x + c1 y + 1), computed in float32 as TF does; the coordinate is
# first mapped by the fill mode (reflect: d c b a | a b c d | d c b a, wrap, nearest: clamp,
# constant: unchanged), then read with nearest (std::round, half away from zero) or
# bilinear interpolation; a tap outside the image reads fill_value.
# Every kernel OVERWRITES its output, which must not overlap its input.  Non-goals: the
# backward passes (augmentation sits before the trained part; gradients never cross it).

from libc.math cimport floorf, roundf


cdef inline float _map_coord(float c, Py_ssize_t n, int mode) noexcept nogil:
    """TF's MapCoordinate for one axis of length n (mode 0 reflect, 1 wrap, 2 constant,
    3 nearest)."""
    cdef float sz2, sz
    if mode == 2:
        return c
    if mode == 3:
        return 0.0 if c < 0 else (<float>(n - 1) if c > n - 1 else c)
    if c < 0:
        if n <= 1:
            c = 0
        elif mode == 0:
            sz2 = <float>(2 * n)
            if c < -sz2:
                c = sz2 * <float>(<Py_ssize_t>(-c / sz2)) + c
            c = c + sz2 if c < -n else -c - 1
        else:
            sz = <float>(n - 1)
            c += <float>n * (<float>(<Py_ssize_t>(-c / sz)) + 1)
    elif c > n - 1:
        if n <= 1:
            c = 0
        elif mode == 0:
            sz2 = <float>(2 * n)
            c -= sz2 * <float>(<Py_ssize_t>(c / sz2))
            if c >= n:
                c = sz2 - c - 1
        else:
            sz = <float>(n - 1)
            c -= <float>n * <float>(<Py_ssize_t>(c / sz))
    return 0.0 if c < 0 else (<float>(n - 1) if c > n - 1 else c)


cdef inline float _tap(const float* img, Py_ssize_t h, Py_ssize_t w, Py_ssize_t c,
                       Py_ssize_t y, Py_ssize_t x, Py_ssize_t ch, float fill) noexcept nogil:
    if y < 0 or y >= h or x < 0 or x >= w:
        return fill
    return img[(y * w + x) * c + ch]


cdef void projective_warp_forward(float* y_nhwc, const float* x_nhwc, const float* t_n8,
                                  Py_ssize_t n, Py_ssize_t h, Py_ssize_t w, Py_ssize_t c,
                                  int bilinear, int fill_mode, float fill_value) noexcept nogil:
    """y[b] = x[b] warped by the 8 parameters t_n8[b] (TF ImageProjectiveTransformV3);
    overwrites y (n, h, w, c)."""
    cdef Py_ssize_t b, oy, ox, ch, x0, y0
    cdef const float* t
    cdef const float* img
    cdef float* out
    cdef float k, ix, iy, fx, fy, top, bot
    for b in range(n):
        t = t_n8 + 8 * b
        img = x_nhwc + b * h * w * c
        for oy in range(h):
            for ox in range(w):
                out = y_nhwc + ((b * h + oy) * w + ox) * c
                k = t[6] * <float>ox + t[7] * <float>oy + <float>1.0
                ix = (t[0] * <float>ox + t[1] * <float>oy + t[2]) / k
                iy = (t[3] * <float>ox + t[4] * <float>oy + t[5]) / k
                ix = _map_coord(ix, w, fill_mode)
                iy = _map_coord(iy, h, fill_mode)
                if not bilinear:
                    x0 = <Py_ssize_t>roundf(ix)
                    y0 = <Py_ssize_t>roundf(iy)
                    for ch in range(c):
                        out[ch] = _tap(img, h, w, c, y0, x0, ch, fill_value)
                    continue
                fx = floorf(ix)
                fy = floorf(iy)
                x0 = <Py_ssize_t>fx
                y0 = <Py_ssize_t>fy
                for ch in range(c):
                    top = ((fx + 1 - ix) * _tap(img, h, w, c, y0, x0, ch, fill_value)
                           + (ix - fx) * _tap(img, h, w, c, y0, x0 + 1, ch, fill_value))
                    bot = ((fx + 1 - ix) * _tap(img, h, w, c, y0 + 1, x0, ch, fill_value)
                           + (ix - fx) * _tap(img, h, w, c, y0 + 1, x0 + 1, ch, fill_value))
                    out[ch] = (fy + 1 - iy) * top + (iy - fy) * bot


cdef void flip_forward(float* y_nhwc, const float* x_nhwc, const unsigned char* flip_n,
                       Py_ssize_t n, Py_ssize_t h, Py_ssize_t w, Py_ssize_t c,
                       int horizontal, int vertical) noexcept nogil:
    """y[b] = x[b] flipped left-right (horizontal) and/or upside down (vertical) where
    flip_n[b], else copied; overwrites y."""
    cdef Py_ssize_t b, iy, ix, sy, sx
    for b in range(n):
        for iy in range(h):
            sy = h - 1 - iy if (flip_n[b] and vertical) else iy
            for ix in range(w):
                sx = w - 1 - ix if (flip_n[b] and horizontal) else ix
                memcpy(y_nhwc + ((b * h + iy) * w + ix) * c,
                       x_nhwc + ((b * h + sy) * w + sx) * c, c * sizeof(float))


cdef void contrast_forward(float* y_nhwc, const float* x_nhwc, const float* factor_n,
                           Py_ssize_t n, Py_ssize_t h, Py_ssize_t w, Py_ssize_t c,
                           float lo, float hi, double* mean_c) noexcept nogil:
    """Keras RandomContrast: y = clip((x - mean) * factor[b] + mean, lo, hi), mean per
    sample and channel over H then W (Keras takes the mean over H, then over W; float32
    there, float64 here).  mean_c: scratch of c doubles."""
    cdef Py_ssize_t b, i, ch, hw = h * w
    cdef const float* img
    cdef float* out
    cdef float m, v
    for b in range(n):
        img = x_nhwc + b * hw * c
        out = y_nhwc + b * hw * c
        for ch in range(c):
            mean_c[ch] = 0.0
        for i in range(hw):
            for ch in range(c):
                mean_c[ch] += img[i * c + ch]
        for i in range(hw):
            for ch in range(c):
                m = <float>(mean_c[ch] / hw)
                v = (img[i * c + ch] - m) * factor_n[b] + m
                out[i * c + ch] = lo if v < lo else (hi if v > hi else v)


cdef void brightness_forward(float* y_nhwc, const float* x_nhwc, const float* delta_n,
                             Py_ssize_t n, Py_ssize_t hwc, float lo, float hi) noexcept nogil:
    """Keras RandomBrightness: y = clip(x + delta[b], lo, hi); overwrites y."""
    cdef Py_ssize_t b, i
    cdef float v
    for b in range(n):
        for i in range(hwc):
            v = x_nhwc[b * hwc + i] + delta_n[b]
            y_nhwc[b * hwc + i] = lo if v < lo else (hi if v > hi else v)


cdef void crop_forward(float* y_nhwc, const float* x_nhwc, const Py_ssize_t* start_n2,
                       Py_ssize_t n, Py_ssize_t h, Py_ssize_t w, Py_ssize_t c,
                       Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """Keras RandomCrop in training: y[b] = x[b, top:top+oh, left:left+ow] with (top, left)
    = start_n2[b]; overwrites y (n, oh, ow, c)."""
    cdef Py_ssize_t b, iy
    for b in range(n):
        for iy in range(oh):
            memcpy(y_nhwc + (b * oh + iy) * ow * c,
                   x_nhwc + ((b * h + start_n2[2 * b] + iy) * w + start_n2[2 * b + 1]) * c,
                   ow * c * sizeof(float))


cdef void resize_nearest_forward(float* y_nhwc, const float* x_nhwc, Py_ssize_t n,
                                 Py_ssize_t h, Py_ssize_t w, Py_ssize_t c, Py_ssize_t oh,
                                 Py_ssize_t ow) noexcept nogil:
    """tf.image.resize(x, (oh, ow), 'nearest') (Keras's Resizing): TF's
    ResizeNearestNeighbor with half_pixel_centers, source floor((o + 0.5) * in / out) in
    float32, clamped to the image; overwrites y (n, oh, ow, c), which must not overlap x."""
    cdef float sy = <float>h / <float>oh, sx = <float>w / <float>ow
    cdef Py_ssize_t b, oy, ox, iy, ix
    for b in range(n):
        for oy in range(oh):
            iy = min(<Py_ssize_t>floorf((<float>oy + <float>0.5) * sy), h - 1)
            for ox in range(ow):
                ix = min(<Py_ssize_t>floorf((<float>ox + <float>0.5) * sx), w - 1)
                memcpy(y_nhwc + ((b * oh + oy) * ow + ox) * c,
                       x_nhwc + ((b * h + iy) * w + ix) * c, c * sizeof(float))


# --- checked Python entry points ---------------------------------------------------------

cdef inline void _check_batch(const float[:, :, :, ::1] x, float[:, :, :, ::1] y,
                              Py_ssize_t count, str name) except *:
    _require(x.shape[0] > 0 and x.shape[1] > 0 and x.shape[2] > 0 and x.shape[3] > 0,
             f"{name}: empty input {tuple(x.shape)[:4]}")
    _require(count == x.shape[0], f"{name}: {count} per-sample parameters for a batch of "
                                  f"{x.shape[0]}")
    cdef const float* xp = &x[0, 0, 0, 0]
    cdef const float* yp = &y[0, 0, 0, 0]
    cdef Py_ssize_t nx = x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3]
    cdef Py_ssize_t ny = y.shape[0] * y.shape[1] * y.shape[2] * y.shape[3]
    _require(yp + ny <= xp or xp + nx <= yp, f"{name}: y overlaps x")


def projective_warp(const float[:, :, :, ::1] x, float[:, :, :, ::1] y,
                    const float[:, ::1] transforms, bint bilinear=True, str fill_mode="reflect",
                    float fill_value=0.0):
    """TF ImageProjectiveTransformV3 (Keras 3's ops.image.affine_transform) of each sample
    by its row of transforms (n, 8); overwrites y (same shape as x)."""
    modes = {"reflect": 0, "wrap": 1, "constant": 2, "nearest": 3}
    _require(fill_mode in modes, f"projective_warp: fill_mode {fill_mode!r} not in {list(modes)}")
    _require(transforms.shape[1] == 8, "projective_warp: transforms must be (n, 8)")
    _require(tuple(y.shape)[:4] == tuple(x.shape)[:4], "projective_warp: y must have x's shape")
    _check_batch(x, y, transforms.shape[0], "projective_warp")
    cdef int mode = modes[fill_mode]
    with nogil:
        projective_warp_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], &transforms[0, 0], x.shape[0],
                                x.shape[1], x.shape[2], x.shape[3], bilinear, mode, fill_value)


def flip(const float[:, :, :, ::1] x, float[:, :, :, ::1] y, const unsigned char[::1] flips,
         bint horizontal, bint vertical):
    """Keras RandomFlip's training transform: flip sample b where flips[b]; overwrites y."""
    _require(tuple(y.shape)[:4] == tuple(x.shape)[:4], "flip: y must have x's shape")
    _check_batch(x, y, flips.shape[0], "flip")
    with nogil:
        flip_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], &flips[0], x.shape[0], x.shape[1],
                     x.shape[2], x.shape[3], horizontal, vertical)


def contrast(const float[:, :, :, ::1] x, float[:, :, :, ::1] y, const float[::1] factors,
             float lo, float hi, double[::1] mean_c):
    """Keras RandomContrast's training transform with per-sample factors; overwrites y.
    mean_c: scratch of at least C doubles (kernels never allocate)."""
    _require(tuple(y.shape)[:4] == tuple(x.shape)[:4], "contrast: y must have x's shape")
    _check_batch(x, y, factors.shape[0], "contrast")
    _require(mean_c.shape[0] >= x.shape[3], f"contrast: mean_c needs {x.shape[3]} doubles")
    with nogil:
        contrast_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], &factors[0], x.shape[0], x.shape[1],
                         x.shape[2], x.shape[3], lo, hi, &mean_c[0])


def brightness(const float[:, :, :, ::1] x, float[:, :, :, ::1] y, const float[::1] deltas,
               float lo, float hi):
    """Keras RandomBrightness's training transform with per-sample deltas; overwrites y."""
    _require(tuple(y.shape)[:4] == tuple(x.shape)[:4], "brightness: y must have x's shape")
    _check_batch(x, y, deltas.shape[0], "brightness")
    with nogil:
        brightness_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], &deltas[0], x.shape[0],
                           x.shape[1] * x.shape[2] * x.shape[3], lo, hi)


def random_crop(const float[:, :, :, ::1] x, float[:, :, :, ::1] y, const Py_ssize_t[:, ::1] starts):
    """Keras RandomCrop's training crop at per-sample (top, left); overwrites y."""
    _require(starts.shape[1] == 2, "random_crop: starts must be (n, 2)")
    _require(y.shape[0] == x.shape[0] and y.shape[3] == x.shape[3]
             and y.shape[1] <= x.shape[1] and y.shape[2] <= x.shape[2],
             f"random_crop: y {tuple(y.shape)[:4]} does not fit in x {tuple(x.shape)[:4]}")
    _check_batch(x, y, starts.shape[0], "random_crop")
    cdef Py_ssize_t b
    for b in range(x.shape[0]):
        _require(0 <= starts[b, 0] <= x.shape[1] - y.shape[1]
                 and 0 <= starts[b, 1] <= x.shape[2] - y.shape[2],
                 f"random_crop: start {tuple(starts[b])} out of range")
    with nogil:
        crop_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], &starts[0, 0], x.shape[0], x.shape[1],
                     x.shape[2], x.shape[3], y.shape[1], y.shape[2])


def resize_nearest(const float[:, :, :, ::1] x, float[:, :, :, ::1] y):
    """tf.image.resize(x, y.shape[1:3], 'nearest'); overwrites y."""
    _require(y.shape[0] == x.shape[0] and y.shape[3] == x.shape[3],
             f"resize_nearest: y {tuple(y.shape)[:4]} vs x {tuple(x.shape)[:4]}")
    _check_batch(x, y, x.shape[0], "resize_nearest")
    _require(y.shape[1] > 0 and y.shape[2] > 0, "resize_nearest: empty output")
    with nogil:
        resize_nearest_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], x.shape[0], x.shape[1],
                               x.shape[2], x.shape[3], y.shape[1], y.shape[2])
