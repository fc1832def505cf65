# DepthwiseConv2D (NHWC input, HWCM kernel) as a direct convolution.
#
# Keras semantics: kernel w_hwcm has shape (KH, KW, C, M) and output channel c*M + m is
# input channel c convolved with w[:, :, c, m].  No im2col: each output pixel reads KH*KW
# input pixels, so copying them would cost as much as the arithmetic.
#
# Fast path (M == 1, every MobileNet): per output pixel, channels are processed in blocks of
# _DW_CB held in a local accumulator across all taps and stored once; the activation then
# runs over the finished output row.  GCC keeps the fully unrolled block in vector
# registers: measured on the 2-core x86-64 runner (SSE2 baseline, 3x3 taps) this ran
# 1.6-1.8x faster than accumulating every tap into the output row in memory, and 16 beat
# blocks of 8 (more tap-pointer updates) and 32 (spills).  The tap loop is then bound by
# SSE's one mulps + addps per cycle (~90% of it on 56x56x144); wider vectors need
# EDGECORE_NATIVE=1.  Interior pixels take every tap without bounds checks; only border
# pixels compute which taps fall inside the image.  M > 1 (rare) accumulates into the
# output pixel directly.
#
# Also defines the window helpers pooling.pxi (included after this file) reuses, and the
# buffer-overlap check the checked wrappers of the later families use.
# Non-goals: im2col / Winograd, threading.

cdef enum:
    _DW_CB = 16     # channels per register block (4 SSE / NEON vectors)


cdef struct DwConvGeom:
    Py_ssize_t n, h, w, c           # input x_nhwc
    Py_ssize_t kh, kw               # kernel w_hwcm (KH, KW, C, M)
    Py_ssize_t sh, sw, dh, dw       # strides, dilation
    Py_ssize_t pad_top, pad_left    # leading padding (Keras 'same' puts the odd pixel last)
    Py_ssize_t oh, ow, m            # output y_nhwc is (n, oh, ow, c*m)


cdef inline void _window_taps(Py_ssize_t start, Py_ssize_t size, Py_ssize_t k, Py_ssize_t d,
                              Py_ssize_t* t0, Py_ssize_t* t1) noexcept nogil:
    """Taps t in [t0, t1) of a window whose tap t reads input index start + t*d that land in
    [0, size).  start may be negative (padding); the range is empty when t0 >= t1."""
    # Numerators are kept non-negative: C division truncates toward zero, not down.
    t0[0] = 0 if start >= 0 else (-start + d - 1) // d
    t1[0] = min(k, (size - 1 - start) // d + 1) if start < size else 0


cdef inline void _window_interior(Py_ssize_t size, Py_ssize_t k, Py_ssize_t s, Py_ssize_t d,
                                  Py_ssize_t pad, Py_ssize_t out, Py_ssize_t* o0,
                                  Py_ssize_t* o1) noexcept nogil:
    """Outputs o in [o0, o1) whose whole window (k taps, dilation d) lies inside the input;
    o0 <= o1 <= out always, so [0, o0) and [o1, out) are the border."""
    cdef Py_ssize_t last = size - 1 - (k - 1) * d + pad   # largest o*s whose last tap fits
    o0[0] = min((pad + s - 1) // s, out)
    o1[0] = min(last // s + 1, out) if last >= 0 else 0
    if o1[0] < o0[0]:
        o1[0] = o0[0]


cdef inline bint _overlap(const void* p, Py_ssize_t p_bytes, const void* q,
                          Py_ssize_t q_bytes) noexcept:
    """True when the byte ranges [p, p + p_bytes) and [q, q + q_bytes) intersect."""
    return <const char*>p < <const char*>q + q_bytes and <const char*>q < <const char*>p + p_bytes


cdef inline void _dw_block_m1(float* y_c, const float* x_b, const float* w_c,
                              const float* bias_c, Py_ssize_t nc, Py_ssize_t x0,
                              Py_ssize_t x_dy, Py_ssize_t x_dx, Py_ssize_t w_dy,
                              Py_ssize_t w_dx, Py_ssize_t ky0, Py_ssize_t ky1, Py_ssize_t kx0,
                              Py_ssize_t kx1) noexcept nogil:
    """y_c[:nc] = bias + sum of taps x * w for nc <= _DW_CB channels of one output pixel;
    overwrites.  Tap (ky, kx) reads x_b[x0 + ky*x_dy + kx*x_dx + j] and
    w_c[ky*w_dy + kx*w_dx + j]; only taps [ky0, ky1) x [kx0, kx1) are read."""
    cdef float acc[_DW_CB]
    cdef Py_ssize_t j, ky, kx
    cdef const float* xp
    cdef const float* wp
    if bias_c != NULL:
        for j in range(nc):
            acc[j] = bias_c[j]
    else:
        for j in range(nc):
            acc[j] = 0
    for ky in range(ky0, ky1):
        for kx in range(kx0, kx1):
            xp = x_b + (x0 + ky * x_dy + kx * x_dx)
            wp = w_c + (ky * w_dy + kx * w_dx)
            for j in range(nc):
                acc[j] += xp[j] * wp[j]
    for j in range(nc):
        y_c[j] = acc[j]


cdef inline void _dw_pixel_m1(float* y_c, const float* x_b, const float* w_hwc,
                              const float* bias, const DwConvGeom* g, Py_ssize_t x0,
                              Py_ssize_t ky0, Py_ssize_t ky1, Py_ssize_t kx0,
                              Py_ssize_t kx1) noexcept nogil:
    """One output pixel of a depth-multiplier-1 convolution, all channels; overwrites."""
    cdef Py_ssize_t x_dy = g.dh * g.w * g.c, x_dx = g.dw * g.c
    cdef Py_ssize_t w_dy = g.kw * g.c, w_dx = g.c
    cdef Py_ssize_t blk, c0
    for blk in range(g.c // _DW_CB):
        c0 = blk * _DW_CB
        # The literal block size lets GCC unroll the block and keep it in registers.
        _dw_block_m1(y_c + c0, x_b + c0, w_hwc + c0, bias + c0 if bias != NULL else NULL,
                     _DW_CB, x0, x_dy, x_dx, w_dy, w_dx, ky0, ky1, kx0, kx1)
    c0 = g.c // _DW_CB * _DW_CB
    if c0 < g.c:
        _dw_block_m1(y_c + c0, x_b + c0, w_hwc + c0, bias + c0 if bias != NULL else NULL,
                     g.c - c0, x0, x_dy, x_dx, w_dy, w_dx, ky0, ky1, kx0, kx1)


cdef void _dw_pixel_general(float* y_c, const float* x_b, const float* w_hwcm,
                            const float* bias, const DwConvGeom* g, Py_ssize_t x0,
                            Py_ssize_t ky0, Py_ssize_t ky1, Py_ssize_t kx0,
                            Py_ssize_t kx1) noexcept nogil:
    """One output pixel for any depth multiplier M, accumulating in y_c[:C*M]; overwrites."""
    cdef Py_ssize_t cm = g.c * g.m
    cdef Py_ssize_t ky, kx, ci, mi, j
    cdef const float* xp
    cdef const float* wp
    cdef float xv
    for j in range(cm):
        y_c[j] = bias[j] if bias != NULL else 0.0
    for ky in range(ky0, ky1):
        for kx in range(kx0, kx1):
            xp = x_b + (x0 + ky * g.dh * g.w * g.c + kx * g.dw * g.c)
            wp = w_hwcm + (ky * g.kw + kx) * cm
            for ci in range(g.c):
                xv = xp[ci]
                for mi in range(g.m):
                    y_c[ci * g.m + mi] += xv * wp[ci * g.m + mi]


cdef void _dwconv2d_row(float* y_row, const float* x_b, const float* w_hwcm,
                        const float* bias, const DwConvGeom* g, Py_ssize_t oy,
                        Py_ssize_t ox0, Py_ssize_t ox1) noexcept nogil:
    """Output row oy of one image, before activation: interior pixels [ox0, ox1) take every
    horizontal tap without checks; border pixels compute their tap range.  Overwrites."""
    cdef Py_ssize_t cm = g.c * g.m
    cdef Py_ssize_t iy = oy * g.sh - g.pad_top
    cdef Py_ssize_t ky0, ky1, kx0, kx1, ox, ix
    _window_taps(iy, g.h, g.kh, g.dh, &ky0, &ky1)
    for ox in range(g.ow):
        ix = ox * g.sw - g.pad_left
        if ox0 <= ox < ox1:
            kx0 = 0
            kx1 = g.kw
        else:
            _window_taps(ix, g.w, g.kw, g.dw, &kx0, &kx1)
        # Offset of tap (0, 0); it may lie in the padding, only in-range taps are read.
        if g.m == 1:
            _dw_pixel_m1(y_row + ox * cm, x_b, w_hwcm, bias, g, (iy * g.w + ix) * g.c,
                         ky0, ky1, kx0, kx1)
        else:
            _dw_pixel_general(y_row + ox * cm, x_b, w_hwcm, bias, g, (iy * g.w + ix) * g.c,
                              ky0, ky1, kx0, kx1)


cdef inline void _clamp_inplace(float* y, Py_ssize_t n, float lo, float hi) noexcept nogil:
    """y = min(max(y, lo), hi).  Ternaries, not fminf/fmaxf: GCC vectorises these to
    maxps/minps but calls libm for fminf/fmaxf (their NaN rules differ)."""
    cdef Py_ssize_t i
    cdef float v
    for i in range(n):
        v = y[i]
        v = v if v > lo else lo
        y[i] = v if v < hi else hi


cdef void dwconv2d_forward(float* y_nhwc, const float* x_nhwc, const float* w_hwcm,
                           const float* bias, const DwConvGeom* g,
                           const Activation* act) noexcept nogil:
    """y = act(depthwise_conv(x, w) + bias); overwrites y.  bias (C*M floats) may be NULL.

    y must not overlap x.  Needs no scratch.  The activation runs on each finished output
    row while it is still in L1.  (Clamping inside the register block instead measured
    1.4x slower: GCC then spilled the accumulators.)
    """
    cdef Py_ssize_t cm = g.c * g.m
    cdef Py_ssize_t ox0, ox1, b, oy
    cdef float* y_row
    cdef float lo, hi
    _window_interior(g.w, g.kw, g.sw, g.dw, g.pad_left, g.ow, &ox0, &ox1)
    for b in range(g.n):
        for oy in range(g.oh):
            y_row = y_nhwc + (b * g.oh + oy) * g.ow * cm
            _dwconv2d_row(y_row, x_nhwc + b * g.h * g.w * g.c, w_hwcm, bias, g, oy, ox0, ox1)
            if act.code == ACT_LINEAR:
                pass
            elif act_is_clamp(act):
                act_clamp_bounds(act, &lo, &hi)
                _clamp_inplace(y_row, g.ow * cm, lo, hi)
            else:
                activation_forward(y_row, y_row, g.ow * cm, act)


# --- checked Python entry point --------------------------------------------------------

def dwconv2d(const float[:, :, :, ::1] x, const float[:, :, :, ::1] w_hwcm,
             float[:, :, :, ::1] y, strides=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
             bias=None, int act=0, float alpha=0.0, float max_value=INFINITY,
             float threshold=0.0):
    """y = act(depthwise_conv2d(x, w_hwcm) + bias); overwrites y (NHWC, C*M channels).

    pads = (top, bottom, left, right) as Keras computes them; y must not overlap x.
    """
    cdef Activation a_ = _checked_activation(act, alpha, max_value, threshold)
    cdef DwConvGeom g
    cdef const float[::1] biasv
    cdef const float* biasp = NULL
    _require(len(strides) == 2 and len(dilation) == 2 and len(pads) == 4,
             "dwconv2d: strides and dilation are (h, w), pads (top, bottom, left, right)")
    g.n, g.h, g.w, g.c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    g.kh, g.kw, g.m = w_hwcm.shape[0], w_hwcm.shape[1], w_hwcm.shape[3]
    g.sh, g.sw = strides
    g.dh, g.dw = dilation
    g.pad_top, g.pad_left = pads[0], pads[2]
    _require(min(g.n, g.h, g.w, g.c, g.kh, g.kw, g.m) > 0,
             f"dwconv2d: empty shape x={tuple(x.shape)[:4]} w={tuple(w_hwcm.shape)[:4]}")
    _require(w_hwcm.shape[2] == g.c,
             f"dwconv2d: kernel has {w_hwcm.shape[2]} input channels, x has {g.c}")
    _require(min(g.sh, g.sw, g.dh, g.dw) > 0, "dwconv2d: strides and dilation must be >= 1")
    _require(min(pads) >= 0, f"dwconv2d: negative padding {tuple(pads)}")
    g.oh = (g.h + pads[0] + pads[1] - (g.kh - 1) * g.dh - 1) // g.sh + 1
    g.ow = (g.w + pads[2] + pads[3] - (g.kw - 1) * g.dw - 1) // g.sw + 1
    _require(g.oh > 0 and g.ow > 0, f"dwconv2d: kernel larger than padded input {tuple(x.shape)[:4]}")
    _require((y.shape[0], y.shape[1], y.shape[2], y.shape[3]) == (g.n, g.oh, g.ow, g.c * g.m),
             f"dwconv2d: y is {tuple(y.shape)[:4]}, expected {(g.n, g.oh, g.ow, g.c * g.m)}")
    _require(not _overlap(&y[0, 0, 0, 0], y.nbytes, &x[0, 0, 0, 0], x.nbytes)
             and not _overlap(&y[0, 0, 0, 0], y.nbytes, &w_hwcm[0, 0, 0, 0], w_hwcm.nbytes),
             "dwconv2d: y overlaps x or the kernel")
    if bias is not None:
        biasv = bias
        _require(biasv.shape[0] == g.c * g.m,
                 f"dwconv2d: bias has {biasv.shape[0]} values, expected {g.c * g.m}")
        biasp = &biasv[0]
        _require(not _overlap(&y[0, 0, 0, 0], y.nbytes, biasp, biasv.nbytes),
                 "dwconv2d: y overlaps the bias")
    with nogil:
        dwconv2d_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], &w_hwcm[0, 0, 0, 0], biasp, &g, &a_)
