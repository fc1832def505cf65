# Max / average pooling over 2-D windows and global pooling, NHWC.
#
# Keras semantics: 'same' windows ignore the padding — max pooling takes the max of the
# valid cells and average pooling divides by the number of valid cells (TF's AvgPool
# excludes padded cells), so padded cells are never read or counted.  Each output pixel
# accumulates one channel vector in place with the channel loop innermost and contiguous;
# window bounds come from _window_taps (dwconv2d.pxi), once per output pixel, never per
# channel.  Unlike dwconv2d there is no register block: with one cheap op per cell it
# measured 2x slower here (the per-cell branching outweighs the saved loads and stores).
# The wrapper requires every pad < window size, which guarantees a non-empty window
# (Keras 'same' padding never exceeds k - 1 per side).
#
# NaN and -inf, as TF 2.21 (Eigen and oneDNN alike; tests/test_kernels_nan.py records it):
# MaxPool starts each window from the lowest float and takes a cell only when it is
# larger, so a NaN cell is skipped, a window of NaN and -inf gives -FLT_MAX (not -inf),
# and the gradient follows the backward's argmax below (a NaN first cell keeps it).
# GlobalMaxPooling2D is reduce_max, which propagates NaN: one NaN pixel makes its channel
# NaN, and its gradient (x == max) / count * dy is then 0 / 0 = NaN over that channel.
# Averages propagate NaN by arithmetic; their gradients never read x.
#
# Backward, as TensorFlow differentiates Keras's ops (all overwrite dx):
#   max pooling (MaxPoolGrad)    each window's dy goes to ONE cell, the first maximum in
#                                row-major window order (TF's CPU kernel keeps the first
#                                strict maximum); overlapping windows add up;
#   average pooling              dy / (valid cells) to every valid cell of the window;
#   global average (reduce_mean) dy / (H*W) to every pixel;
#   global max (reduce_max)      dy split EQUALLY among the pixels tied at the maximum (TF's
#                                _MinOrMaxGrad: (x == max) / count * dy), unlike max pooling.
# Threads: the forward splits output rows, global pooling and every backward split
# (sample, channel range) pairs: overlapping windows add into the same dx cells, so the
# backward never splits pixels, and each dx element gets its terms in window order at any
# thread count (the same bits).
# Non-goals: dilated pooling, count_include_pad averaging.

from libc.float cimport FLT_MAX
from libc.math cimport NAN
from libc.string cimport memcpy, memset

cdef enum:
    _GAP_BLOCK = 256    # channels per block of global average pooling (3 KiB of stack)
    _GAP_RUN = 8        # pixels summed in float before the double accumulator
    _POOLB_BLOCK = 256  # channels per block of the max-pooling backward (3 KiB of stack)

cdef struct PoolGeom:
    Py_ssize_t n, h, w, c           # input x_nhwc
    Py_ssize_t ph, pw               # window
    Py_ssize_t sh, sw               # strides
    Py_ssize_t pad_top, pad_left    # leading padding
    Py_ssize_t oh, ow               # output y_nhwc is (n, oh, ow, c)


cdef inline void _max_into(float* y_c, const float* x_c, Py_ssize_t c) noexcept nogil:
    # y = max(y, x) where a NaN x never wins (TF's MaxPool).
    cdef Py_ssize_t j
    cdef float a, b
    for j in range(c):
        # Ternary, not fmaxf: GCC vectorises this to maxps, fmaxf becomes a libm call.
        a = y_c[j]
        b = x_c[j]
        y_c[j] = b if b > a else a


cdef inline void _max_init(float* y_c, const float* x_c, Py_ssize_t c) noexcept nogil:
    # y = max(x, -FLT_MAX), a NaN x giving -FLT_MAX: TF's MaxPool starts from the lowest
    # float, and this folds that start into the first cell's pass.
    cdef Py_ssize_t j
    cdef float b
    for j in range(c):
        b = x_c[j]
        y_c[j] = b if b > -FLT_MAX else -FLT_MAX


cdef void _global_max(float* mx, const float* x, Py_ssize_t hw, Py_ssize_t ld,
                      Py_ssize_t nc) noexcept nogil:
    """mx[j] = max over the hw pixels (rows of stride ld) of x[p * ld + j], j < nc, NaN if
    any of them is (TF's reduce_max); overwrites mx.  Four pixels per pass: their max
    (three maxps, skipping NaN) joins mx's and one unordered test per pair makes a NaN
    stick, about 2.5 vector ops per element and one read-modify-write of mx per four
    pixels.  A per-element NaN-propagating select (six ops on SSE2) measured 1.5x slower
    than the plain max this replaces; this measured 0.9x of it (32x7x7x1280)."""
    cdef Py_ssize_t p = 1, j
    cdef const float* x1
    cdef const float* x2
    cdef const float* x3
    cdef const float* x4
    cdef float a, v1, v2, v3, v4, m1, m2
    memcpy(mx, x, nc * sizeof(float))         # a NaN here stays: nothing is > NaN
    while p + 4 <= hw:
        x1 = x + p * ld
        x2 = x1 + ld
        x3 = x2 + ld
        x4 = x3 + ld
        for j in range(nc):
            a = mx[j]
            v1 = x1[j]
            v2 = x2[j]
            v3 = x3[j]
            v4 = x4[j]
            m1 = v1 if v1 > v2 else v2
            m2 = v3 if v3 > v4 else v4
            m1 = m1 if m1 > m2 else m2
            m1 = m1 if m1 > a else a
            mx[j] = NAN if (v1 != v1) | (v2 != v2) | (v3 != v3) | (v4 != v4) else m1
        p += 4
    for p in range(p, hw):
        x1 = x + p * ld
        for j in range(nc):
            a = mx[j]
            v1 = x1[j]
            m1 = v1 if v1 > a else a
            mx[j] = v1 if v1 != v1 else m1


cdef void _pool_pixel(float* y_c, const float* x_b, const PoolGeom* g, Py_ssize_t iy,
                      Py_ssize_t ix, bint is_max) noexcept nogil:
    """One output pixel: y_c[:c] = max or mean over the valid cells of the window whose top
    left input cell is (iy, ix) (may lie in the padding); overwrites."""
    cdef Py_ssize_t ky0, ky1, kx0, kx1, ky, kx, j
    cdef const float* xp
    cdef float inv
    _window_taps(iy, g.h, g.ph, 1, &ky0, &ky1)
    _window_taps(ix, g.w, g.pw, 1, &kx0, &kx1)
    # The first valid cell initialises y: the window is never empty (see the wrapper).  Max
    # pooling starts from the lowest float, as TF (a NaN then never wins: file comment).
    xp = x_b + ((iy + ky0) * g.w + ix + kx0) * g.c
    if is_max:
        _max_init(y_c, xp, g.c)
    else:
        memcpy(y_c, xp, g.c * sizeof(float))
    for ky in range(ky0, ky1):
        for kx in range(kx0, kx1):
            if ky == ky0 and kx == kx0:
                continue
            xp = x_b + ((iy + ky) * g.w + ix + kx) * g.c
            if is_max:
                _max_into(y_c, xp, g.c)
            else:
                for j in range(g.c):
                    y_c[j] += xp[j]
    if not is_max:
        inv = 1.0 / <float>((ky1 - ky0) * (kx1 - kx0))
        for j in range(g.c):
            y_c[j] *= inv


cdef void _pool2d_rows(float* y_nhwc, const float* x_nhwc, const PoolGeom* g, bint is_max,
                       Py_ssize_t row0, Py_ssize_t row1) noexcept nogil:
    """Output rows row0..row1 of the n * oh rows (b, oy)."""
    cdef Py_ssize_t row, b, oy, ox
    for row in range(row0, row1):
        b = row // g.oh
        oy = row - b * g.oh
        for ox in range(g.ow):
            _pool_pixel(y_nhwc + (row * g.ow + ox) * g.c, x_nhwc + b * g.h * g.w * g.c, g,
                        oy * g.sh - g.pad_top, ox * g.sw - g.pad_left, is_max)


cdef void _pool2d_part(float* y_nhwc, const float* x_nhwc, const PoolGeom* g, bint is_max,
                       Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t r0, r1
    chunk_bounds(part, parts, g.n * g.oh, 1, &r0, &r1)
    _pool2d_rows(y_nhwc, x_nhwc, g, is_max, r0, r1)


cdef void _pool2d_forward(float* y_nhwc, const float* x_nhwc, const PoolGeom* g, bint is_max,
                          int nthreads) noexcept nogil:
    cdef Py_ssize_t part
    cdef int t = par_threads(g.n * g.oh * g.ow * g.c * g.ph * g.pw, PAR_MIN_FLOATS, nthreads)
    if t > g.n * g.oh:
        t = <int>(g.n * g.oh)
    if t <= 1:
        _pool2d_rows(y_nhwc, x_nhwc, g, is_max, 0, g.n * g.oh)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _pool2d_part(y_nhwc, x_nhwc, g, is_max, part, t)


cdef void maxpool2d_forward(float* y_nhwc, const float* x_nhwc, const PoolGeom* g,
                            int nthreads) noexcept nogil:
    """y = max over each window's valid cells (padding ignored), NaN cells skipped and the
    result at least -FLT_MAX, as TF's MaxPool; overwrites y.  y must not overlap x; every
    window must hold a valid cell (pads < window size).  Threads split output rows."""
    _pool2d_forward(y_nhwc, x_nhwc, g, True, nthreads)


cdef void avgpool2d_forward(float* y_nhwc, const float* x_nhwc, const PoolGeom* g,
                            int nthreads) noexcept nogil:
    """y = mean over each window's valid cells: Keras 'same' average EXCLUDES padded cells,
    dividing by the number of valid ones; overwrites y.  Same constraints as max."""
    _pool2d_forward(y_nhwc, x_nhwc, g, False, nthreads)


cdef struct _ChanSplit:
    # Work units of (sample, channel range): n samples x parts ranges of `width` channels.
    Py_ssize_t width, parts, units


cdef inline _ChanSplit _chan_split(Py_ssize_t n, Py_ssize_t c, Py_ssize_t block,
                                   int nthreads) noexcept nogil:
    """Ranges of `block` channels, narrowed (down to 16) until there are two units per
    thread; the width changes no result, each channel being computed alone."""
    cdef _ChanSplit s
    s.width = block
    while s.width > 16 and n * ((c + s.width - 1) // s.width) < 2 * nthreads:
        s.width //= 2
    s.parts = (c + s.width - 1) // s.width
    s.units = n * s.parts
    return s


cdef void _global_pool_unit(float* y_nc, const float* x_nhwc, Py_ssize_t hw, Py_ssize_t c,
                            const _ChanSplit* sp, Py_ssize_t unit, bint is_max) noexcept nogil:
    cdef Py_ssize_t b = unit // sp.parts, c0 = (unit - b * sp.parts) * sp.width
    cdef Py_ssize_t nc = min(sp.width, c - c0)
    if is_max:
        _global_max(y_nc + b * c + c0, x_nhwc + b * hw * c + c0, hw, c, nc)
    else:
        _global_avg(y_nc + b * c + c0, x_nhwc + b * hw * c + c0, hw, c, nc)


cdef void _global_pool(float* y_nc, const float* x_nhwc, Py_ssize_t n, Py_ssize_t hw,
                       Py_ssize_t c, bint is_max, int nthreads) noexcept nogil:
    cdef int t = par_threads(n * hw * c, PAR_MIN_FLOATS, nthreads)
    cdef _ChanSplit sp = _chan_split(n, c, _GAP_BLOCK, t)
    cdef Py_ssize_t unit
    if t > sp.units:
        t = <int>sp.units
    if t <= 1:
        for unit in range(sp.units):
            _global_pool_unit(y_nc, x_nhwc, hw, c, &sp, unit, is_max)
        return
    for unit in prange(sp.units, nogil=True, num_threads=t, schedule="static", chunksize=1):
        _global_pool_unit(y_nc, x_nhwc, hw, c, &sp, unit, is_max)


cdef void global_avgpool_forward(float* y_nc, const float* x_nhwc, Py_ssize_t n,
                                 Py_ssize_t hw, Py_ssize_t c, int nthreads) noexcept nogil:
    """y[b, :] = mean of x[b] over its hw pixels; overwrites y (n, c), which must not
    overlap x.  Threads split (sample, channel range) pairs (_global_avg per pair).

    Two-level sum (stack arrays, not allocations): runs of _GAP_RUN pixels are summed in
    float, each run's sum is added in double.  A float32 running sum over 56x56 = 3136
    pixels drifts by ~sqrt(hw) ulp; this stays within a few ulp of the float64 mean while
    the inner loop runs at float vector width (plain double accumulation measured 1.6x
    slower than NumPy's pairwise float mean on 7x7x1280).
    """
    _global_pool(y_nc, x_nhwc, n, hw, c, False, nthreads)


cdef void _global_avg(float* y_c, const float* x, Py_ssize_t hw, Py_ssize_t ld,
                      Py_ssize_t nc) noexcept nogil:
    """y_c[j] = mean over the hw pixels (rows of stride ld) of x[p * ld + j], j < nc <=
    _GAP_BLOCK (the sum of global_avgpool_forward)."""
    cdef float part[_GAP_BLOCK]
    cdef double acc[_GAP_BLOCK]
    cdef Py_ssize_t p, p0, pe, j, run
    cdef const float* xp
    cdef double inv = 1.0 / <double>hw
    for j in range(nc):
        acc[j] = 0.0
    for run in range((hw + _GAP_RUN - 1) // _GAP_RUN):
        p0 = run * _GAP_RUN
        pe = min(p0 + _GAP_RUN, hw)
        xp = x + p0 * ld
        for j in range(nc):
            part[j] = xp[j]
        for p in range(p0 + 1, pe):
            xp = x + p * ld
            for j in range(nc):
                part[j] += xp[j]
        for j in range(nc):
            acc[j] += part[j]
    for j in range(nc):
        y_c[j] = <float>(acc[j] * inv)


cdef void global_maxpool_forward(float* y_nc, const float* x_nhwc, Py_ssize_t n,
                                 Py_ssize_t hw, Py_ssize_t c, int nthreads) noexcept nogil:
    """y[b, :] = max of x[b] over its hw pixels, NaN if any is (TF's reduce_max);
    overwrites y (n, c).  hw >= 1.  Threads split (sample, channel range) pairs."""
    _global_pool(y_nc, x_nhwc, n, hw, c, True, nthreads)


cdef void _maxpool_pixel_backward(float* dx_b, const float* dy_c, const float* x_b,
                                  const PoolGeom* g, Py_ssize_t iy, Py_ssize_t ix,
                                  Py_ssize_t cl, Py_ssize_t ch) noexcept nogil:
    """dx_b[argmax cell, j] += dy_c[j] for the window whose top-left input cell is (iy, ix),
    channels cl..ch; the argmax is the first maximum in row-major window order (strict >
    while scanning, from the first cell: a NaN there keeps the gradient, a later NaN never
    takes it, as TF's MaxPoolGrad)."""
    cdef float best[_POOLB_BLOCK]
    cdef Py_ssize_t at[_POOLB_BLOCK]
    cdef Py_ssize_t ky0, ky1, kx0, kx1, ky, kx, j, blk, c0, nc, off
    cdef const float* xp
    _window_taps(iy, g.h, g.ph, 1, &ky0, &ky1)
    _window_taps(ix, g.w, g.pw, 1, &kx0, &kx1)
    for blk in range((ch - cl + _POOLB_BLOCK - 1) // _POOLB_BLOCK):
        c0 = cl + blk * _POOLB_BLOCK
        nc = min(<Py_ssize_t>_POOLB_BLOCK, ch - c0)
        off = ((iy + ky0) * g.w + ix + kx0) * g.c + c0
        for j in range(nc):
            best[j] = x_b[off + j]
            at[j] = off
        for ky in range(ky0, ky1):
            for kx in range(kx0, kx1):
                off = ((iy + ky) * g.w + ix + kx) * g.c + c0
                xp = x_b + off
                for j in range(nc):
                    if xp[j] > best[j]:
                        best[j] = xp[j]
                        at[j] = off
        for j in range(nc):
            dx_b[at[j] + j] += dy_c[c0 + j]


cdef void _avgpool_pixel_backward(float* dx_b, const float* dy_c, const PoolGeom* g,
                                  Py_ssize_t iy, Py_ssize_t ix, Py_ssize_t cl,
                                  Py_ssize_t ch) noexcept nogil:
    """dx_b[cell, j] += dy_c[j] / (valid cells) over the window at (iy, ix), channels
    cl..ch."""
    cdef Py_ssize_t ky0, ky1, kx0, kx1, ky, kx, j
    cdef float* dxp
    cdef float inv
    _window_taps(iy, g.h, g.ph, 1, &ky0, &ky1)
    _window_taps(ix, g.w, g.pw, 1, &kx0, &kx1)
    # TF's AvgPoolGrad scales by 1.0 / count computed in double, then float.
    inv = <float>(1.0 / <double>((ky1 - ky0) * (kx1 - kx0)))
    for ky in range(ky0, ky1):
        for kx in range(kx0, kx1):
            dxp = dx_b + ((iy + ky) * g.w + ix + kx) * g.c
            for j in range(cl, ch):
                dxp[j] += dy_c[j] * inv


cdef void _pool2d_backward_unit(float* dx_nhwc, const float* dy_nhwc, const float* x_nhwc,
                                const PoolGeom* g, const _ChanSplit* sp, Py_ssize_t unit,
                                bint is_max) noexcept nogil:
    """Every window of one sample, channels of one range: its dx cells get their terms in
    window order, as in the serial loop."""
    cdef Py_ssize_t b = unit // sp.parts, cl = (unit - b * sp.parts) * sp.width
    cdef Py_ssize_t ch = min(cl + sp.width, g.c), oy, ox
    cdef float* dx_b = dx_nhwc + b * g.h * g.w * g.c
    cdef const float* dy_c
    for oy in range(g.oh):
        for ox in range(g.ow):
            dy_c = dy_nhwc + ((b * g.oh + oy) * g.ow + ox) * g.c
            if is_max:
                _maxpool_pixel_backward(dx_b, dy_c, x_nhwc + b * g.h * g.w * g.c, g,
                                        oy * g.sh - g.pad_top, ox * g.sw - g.pad_left, cl, ch)
            else:
                _avgpool_pixel_backward(dx_b, dy_c, g, oy * g.sh - g.pad_top,
                                        ox * g.sw - g.pad_left, cl, ch)


cdef void _pool2d_backward(float* dx_nhwc, const float* dy_nhwc, const float* x_nhwc,
                           const PoolGeom* g, bint is_max, int nthreads) noexcept nogil:
    cdef int t = par_threads(g.n * g.oh * g.ow * g.c * g.ph * g.pw, PAR_MIN_FLOATS, nthreads)
    cdef _ChanSplit sp = _chan_split(g.n, g.c, _POOLB_BLOCK if is_max else g.c, t)
    cdef Py_ssize_t unit
    par_zero(dx_nhwc, g.n * g.h * g.w * g.c, nthreads)
    if t > sp.units:
        t = <int>sp.units
    if t <= 1:
        for unit in range(sp.units):
            _pool2d_backward_unit(dx_nhwc, dy_nhwc, x_nhwc, g, &sp, unit, is_max)
        return
    for unit in prange(sp.units, nogil=True, num_threads=t, schedule="dynamic"):
        _pool2d_backward_unit(dx_nhwc, dy_nhwc, x_nhwc, g, &sp, unit, is_max)


cdef void maxpool2d_backward(float* dx_nhwc, const float* dy_nhwc, const float* x_nhwc,
                             const PoolGeom* g, int nthreads) noexcept nogil:
    """Gradient of maxpool2d_forward: each window's dy goes to its first maximum in
    row-major window order (ties: the earliest cell, as TF's CPU MaxPoolGrad), summed over
    overlapping windows; padding is ignored as in the forward.  OVERWRITES dx (N, H, W, C),
    which must not overlap dy or x."""
    _pool2d_backward(dx_nhwc, dy_nhwc, x_nhwc, g, True, nthreads)


cdef void avgpool2d_backward(float* dx_nhwc, const float* dy_nhwc, const PoolGeom* g,
                             int nthreads) noexcept nogil:
    """Gradient of avgpool2d_forward: each window's dy times 1 / (its number of VALID cells,
    the Keras 'same' rule) to each valid cell, summed over overlapping windows.  OVERWRITES
    dx (N, H, W, C), which must not overlap dy."""
    _pool2d_backward(dx_nhwc, dy_nhwc, NULL, g, False, nthreads)


cdef void _global_avg_backward_rows(float* dx_nhwc, const float* dy_nc, Py_ssize_t hw,
                                    Py_ssize_t c, Py_ssize_t row0,
                                    Py_ssize_t row1) noexcept nogil:
    """Pixel rows row0..row1 of the n * hw (b, p): dx[row, :] = dy[b, :] / hw."""
    cdef Py_ssize_t row, j
    cdef float fhw = <float>hw
    cdef float* dxr
    cdef const float* dyb
    for row in range(row0, row1):
        dxr = dx_nhwc + row * c
        dyb = dy_nc + (row // hw) * c
        for j in range(c):
            dxr[j] = dyb[j] / fhw


cdef void _global_avg_backward_part(float* dx_nhwc, const float* dy_nc, Py_ssize_t n,
                                    Py_ssize_t hw, Py_ssize_t c, Py_ssize_t part,
                                    Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t r0, r1
    chunk_bounds(part, parts, n * hw, 1, &r0, &r1)
    _global_avg_backward_rows(dx_nhwc, dy_nc, hw, c, r0, r1)


cdef void global_avgpool_backward(float* dx_nhwc, const float* dy_nc, Py_ssize_t n,
                                  Py_ssize_t hw, Py_ssize_t c, int nthreads) noexcept nogil:
    """Gradient of global_avgpool_forward: dx[b, p, :] = dy[b, :] / hw for every pixel p
    (a division, as TF's reduce_mean gradient).  OVERWRITES dx (n, hw, c).  Threads split
    the pixels."""
    cdef Py_ssize_t part
    cdef int t = par_threads(n * hw * c, PAR_MIN_FLOATS, nthreads)
    if t <= 1:
        _global_avg_backward_rows(dx_nhwc, dy_nc, hw, c, 0, n * hw)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _global_avg_backward_part(dx_nhwc, dy_nc, n, hw, c, part, t)


cdef void _global_max_backward_unit(float* dx_nhwc, const float* dy_nc, const float* x_nhwc,
                                    Py_ssize_t hw, Py_ssize_t c, const _ChanSplit* sp,
                                    Py_ssize_t unit) noexcept nogil:
    cdef float mx[_POOLB_BLOCK]
    cdef float share[_POOLB_BLOCK]
    cdef float other[_POOLB_BLOCK]
    cdef Py_ssize_t b = unit // sp.parts, c0 = (unit - b * sp.parts) * sp.width
    cdef Py_ssize_t nc = min(sp.width, c - c0), p, j
    cdef const float* xp
    cdef float* dxp
    _global_max(mx, x_nhwc + b * hw * c + c0, hw, c, nc)
    for j in range(nc):
        share[j] = 0
    for p in range(hw):
        xp = x_nhwc + (b * hw + p) * c + c0
        for j in range(nc):
            share[j] += 1 if xp[j] == mx[j] else 0
    for j in range(nc):
        # 0 * dy, or NaN when no pixel equals the maximum (a NaN one): 0 / 0.
        other[j] = (<float>0 / share[j]) * dy_nc[b * c + c0 + j]
        share[j] = (<float>1 / share[j]) * dy_nc[b * c + c0 + j]
    for p in range(hw):
        xp = x_nhwc + (b * hw + p) * c + c0
        dxp = dx_nhwc + (b * hw + p) * c + c0
        for j in range(nc):
            dxp[j] = share[j] if xp[j] == mx[j] else other[j]


cdef void global_maxpool_backward(float* dx_nhwc, const float* dy_nc, const float* x_nhwc,
                                  Py_ssize_t n, Py_ssize_t hw, Py_ssize_t c,
                                  int nthreads) noexcept nogil:
    """Gradient of global_maxpool_forward as TF's reduce_max: dy split equally among the
    pixels tied at the maximum, dx = ((x == max) / count) * dy: (1 / count) * dy there,
    0 * dy elsewhere (NaN where dy is), and 0 / 0 * dy = NaN over a channel whose maximum is
    NaN.  OVERWRITES dx (n, hw, c), which must not overlap dy or x.  Threads split (sample,
    channel range) pairs."""
    cdef int t = par_threads(n * hw * c, PAR_MIN_FLOATS, nthreads)
    cdef _ChanSplit sp = _chan_split(n, c, _POOLB_BLOCK, t)
    cdef Py_ssize_t unit
    if t > sp.units:
        t = <int>sp.units
    if t <= 1:
        for unit in range(sp.units):
            _global_max_backward_unit(dx_nhwc, dy_nc, x_nhwc, hw, c, &sp, unit)
        return
    for unit in prange(sp.units, nogil=True, num_threads=t, schedule="static", chunksize=1):
        _global_max_backward_unit(dx_nhwc, dy_nc, x_nhwc, hw, c, &sp, unit)


# --- checked Python entry points -------------------------------------------------------

cdef PoolGeom _pool_geom(const float[:, :, :, ::1] x, const float[:, :, :, ::1] y, pool, strides,
                         pads, str name) except *:
    """Validate and build the geometry; pads = (top, bottom, left, right)."""
    cdef PoolGeom g
    _require(len(pool) == 2 and len(strides) == 2 and len(pads) == 4,
             f"{name}: pool and strides are (h, w), pads (top, bottom, left, right)")
    g.n, g.h, g.w, g.c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    g.ph, g.pw = pool
    g.sh, g.sw = strides
    g.pad_top, g.pad_left = pads[0], pads[2]
    _require(min(g.n, g.h, g.w, g.c) > 0, f"{name}: empty input {tuple(x.shape)[:4]}")
    _require(min(g.ph, g.pw, g.sh, g.sw) > 0, f"{name}: pool size and strides must be >= 1")
    # A pad of at least the window size would give windows made only of padding.
    _require(0 <= pads[0] < g.ph and 0 <= pads[1] < g.ph and 0 <= pads[2] < g.pw
             and 0 <= pads[3] < g.pw, f"{name}: pads {tuple(pads)} must be in [0, pool size)")
    g.oh = (g.h + pads[0] + pads[1] - g.ph) // g.sh + 1
    g.ow = (g.w + pads[2] + pads[3] - g.pw) // g.sw + 1
    _require(g.h + pads[0] + pads[1] >= g.ph and g.w + pads[2] + pads[3] >= g.pw,
             f"{name}: window {tuple(pool)} larger than padded input {tuple(x.shape)[1:3]}")
    _require((y.shape[0], y.shape[1], y.shape[2], y.shape[3]) == (g.n, g.oh, g.ow, g.c),
             f"{name}: y is {tuple(y.shape)[:4]}, expected {(g.n, g.oh, g.ow, g.c)}")
    _require(not _overlap(&y[0, 0, 0, 0], y.nbytes, &x[0, 0, 0, 0], x.nbytes),
             f"{name}: y overlaps x")
    return g


def maxpool2d(const float[:, :, :, ::1] x, float[:, :, :, ::1] y, pool=(2, 2), strides=None,
              pads=(0, 0, 0, 0), int nthreads=1):
    """MaxPooling2D: y = max over windows (padding ignored); overwrites y.
    strides default to the pool size, as in Keras."""
    cdef PoolGeom g = _pool_geom(x, y, tuple(pool), tuple(pool if strides is None else strides),
                                 tuple(pads), "maxpool2d")
    with nogil:
        maxpool2d_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], &g, nthreads)


def avgpool2d(const float[:, :, :, ::1] x, float[:, :, :, ::1] y, pool=(2, 2), strides=None,
              pads=(0, 0, 0, 0), int nthreads=1):
    """AveragePooling2D: y = mean over the valid cells of each window; overwrites y."""
    cdef PoolGeom g = _pool_geom(x, y, tuple(pool), tuple(pool if strides is None else strides),
                                 tuple(pads), "avgpool2d")
    with nogil:
        avgpool2d_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], &g, nthreads)


cdef void _check_global(const float[:, :, :, ::1] x, const float[:, ::1] y, str name) except *:
    _require(min(x.shape[0], x.shape[1], x.shape[2], x.shape[3]) > 0,
             f"{name}: empty input {tuple(x.shape)[:4]}")
    _require(y.shape[0] == x.shape[0] and y.shape[1] == x.shape[3],
             f"{name}: y is {tuple(y.shape)[:2]}, expected {(x.shape[0], x.shape[3])}")
    _require(not _overlap(&y[0, 0], y.nbytes, &x[0, 0, 0, 0], x.nbytes), f"{name}: y overlaps x")


def global_avgpool(const float[:, :, :, ::1] x, float[:, ::1] y, int nthreads=1):
    """GlobalAveragePooling2D: y (N, C) = mean of x (N, H, W, C) over H and W; overwrites y."""
    _check_global(x, y, "global_avgpool")
    with nogil:
        global_avgpool_forward(&y[0, 0], &x[0, 0, 0, 0], x.shape[0], x.shape[1] * x.shape[2],
                               x.shape[3], nthreads)


def global_maxpool(const float[:, :, :, ::1] x, float[:, ::1] y, int nthreads=1):
    """GlobalMaxPooling2D: y (N, C) = max of x (N, H, W, C) over H and W; overwrites y."""
    _check_global(x, y, "global_maxpool")
    with nogil:
        global_maxpool_forward(&y[0, 0], &x[0, 0, 0, 0], x.shape[0], x.shape[1] * x.shape[2],
                               x.shape[3], nthreads)


def maxpool2d_grad(const float[:, :, :, ::1] x, const float[:, :, :, ::1] dy,
                   float[:, :, :, ::1] dx, pool=(2, 2), strides=None, pads=(0, 0, 0, 0),
                   int nthreads=1):
    """MaxPooling2D backward: dx (shape of x) from dy (shape of the pooled output); each
    window's gradient goes to its first maximum in row-major order.  Overwrites dx."""
    cdef PoolGeom g = _pool_geom(x, dy, tuple(pool), tuple(pool if strides is None else strides),
                                 tuple(pads), "maxpool2d_grad")
    _require((dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3]) == (g.n, g.h, g.w, g.c),
             f"maxpool2d_grad: dx is {tuple(dx.shape)[:4]}, expected {(g.n, g.h, g.w, g.c)}")
    _require(not _overlap(&dx[0, 0, 0, 0], dx.nbytes, &x[0, 0, 0, 0], x.nbytes)
             and not _overlap(&dx[0, 0, 0, 0], dx.nbytes, &dy[0, 0, 0, 0], dy.nbytes),
             "maxpool2d_grad: dx overlaps x or dy")
    with nogil:
        maxpool2d_backward(&dx[0, 0, 0, 0], &dy[0, 0, 0, 0], &x[0, 0, 0, 0], &g, nthreads)


def avgpool2d_grad(const float[:, :, :, ::1] dy, float[:, :, :, ::1] dx, pool=(2, 2),
                   strides=None, pads=(0, 0, 0, 0), int nthreads=1):
    """AveragePooling2D backward: dx (the input's shape) from dy; overwrites dx."""
    cdef PoolGeom g = _pool_geom(dx, dy, tuple(pool), tuple(pool if strides is None else strides),
                                 tuple(pads), "avgpool2d_grad")
    with nogil:
        avgpool2d_backward(&dx[0, 0, 0, 0], &dy[0, 0, 0, 0], &g, nthreads)


def global_avgpool_grad(const float[:, ::1] dy, float[:, :, :, ::1] dx, int nthreads=1):
    """GlobalAveragePooling2D backward: dx (N, H, W, C) = dy (N, C) / (H*W); overwrites dx."""
    _check_global(dx, dy, "global_avgpool_grad")
    with nogil:
        global_avgpool_backward(&dx[0, 0, 0, 0], &dy[0, 0], dx.shape[0],
                                dx.shape[1] * dx.shape[2], dx.shape[3], nthreads)


def global_maxpool_grad(const float[:, :, :, ::1] x, const float[:, ::1] dy,
                        float[:, :, :, ::1] dx, int nthreads=1):
    """GlobalMaxPooling2D backward: dy split equally among tied maxima; overwrites dx."""
    _check_global(x, dy, "global_maxpool_grad")
    _require(tuple(dx.shape)[:4] == tuple(x.shape)[:4],
             f"global_maxpool_grad: dx is {tuple(dx.shape)[:4]}, x {tuple(x.shape)[:4]}")
    _require(not _overlap(&dx[0, 0, 0, 0], dx.nbytes, &x[0, 0, 0, 0], x.nbytes)
             and not _overlap(&dx[0, 0, 0, 0], dx.nbytes, &dy[0, 0], dy.nbytes),
             "global_maxpool_grad: dx overlaps x or dy")
    with nogil:
        global_maxpool_backward(&dx[0, 0, 0, 0], &dy[0, 0], &x[0, 0, 0, 0], x.shape[0],
                                x.shape[1] * x.shape[2], x.shape[3], nthreads)
