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
#
# Backward (dwconv2d_backward): one pass over the output pixels per block of channels; at
# each pixel every valid tap adds x * dy into the kernel gradient and dy * w into the input
# gradient.  dw sums N*OH*OW products per weight (400k for a 112x112 batch of 32), so each
# output row is summed in a float stack block and the rows are added in double: a float
# running sum would drift by ~sqrt(terms) ulp.  The block holds _DWB_STACK floats, so a
# channel block spans _DWB_STACK / (KH*KW*M) channels; kernels too large for even one
# channel (KH*KW*M > _DWB_STACK) accumulate straight into dw in float.
# Non-goals: im2col / Winograd, threading.

cdef enum:
    _DW_CB = 16     # channels per register block (4 SSE / NEON vectors)
    _DWB_STACK = 2048   # backward: floats of per-row dw partial sums (and doubles of totals)


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
    """y = min(max(y, lo), hi), a NaN kept (TF's Relu / Relu6 pass it): in this order
    both comparisons are false for NaN.  Ternaries, not fminf/fmaxf: GCC vectorises these
    to maxps/minps but calls libm for fminf/fmaxf (which would also drop the NaN)."""
    cdef Py_ssize_t i
    cdef float v
    for i in range(n):
        v = y[i]
        v = lo if v < lo else v
        y[i] = hi if v > hi else v


cdef void dwconv2d_forward(float* y_nhwc, const float* x_nhwc, const float* w_hwcm,
                           const float* bias, const DwConvGeom* g,
                           const Activation* act, int nthreads) noexcept nogil:
    """y = act(depthwise_conv(x, w) + bias); overwrites y.  bias (C*M floats) may be NULL.
    nthreads: serial on this branch.

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
                activation_forward(y_row, y_row, g.ow * cm, act, 1)


cdef void _dwb_pixel(float* part, Py_ssize_t ldp, float* dx_b, const float* x_b,
                     const float* w_hwcm, const float* dy_c, const DwConvGeom* g, Py_ssize_t x0,
                     Py_ssize_t ky0, Py_ssize_t ky1, Py_ssize_t kx0, Py_ssize_t kx1,
                     Py_ssize_t c0, Py_ssize_t nc) noexcept nogil:
    """One output pixel, input channels [c0, c0 + nc), taps [ky0, ky1) x [kx0, kx1):
    part[tap * ldp + (c - c0) * M + m] += x[tap pixel, c] * dy_c[c * M + m] (part may be NULL)
    and dx_b[tap pixel, c] += sum_m dy_c[c * M + m] * w[tap, c, m] (dx_b may be NULL).
    x0 is the offset of tap (0, 0) in the image (it may lie in the padding).  Accumulates."""
    cdef Py_ssize_t cm = g.c * g.m, ky, kx, off, j, mi
    cdef const float* xp
    cdef const float* wp
    cdef const float* dyp = dy_c + c0 * g.m
    cdef float* pp
    cdef float* dxp
    cdef float xv, acc
    for ky in range(ky0, ky1):
        for kx in range(kx0, kx1):
            off = x0 + ky * g.dh * g.w * g.c + kx * g.dw * g.c + c0
            xp = x_b + off
            wp = w_hwcm + (ky * g.kw + kx) * cm + c0 * g.m
            if part != NULL:
                pp = part + (ky * g.kw + kx) * ldp
                if g.m == 1:
                    for j in range(nc):
                        pp[j] += xp[j] * dyp[j]
                else:
                    for j in range(nc):
                        xv = xp[j]
                        for mi in range(g.m):
                            pp[j * g.m + mi] += xv * dyp[j * g.m + mi]
            if dx_b != NULL:
                dxp = dx_b + off
                if g.m == 1:
                    for j in range(nc):
                        dxp[j] += dyp[j] * wp[j]
                else:
                    for j in range(nc):
                        acc = 0
                        for mi in range(g.m):
                            acc += dyp[j * g.m + mi] * wp[j * g.m + mi]
                        dxp[j] += acc


cdef void _dwb_channel_block(float* dx_nhwc, float* dw_hwcm, const float* x_nhwc,
                             const float* w_hwcm, const float* dy_nhwc, const DwConvGeom* g,
                             Py_ssize_t c0, Py_ssize_t nc, bint direct) noexcept nogil:
    """Input channels [c0, c0 + nc) over every output pixel.  dw (may be NULL) gets its
    channels' columns: overwritten through the stack blocks, or, when `direct`, accumulated
    in place (the caller zeroed it).  dx (may be NULL) accumulates."""
    cdef float part[_DWB_STACK]
    cdef double total[_DWB_STACK]
    cdef Py_ssize_t taps = g.kh * g.kw, cm = g.c * g.m, ncm = nc * g.m
    cdef Py_ssize_t b, oy, ox, iy, ix, ky0, ky1, kx0, kx1, t, j
    cdef float* pp = NULL
    cdef Py_ssize_t ldp = ncm
    cdef bint staged = dw_hwcm != NULL and not direct
    if dw_hwcm != NULL and direct:
        pp = dw_hwcm + c0 * g.m
        ldp = cm
    elif staged:
        pp = part
        for j in range(taps * ncm):
            total[j] = 0.0
    for b in range(g.n):
        for oy in range(g.oh):
            if staged:
                for j in range(taps * ncm):
                    part[j] = 0.0
            iy = oy * g.sh - g.pad_top
            _window_taps(iy, g.h, g.kh, g.dh, &ky0, &ky1)
            for ox in range(g.ow):
                ix = ox * g.sw - g.pad_left
                _window_taps(ix, g.w, g.kw, g.dw, &kx0, &kx1)
                _dwb_pixel(pp, ldp, dx_nhwc + b * g.h * g.w * g.c if dx_nhwc != NULL else NULL,
                           x_nhwc + b * g.h * g.w * g.c, w_hwcm,
                           dy_nhwc + ((b * g.oh + oy) * g.ow + ox) * cm, g,
                           (iy * g.w + ix) * g.c, ky0, ky1, kx0, kx1, c0, nc)
            if staged:
                for j in range(taps * ncm):
                    total[j] += part[j]
    if staged:
        for t in range(taps):
            for j in range(ncm):
                dw_hwcm[t * cm + c0 * g.m + j] = <float>total[t * ncm + j]


cdef void dwconv2d_backward(float* dx_nhwc, float* dw_hwcm, float* db, const float* x_nhwc,
                            const float* w_hwcm, const float* dy_nhwc,
                            const DwConvGeom* g) noexcept nogil:
    """Gradients of y = depthwise_conv(x, w) + b given dy (N, OH, OW, C*M), after the
    activation's backward: dw (KH, KW, C, M), db (C*M), dx (N, H, W, C).  OVERWRITES each
    output; any of them may be NULL (not needed).  Needs no scratch.  No output may overlap
    an input or another output."""
    cdef Py_ssize_t taps = g.kh * g.kw, cb, blk
    cdef bint direct = taps * g.m > _DWB_STACK
    if db != NULL:
        f32_column_sums(db, dy_nhwc, g.n * g.oh * g.ow, g.c * g.m)
    if dx_nhwc != NULL:
        memset(dx_nhwc, 0, g.n * g.h * g.w * g.c * sizeof(float))
    if dw_hwcm == NULL and dx_nhwc == NULL:
        return
    if dw_hwcm == NULL or direct:
        cb = g.c
        if dw_hwcm != NULL:
            memset(dw_hwcm, 0, taps * g.c * g.m * sizeof(float))
    else:
        cb = _DWB_STACK // (taps * g.m)
        if cb >= _DW_CB:
            cb = cb // _DW_CB * _DW_CB      # whole vectors in the channel loops
    for blk in range((g.c + cb - 1) // cb):
        _dwb_channel_block(dx_nhwc, dw_hwcm, x_nhwc, w_hwcm, dy_nhwc, g, blk * cb,
                           min(cb, g.c - blk * cb), direct)


# --- checked Python entry point --------------------------------------------------------

cdef DwConvGeom _dw_geom(tuple x_shape, tuple w_shape, tuple strides, tuple dilation,
                         tuple pads, str name) except *:
    """Validate and build the geometry of x (N, H, W, C) and w (KH, KW, C, M)."""
    cdef DwConvGeom g
    _require(len(strides) == 2 and len(dilation) == 2 and len(pads) == 4,
             f"{name}: strides and dilation are (h, w), pads (top, bottom, left, right)")
    g.n, g.h, g.w, g.c = x_shape
    g.kh, g.kw, g.m = w_shape[0], w_shape[1], w_shape[3]
    g.sh, g.sw = strides
    g.dh, g.dw = dilation
    g.pad_top, g.pad_left = pads[0], pads[2]
    _require(min(g.n, g.h, g.w, g.c, g.kh, g.kw, g.m) > 0,
             f"{name}: empty shape x={x_shape} w={w_shape}")
    _require(w_shape[2] == g.c, f"{name}: kernel has {w_shape[2]} input channels, x has {g.c}")
    _require(min(g.sh, g.sw, g.dh, g.dw) > 0, f"{name}: strides and dilation must be >= 1")
    _require(min(pads) >= 0, f"{name}: negative padding {tuple(pads)}")
    g.oh = (g.h + pads[0] + pads[1] - (g.kh - 1) * g.dh - 1) // g.sh + 1
    g.ow = (g.w + pads[2] + pads[3] - (g.kw - 1) * g.dw - 1) // g.sw + 1
    _require(g.oh > 0 and g.ow > 0, f"{name}: kernel larger than padded input {x_shape}")
    return g


def dwconv2d(const float[:, :, :, ::1] x, const float[:, :, :, ::1] w_hwcm,
             float[:, :, :, ::1] y, strides=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
             bias=None, int act=0, float alpha=0.0, float max_value=INFINITY,
             float threshold=0.0):
    """y = act(depthwise_conv2d(x, w_hwcm) + bias); overwrites y (NHWC, C*M channels).

    pads = (top, bottom, left, right) as Keras computes them; y must not overlap x.
    """
    cdef Activation a_ = _checked_activation(act, alpha, max_value, threshold)
    cdef DwConvGeom g = _dw_geom((x.shape[0], x.shape[1], x.shape[2], x.shape[3]),
                                 (w_hwcm.shape[0], w_hwcm.shape[1], w_hwcm.shape[2],
                                  w_hwcm.shape[3]), tuple(strides), tuple(dilation),
                                 tuple(pads), "dwconv2d")
    cdef const float[::1] biasv
    cdef const float* biasp = NULL
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
        dwconv2d_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], &w_hwcm[0, 0, 0, 0], biasp, &g, &a_, 1)


def dwconv2d_grad(const float[:, :, :, ::1] x, const float[:, :, :, ::1] w_hwcm,
                  const float[:, :, :, ::1] dy, dx, dw, db, strides=(1, 1), dilation=(1, 1),
                  pads=(0, 0, 0, 0)):
    """DepthwiseConv2D backward: dw (KH, KW, C, M), db (C*M,), dx (N, H, W, C) from dy
    (N, OH, OW, C*M); overwrites each given output (float32 C-contiguous, or None)."""
    cdef DwConvGeom g = _dw_geom((x.shape[0], x.shape[1], x.shape[2], x.shape[3]),
                                 (w_hwcm.shape[0], w_hwcm.shape[1], w_hwcm.shape[2],
                                  w_hwcm.shape[3]), tuple(strides), tuple(dilation),
                                 tuple(pads), "dwconv2d_grad")
    cdef _Span outs[3]
    cdef _Span ins[3]
    cdef float* dxp
    cdef float* dwp
    cdef float* dbp
    if (dy.shape[0] != g.n or dy.shape[1] != g.oh or dy.shape[2] != g.ow
            or dy.shape[3] != g.c * g.m):
        raise KernelShapeError(f"dwconv2d_grad: dy is {tuple(dy.shape)[:4]}, expected "
                               f"{(g.n, g.oh, g.ow, g.c * g.m)}")
    dxp = _optional_out(dx, (g.n, g.h, g.w, g.c), "dwconv2d_grad: dx", &outs[0])
    dwp = _optional_out(dw, (g.kh, g.kw, g.c, g.m), "dwconv2d_grad: dw", &outs[1])
    dbp = _optional_out(db, (g.c * g.m,), "dwconv2d_grad: db", &outs[2])
    ins[0] = _span(&x[0, 0, 0, 0], x.nbytes)
    ins[1] = _span(&w_hwcm[0, 0, 0, 0], w_hwcm.nbytes)
    ins[2] = _span(&dy[0, 0, 0, 0], dy.nbytes)
    _require_disjoint(outs, 3, ("dx", "dw", "db"), ins, 3, ("x", "w", "dy"), "dwconv2d_grad")
    with nogil:
        dwconv2d_backward(dxp, dwp, dbp, &x[0, 0, 0, 0], &w_hwcm[0, 0, 0, 0],
                          &dy[0, 0, 0, 0], &g)
