# Conv2D (NHWC, HWIO weights, groups) as im2col + GEMM.
#
# The im2col matrix is built one block of output rows at a time in arena scratch, so its
# size is bounded by conv2d_scratch_floats() (a few hundred KiB) instead of growing with the
# image: a full VGG16 3x3 layer at 224x224 would otherwise need 115 MB of scratch.  Row
# order of the im2col matrix is (ky, kx, ci), which is the HWIO kernel reshaped to
# (KH*KW*Cin_g, Cout_g), so packing the kernel needs no transpose.
# 1x1 stride-1 unpadded convolutions skip im2col entirely: NHWC already is the (N*H*W, C)
# row-major matrix GEMM wants.
#
# Backward, with the kernel in its plain Keras HWIO layout (I = Cin/groups), per group g
# with K = KH*KW*Cin_g:
#   dw_g (K, Cout_g) = im2col_g(x)^T @ dy_g, one block of output rows at a time: the
#                  block's im2col rows and the same rows of dy go through dense.pxi's
#                  f32_wgrad_block (the first block overwrites, later ones accumulate), so
#                  scratch stays bounded as in the forward.  With groups > 1 dw_g is built
#                  in scratch and copied into its Cout_g columns of dw (rows of stride Cout);
#   db (Cout)    = column sums of dy (N*OH*OW rows);
#   dx           = col2im(dy_g @ w_g^T): w_g^T is packed once per group, each block's
#                  (rows, K) product is scattered back onto the pixels and group channels
#                  its im2col row came from.
# Pointwise convolutions (groups == 1) again skip both im2col and col2im.
# Threads: the forward hands whole im2col blocks to threads, each with its own block of
# scratch (conv2d_scratch_floats(g, nthreads)); the backward threads every step inside
# (see conv2d_backward), so its scratch does not grow with the thread count.

from libc.string cimport memcpy, memset

cdef enum:
    _IM2COL_MEMCPY = 32     # im2col: runs shorter than this many floats copied by a loop
    _IM2COL_MAX_FLOATS = 262144   # im2col: at most this many floats a block (1 MiB)


cdef struct ConvGeom:
    Py_ssize_t n, h, w, c           # input x_nhwc
    Py_ssize_t kh, kw               # kernel
    Py_ssize_t sh, sw, dh, dw       # strides, dilation
    Py_ssize_t pad_top, pad_left    # leading padding (Keras 'same' puts the odd pixel last)
    Py_ssize_t oh, ow, co           # output y_nhwc
    Py_ssize_t groups


cdef inline bint conv2d_is_pointwise(const ConvGeom* g) noexcept nogil:
    return (g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.pad_top == 0
            and g.pad_left == 0 and g.groups == 1 and g.oh == g.h and g.ow == g.w)


cdef inline Py_ssize_t conv2d_k(const ConvGeom* g) noexcept nogil:
    return g.kh * g.kw * (g.c // g.groups)


cdef inline Py_ssize_t _conv2d_block(const ConvGeom* g, int nthreads) noexcept nogil:
    """Output rows per im2col block: _gemm_block_rows(K), and with threads small enough
    that there are at least 4 blocks per thread (a block's rows are computed the same
    wherever the block starts, so this changes no result)."""
    cdef Py_ssize_t k = conv2d_k(g), m = g.n * g.oh * g.ow, mr = _gemm.mr
    cdef Py_ssize_t block = _gemm_block_rows(k), want
    cdef Py_ssize_t blocks
    # With K blocking the GEMM wants 128 rows whatever K; an im2col block of 128 rows at
    # K = 4608 would be 2.4 MB a thread, so the block is capped at _IM2COL_MAX_FLOATS
    # (1 MiB: 56 rows there, against 8 before K blocking; every block streams all of B,
    # 9.4 MB on ResNet50's conv5), and the rows are then shared evenly between the
    # blocks (49 rows: one block of 49, not 24 + 24 + 1).
    want = (_IM2COL_MAX_FLOATS // (k if k > 0 else 1)) // mr * mr
    if want < mr:
        want = mr
    if want < block:
        block = want
    blocks = (m + block - 1) // block
    want = ((m + blocks - 1) // blocks + mr - 1) // mr * mr
    if want < block:
        block = want
    if nthreads > 1:
        want = ((m + 4 * nthreads - 1) // (4 * nthreads) + mr - 1) // mr * mr
        if want < block:
            block = want if want > mr else mr
    return block


cdef inline int _conv2d_max_threads(const ConvGeom* g, int nthreads) noexcept nogil:
    """The most threads conv2d_forward may use: one per block, at most nthreads."""
    cdef Py_ssize_t m = g.n * g.oh * g.ow, block = _conv2d_block(g, nthreads)
    cdef Py_ssize_t blocks = g.groups * ((m + block - 1) // block)
    return <int>blocks if blocks < nthreads else (nthreads if nthreads > 1 else 1)


cdef inline int _conv2d_threads(const ConvGeom* g, int nthreads) noexcept nogil:
    """Threads conv2d_forward uses (each with its own im2col block): _conv2d_max_threads,
    none beyond the first when the GEMM work is small (_gemm_threads' rule)."""
    cdef int t = _gemm_threads(g.n * g.oh * g.ow, g.co, conv2d_k(g), nthreads)
    cdef int most = _conv2d_max_threads(g, nthreads)
    return most if most < t else t


cdef inline bint _conv2d_whole(const ConvGeom* g, int nthreads) noexcept nogil:
    """With threads, a layer of large K (the GEMM's K blocking) whose whole im2col matrix
    fits one block (_IM2COL_MAX_FLOATS) builds it once, rows split over the threads, then
    runs one threaded GEMM, whose tiles stream B once a thread.  Blocks a thread instead
    made each of them stream all of B: ResNet50's conv5 (49 rows, K = 4608, 9.4 MB of B)
    took 8-row blocks at 2 threads."""
    return (nthreads > 1 and g.groups == 1 and conv2d_k(g) > _GEMM_KC_SPLIT
            and g.n * g.oh * g.ow * conv2d_k(g) <= _IM2COL_MAX_FLOATS)


cdef inline Py_ssize_t conv2d_scratch_floats(const ConvGeom* g, int nthreads) noexcept nogil:
    """Arena scratch one conv2d_forward call needs with nthreads threads: one im2col
    block for each thread it may use, or the whole im2col matrix (_conv2d_whole), or 0 for
    pointwise.  Sized by the block count alone, not by the small-work rule, so no tuning
    of that rule can outgrow it."""
    if conv2d_is_pointwise(g):
        return 0
    if _conv2d_whole(g, nthreads):
        return g.n * g.oh * g.ow * conv2d_k(g)
    return _conv2d_max_threads(g, nthreads) * _conv2d_block(g, nthreads) * conv2d_k(g)


cdef inline Py_ssize_t conv2d_packed_weight_floats(const ConvGeom* g) noexcept nogil:
    return g.groups * gemm_packed_floats(conv2d_k(g), g.co // g.groups)


cdef inline Py_ssize_t conv2d_packed_bias_floats(const ConvGeom* g) noexcept nogil:
    return g.groups * gemm_packed_bias_floats(g.co // g.groups)


cdef inline void _copy_floats(float* dst, const float* src, Py_ssize_t n) noexcept nogil:
    """dst[:n] = src[:n]: the 3-channel stem's runs (3x3x3, 5x5x3, 7x7x3 and one 3-channel
    tap) as fixed-size copies, which the compiler turns into a few vector moves; other
    runs by a plain loop below _IM2COL_MEMCPY floats (where a memcpy call costs more than
    the copy), memcpy above.  (perf put im2col at ~30 % of MobileNetV2's Conv1; the fixed
    sizes took Conv1 from 0.557 to 0.515 ms in one profile.)"""
    cdef Py_ssize_t j
    if n == 9:
        memcpy(dst, src, 9 * sizeof(float))
    elif n == 21:
        memcpy(dst, src, 21 * sizeof(float))
    elif n == 15:
        memcpy(dst, src, 15 * sizeof(float))
    elif n == 3:
        memcpy(dst, src, 3 * sizeof(float))
    elif n < _IM2COL_MEMCPY:
        for j in range(n):
            dst[j] = src[j]
    else:
        memcpy(dst, src, n * sizeof(float))


cdef void conv2d_im2col_rows(float* cols, const float* x_nhwc, const ConvGeom* g,
                             Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t c0) noexcept nogil:
    """cols[r, (ky, kx, ci)] for output rows row0..row0+rows of group channels c0..

    Without groups or horizontal dilation the KW taps of one kernel row are KW*C
    contiguous input floats, copied as one run when the window lies inside the row: for
    the first convolution of a CNN (3 input channels, 3x3 or 7x7 stride 2) that is one
    9- or 21-float copy instead of KW copies of 3 floats (callgrind, MobileNetV2's Conv1
    and ResNet50's conv1 with the avx2 GEMM: im2col 35.8M -> 11.3M instructions)."""
    cdef Py_ssize_t cg = g.c // g.groups
    cdef Py_ssize_t r, b, oy, ox, ky, kx, iy, ix, ix0, rem
    cdef Py_ssize_t run = g.kw * cg
    cdef bint runs = g.groups == 1 and g.dw == 1
    cdef float* dst = cols
    cdef const float* src
    for r in range(row0, row0 + rows):
        b = r // (g.oh * g.ow)
        rem = r - b * g.oh * g.ow
        oy = rem // g.ow
        ox = rem - oy * g.ow
        ix0 = ox * g.sw - g.pad_left
        for ky in range(g.kh):
            iy = oy * g.sh - g.pad_top + ky * g.dh
            if iy < 0 or iy >= g.h:
                memset(dst, 0, run * sizeof(float))
                dst += run
                continue
            src = x_nhwc + (b * g.h + iy) * g.w * g.c + c0
            if runs and ix0 >= 0 and ix0 + g.kw <= g.w:
                _copy_floats(dst, src + ix0 * g.c, run)
                dst += run
                continue
            for kx in range(g.kw):
                ix = ix0 + kx * g.dw
                if 0 <= ix < g.w:
                    _copy_floats(dst, src + ix * g.c, cg)
                else:
                    memset(dst, 0, cg * sizeof(float))
                dst += cg


cdef void _conv2d_block_forward(float* y_nhwc, const float* x_nhwc, const float* w_packed,
                                const float* bias_packed, const ConvGeom* g,
                                const Activation* act, float* cols, Py_ssize_t block,
                                Py_ssize_t unit) noexcept nogil:
    """Block `unit` (group-major) of conv2d_forward: im2col of its output rows into cols,
    then their GEMM, single-threaded."""
    cdef Py_ssize_t m = g.n * g.oh * g.ow, k = conv2d_k(g), cog = g.co // g.groups
    cdef Py_ssize_t blocks = (m + block - 1) // block
    cdef Py_ssize_t grp = unit // blocks, m0 = (unit - grp * blocks) * block
    cdef Py_ssize_t mb = min(block, m - m0)
    conv2d_im2col_rows(cols, x_nhwc, g, m0, mb, grp * (g.c // g.groups))
    f32_gemm_forward(y_nhwc + m0 * g.co + grp * cog, g.co, cols, k,
                     w_packed + grp * gemm_packed_floats(k, cog),
                     bias_packed + grp * gemm_packed_bias_floats(cog) if bias_packed != NULL
                     else NULL, mb, cog, k, act, 1)


cdef void conv2d_forward(float* y_nhwc, const float* x_nhwc, const float* w_packed,
                         const float* bias_packed, const ConvGeom* g, const Activation* act,
                         float* scratch, int nthreads) noexcept nogil:
    """y = act(conv(x, w) + bias); overwrites y.  bias_packed may be NULL.

    w_packed: per group, the (K, Cout_g) kernel packed by f32_gemm_pack_b, groups back to
    back; bias_packed likewise.  scratch: conv2d_scratch_floats(g, nthreads) floats.
    Threads take contiguous runs of whole blocks of output rows (static, as the GEMM's
    tiles: the next layer finds its rows in the same thread's cache), each building its
    im2col block in its own part of scratch; a pointwise convolution is one threaded GEMM.
    """
    cdef Py_ssize_t m = g.n * g.oh * g.ow, k = conv2d_k(g)
    cdef Py_ssize_t block, units, unit
    cdef int t
    if conv2d_is_pointwise(g):
        f32_gemm_forward(y_nhwc, g.co, x_nhwc, g.c, w_packed, bias_packed, m, g.co, k, act,
                         nthreads)
        return
    t = _conv2d_threads(g, nthreads)
    if t > 1 and _conv2d_whole(g, nthreads):
        conv2d_im2col_rows_par(scratch, x_nhwc, g, 0, m, 0, nthreads)
        f32_gemm_forward(y_nhwc, g.co, scratch, k, w_packed, bias_packed, m, g.co, k, act,
                         nthreads)
        return
    block = _conv2d_block(g, nthreads)
    units = g.groups * ((m + block - 1) // block)
    if t <= 1:
        for unit in range(units):
            _conv2d_block_forward(y_nhwc, x_nhwc, w_packed, bias_packed, g, act, scratch,
                                  block, unit)
        return
    for unit in prange(units, nogil=True, num_threads=t, schedule="static"):
        _conv2d_block_forward(y_nhwc, x_nhwc, w_packed, bias_packed, g, act,
                              scratch + ec_thread_id() * block * k, block, unit)


cdef void _col2im_channels(float* dx_nhwc, const float* cols, const ConvGeom* g,
                           Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t c0, Py_ssize_t j0,
                           Py_ssize_t j1) noexcept nogil:
    """conv2d_col2im_rows for the group channels j0..j1 only."""
    cdef Py_ssize_t cg = g.c // g.groups
    cdef Py_ssize_t r, b, oy, ox, ky, kx, iy, ix, rem, j
    cdef const float* src = cols
    cdef float* dst
    for r in range(row0, row0 + rows):
        b = r // (g.oh * g.ow)
        rem = r - b * g.oh * g.ow
        oy = rem // g.ow
        ox = rem - oy * g.ow
        for ky in range(g.kh):
            iy = oy * g.sh - g.pad_top + ky * g.dh
            for kx in range(g.kw):
                ix = ox * g.sw - g.pad_left + kx * g.dw
                if 0 <= iy < g.h and 0 <= ix < g.w:
                    dst = dx_nhwc + ((b * g.h + iy) * g.w + ix) * g.c + c0
                    for j in range(j0, j1):
                        dst[j] += src[j]
                src += cg


cdef void _col2im_part(float* dx_nhwc, const float* cols, const ConvGeom* g, Py_ssize_t row0,
                       Py_ssize_t rows, Py_ssize_t c0, Py_ssize_t part,
                       Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t j0, j1
    chunk_bounds(part, parts, g.c // g.groups, 16, &j0, &j1)
    if j1 > j0:
        _col2im_channels(dx_nhwc, cols, g, row0, rows, c0, j0, j1)


cdef void conv2d_col2im_rows(float* dx_nhwc, const float* cols, const ConvGeom* g,
                             Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t c0,
                             int nthreads) noexcept nogil:
    """The adjoint of conv2d_im2col_rows: dx[pixel of tap, c0:c0 + Cin_g] += cols[r, tap, :]
    for output rows row0..row0+rows; taps in the padding are dropped.  ACCUMULATES.
    Overlapping windows add into the same pixels, so threads split the channels (16 or
    more each), never the rows: every element still gets its terms in row order."""
    cdef Py_ssize_t cg = g.c // g.groups, part
    cdef int t = par_threads(rows * conv2d_k(g), PAR_MIN_FLOATS, nthreads)
    if t > cg // 16:
        t = <int>(cg // 16)
    if t <= 1:
        _col2im_channels(dx_nhwc, cols, g, row0, rows, c0, 0, cg)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _col2im_part(dx_nhwc, cols, g, row0, rows, c0, part, t)


cdef void _im2col_part(float* cols, const float* x_nhwc, const ConvGeom* g, Py_ssize_t row0,
                       Py_ssize_t rows, Py_ssize_t c0, Py_ssize_t part,
                       Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t r0, r1
    chunk_bounds(part, parts, rows, 1, &r0, &r1)
    if r1 > r0:
        conv2d_im2col_rows(cols + r0 * conv2d_k(g), x_nhwc, g, row0 + r0, r1 - r0, c0)


cdef void conv2d_im2col_rows_par(float* cols, const float* x_nhwc, const ConvGeom* g,
                                 Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t c0,
                                 int nthreads) noexcept nogil:
    """conv2d_im2col_rows with the rows split across threads."""
    cdef Py_ssize_t part
    cdef int t = par_threads(rows * conv2d_k(g), PAR_MIN_FLOATS, nthreads)
    if t <= 1:
        conv2d_im2col_rows(cols, x_nhwc, g, row0, rows, c0)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _im2col_part(cols, x_nhwc, g, row0, rows, c0, part, t)


cdef inline Py_ssize_t _conv_wgrad_rows(const ConvGeom* g) noexcept nogil:
    # Per output row of a block: f32_wgrad_block's share and, unless pointwise, its im2col row.
    cdef Py_ssize_t k = conv2d_k(g)
    cdef Py_ssize_t per_row = wgrad_row_floats(k, g.co // g.groups)
    if not conv2d_is_pointwise(g):
        per_row += k
    return wgrad_block_rows(per_row, g.n * g.oh * g.ow)


cdef inline Py_ssize_t conv2d_backward_scratch_floats(const ConvGeom* g) noexcept nogil:
    """Scratch of one conv2d_backward call: the larger of the dw phase (f32_wgrad_block's
    scratch plus an im2col block, and with groups > 1 one group's dw) and the dx phase
    (one group's w^T packed, one block of dy @ w^T), which run one after the other."""
    cdef Py_ssize_t k = conv2d_k(g), cog = g.co // g.groups
    cdef Py_ssize_t rows = _conv_wgrad_rows(g)
    cdef Py_ssize_t wgrad = wgrad_scratch_floats(rows, k, cog)
    cdef Py_ssize_t xgrad = gemm_packed_floats(cog, k)
    if not conv2d_is_pointwise(g):
        wgrad += rows * k
        xgrad += rows * k
    if g.groups > 1:
        wgrad += k * cog
    return wgrad if wgrad > xgrad else xgrad


cdef void _conv2d_backward_dw_group(float* dw_kn, const float* x_nhwc, const float* dy_nhwc,
                                    const ConvGeom* g, Py_ssize_t grp, float* scratch,
                                    int nthreads) noexcept nogil:
    """dw_kn (K, Cout_g) = im2col_g(x)^T @ dy_g over blocks of output rows; overwrites."""
    cdef Py_ssize_t m = g.n * g.oh * g.ow, k = conv2d_k(g), cog = g.co // g.groups
    cdef Py_ssize_t rows = _conv_wgrad_rows(g)
    cdef Py_ssize_t blocks = (m + rows - 1) // rows, blk, m0, mb
    cdef float* cols = scratch + wgrad_scratch_floats(rows, k, cog)
    cdef const float* dyg = dy_nhwc + grp * cog
    for blk in range(blocks):
        m0 = blk * rows
        mb = min(rows, m - m0)
        if conv2d_is_pointwise(g):
            f32_wgrad_block(dw_kn, x_nhwc + m0 * g.c, g.c, dyg + m0 * g.co, g.co, mb, k, cog,
                            rows, blk == 0, blk == blocks - 1, scratch, nthreads)
        else:
            conv2d_im2col_rows_par(cols, x_nhwc, g, m0, mb, grp * (g.c // g.groups), nthreads)
            f32_wgrad_block(dw_kn, cols, k, dyg + m0 * g.co, g.co, mb, k, cog, rows,
                            blk == 0, blk == blocks - 1, scratch, nthreads)


cdef void _conv2d_backward_dw(float* dw_hwio, const float* x_nhwc, const float* dy_nhwc,
                              const ConvGeom* g, float* scratch, int nthreads) noexcept nogil:
    """dw = im2col(x)^T @ dy per group; overwrites dw.  A group's (K, Cout_g) block is
    built after the im2col block in scratch, then copied into its columns of dw."""
    cdef Py_ssize_t k = conv2d_k(g), cog = g.co // g.groups, grp, r
    cdef Py_ssize_t rows = _conv_wgrad_rows(g)
    cdef float* staged = scratch + wgrad_scratch_floats(rows, k, cog) + rows * k
    if g.groups == 1:
        _conv2d_backward_dw_group(dw_hwio, x_nhwc, dy_nhwc, g, 0, scratch, nthreads)
        return
    for grp in range(g.groups):
        _conv2d_backward_dw_group(staged, x_nhwc, dy_nhwc, g, grp, scratch, nthreads)
        for r in range(k):
            memcpy(dw_hwio + r * g.co + grp * cog, staged + r * cog, cog * sizeof(float))


cdef void _conv2d_backward_dx(float* dx_nhwc, const float* w_hwio, const float* dy_nhwc,
                              const ConvGeom* g, float* scratch, int nthreads) noexcept nogil:
    """dx = col2im(dy_g @ w_g^T) per group; overwrites dx."""
    cdef Py_ssize_t m = g.n * g.oh * g.ow, k = conv2d_k(g), cog = g.co // g.groups
    cdef Py_ssize_t rows = _conv_wgrad_rows(g)
    cdef float* wt = scratch
    cdef float* dcols = wt + gemm_packed_floats(cog, k)
    cdef Py_ssize_t blk, m0, mb, grp
    cdef Activation linear = make_activation(ACT_LINEAR, 0.0, INFINITY, 0.0)
    if conv2d_is_pointwise(g):
        f32_gemm_pack_b_transposed(wt, w_hwio, g.co, g.co, k, nthreads)
        f32_gemm_forward(dx_nhwc, g.c, dy_nhwc, g.co, wt, NULL, m, k, g.co, &linear, nthreads)
        return
    par_zero(dx_nhwc, g.n * g.h * g.w * g.c, nthreads)
    for grp in range(g.groups):
        # B = w_g^T (Cout_g, K): B[i, j] = w_hwio[j * Cout + grp * Cout_g + i].
        f32_gemm_pack_b_transposed(wt, w_hwio + grp * cog, g.co, cog, k, nthreads)
        for blk in range((m + rows - 1) // rows):
            m0 = blk * rows
            mb = min(rows, m - m0)
            f32_gemm_forward(dcols, k, dy_nhwc + m0 * g.co + grp * cog, g.co, wt, NULL, mb, k,
                             cog, &linear, nthreads)
            conv2d_col2im_rows(dx_nhwc, dcols, g, m0, mb, grp * (g.c // g.groups), nthreads)


cdef void conv2d_backward(float* dx_nhwc, float* dw_hwio, float* db, const float* x_nhwc,
                          const float* w_hwio, const float* dy_nhwc, const ConvGeom* g,
                          float* scratch, int nthreads) noexcept nogil:
    """Gradients of y = conv(x, w) + b (any groups) given dy (N, OH, OW, Cout), after the
    activation's backward: dw (KH, KW, Cin/groups, Cout), db (Cout), dx (N, H, W, Cin).  OVERWRITES
    each output; any of them may be NULL (not needed).  w_hwio is the plain Keras kernel,
    not the packed one.  scratch: conv2d_backward_scratch_floats(g) floats.  No output may
    overlap an input or another output.  Threads split each phase's steps (im2col rows,
    packing panels, GEMM tiles, col2im channels, column-sum blocks), never a sum: every
    thread count gives the same bits, and the scratch is the same for any count."""
    if db != NULL:
        f32_column_sums_threads(db, dy_nhwc, g.n * g.oh * g.ow, g.co, nthreads)
    if dw_hwio != NULL:
        _conv2d_backward_dw(dw_hwio, x_nhwc, dy_nhwc, g, scratch, nthreads)
    if dx_nhwc != NULL:
        _conv2d_backward_dx(dx_nhwc, w_hwio, dy_nhwc, g, scratch, nthreads)


# --- checked Python entry points -----------------------------------------------------

cdef ConvGeom _conv_geom(tuple x_shape, tuple w_shape, tuple strides, tuple dilation,
                         tuple pads, Py_ssize_t groups) except *:
    """Validate and build the geometry; pads = (top, bottom, left, right)."""
    cdef ConvGeom g
    _require(len(x_shape) == 4 and len(w_shape) == 4, "conv2d: x must be NHWC and w HWIO")
    _require(len(strides) == 2 and len(dilation) == 2 and len(pads) == 4,
             f"conv2d: strides {strides} and dilation {dilation} need 2 values, pads {pads} 4")
    g.n, g.h, g.w, g.c = x_shape
    g.kh, g.kw = w_shape[0], w_shape[1]
    g.sh, g.sw = strides
    g.dh, g.dw = dilation
    g.pad_top, g.pad_left = pads[0], pads[2]
    g.groups = groups
    g.co = w_shape[3]
    _require(min(g.n, g.h, g.w, g.c, g.kh, g.kw, g.co) > 0, f"conv2d: empty shape {x_shape} {w_shape}")
    _require(min(g.sh, g.sw, g.dh, g.dw, g.groups) > 0, "conv2d: strides/dilation/groups must be >= 1")
    _require(min(pads) >= 0, "conv2d: negative padding")
    _require(g.c % groups == 0 and g.co % groups == 0 and w_shape[2] * groups == g.c,
             f"conv2d: {g.c} input / {g.co} output channels do not split into {groups} groups "
             f"of kernel depth {w_shape[2]}")
    g.oh = (g.h + pads[0] + pads[1] - (g.kh - 1) * g.dh - 1) // g.sh + 1
    g.ow = (g.w + pads[2] + pads[3] - (g.kw - 1) * g.dw - 1) // g.sw + 1
    _require(g.oh > 0 and g.ow > 0, f"conv2d: kernel larger than padded input {x_shape}")
    return g


def conv2d_output_hw(Py_ssize_t h, Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, strides,
                     dilation, pads):
    return ((h + pads[0] + pads[1] - (kh - 1) * dilation[0] - 1) // strides[0] + 1,
            (w + pads[2] + pads[3] - (kw - 1) * dilation[1] - 1) // strides[1] + 1)


def conv2d_pack_weights(const float[:, :, :, ::1] w_hwio, Py_ssize_t groups, float[::1] out):
    """Pack an HWIO kernel (in = Cin/groups) per group for conv2d_forward."""
    cdef Py_ssize_t kh = w_hwio.shape[0], kw = w_hwio.shape[1], ci = w_hwio.shape[2]
    cdef Py_ssize_t co = w_hwio.shape[3]
    cdef Py_ssize_t k = kh * kw * ci, cog, grp
    _require(groups > 0 and co % groups == 0, f"conv2d_pack_weights: {co} filters, {groups} groups")
    cog = co // groups
    _require(out.shape[0] == groups * gemm_packed_floats(k, cog),
             f"conv2d_pack_weights: out has {out.shape[0]} floats, needs {groups * gemm_packed_floats(k, cog)}")
    with nogil:
        for grp in range(groups):
            f32_gemm_pack_b(&out[grp * gemm_packed_floats(k, cog)], &w_hwio[0, 0, 0, grp * cog],
                            co, k, cog, 1)


def conv2d_packed_sizes(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ci_per_group, Py_ssize_t co,
                        Py_ssize_t groups):
    """(weight floats, bias floats) of the packed kernel for the current GEMM variant."""
    cdef Py_ssize_t cog = co // groups
    return (groups * gemm_packed_floats(kh * kw * ci_per_group, cog),
            groups * gemm_packed_bias_floats(cog))


def conv2d_pack_bias(const float[::1] bias, Py_ssize_t groups, float[::1] out):
    cdef Py_ssize_t co = bias.shape[0], cog, grp
    _require(groups > 0 and co % groups == 0, "conv2d_pack_bias: filters do not split into groups")
    cog = co // groups
    _require(out.shape[0] == groups * gemm_packed_bias_floats(cog), "conv2d_pack_bias: size mismatch")
    with nogil:
        for grp in range(groups):
            f32_gemm_pack_bias(&out[grp * gemm_packed_bias_floats(cog)], &bias[grp * cog], cog)


def conv2d_scratch_size(x_shape, w_shape, strides=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
                        Py_ssize_t groups=1, int nthreads=1):
    """Floats of scratch conv2d needs when run with nthreads threads (one im2col block per
    thread it uses)."""
    cdef ConvGeom g = _conv_geom(tuple(x_shape), tuple(w_shape), tuple(strides),
                                 tuple(dilation), tuple(pads), groups)
    return conv2d_scratch_floats(&g, nthreads)


def conv2d(const float[:, :, :, ::1] x_nhwc, w_shape, const float[::1] w_packed,
           float[:, :, :, ::1] y_nhwc, float[::1] scratch, strides=(1, 1), dilation=(1, 1),
           pads=(0, 0, 0, 0), Py_ssize_t groups=1, bias_packed=None, int act=0,
           float alpha=0.0, float max_value=INFINITY, float threshold=0.0, int nthreads=1):
    """y = act(conv2d(x, w) + bias) with w packed by conv2d_pack_weights.

    pads = (top, bottom, left, right) as Keras computes them (see layers/convolutional.py).
    scratch: conv2d_scratch_size(..., nthreads) floats for the same nthreads.
    """
    cdef Activation a_ = _checked_activation(act, alpha, max_value, threshold)
    cdef ConvGeom g = _conv_geom((x_nhwc.shape[0], x_nhwc.shape[1], x_nhwc.shape[2], x_nhwc.shape[3]), tuple(w_shape), tuple(strides),
                                 tuple(dilation), tuple(pads), groups)
    cdef const float[::1] biasv
    cdef const float* biasp = NULL
    cdef float* scratchp = NULL
    _require((y_nhwc.shape[0], y_nhwc.shape[1], y_nhwc.shape[2], y_nhwc.shape[3]) == (g.n, g.oh, g.ow, g.co),
             f"conv2d: y is {tuple(y_nhwc.shape)[:4]}, expected {(g.n, g.oh, g.ow, g.co)}")
    _require(w_packed.shape[0] == conv2d_packed_weight_floats(&g), "conv2d: packed kernel size mismatch")
    _require(scratch.shape[0] >= conv2d_scratch_floats(&g, nthreads),
             f"conv2d: scratch has {scratch.shape[0]} floats, needs "
             f"{conv2d_scratch_floats(&g, nthreads)} for {nthreads} thread(s)")
    if bias_packed is not None:
        biasv = bias_packed
        _require(biasv.shape[0] == conv2d_packed_bias_floats(&g), "conv2d: packed bias size mismatch")
        biasp = &biasv[0]
    _require(not _overlaps(&y_nhwc[0, 0, 0, 0], y_nhwc.size * 4, &x_nhwc[0, 0, 0, 0],
                           x_nhwc.size * 4), "conv2d: y must not overlap x")
    if scratch.shape[0] > 0:
        scratchp = &scratch[0]
    with nogil:
        conv2d_forward(&y_nhwc[0, 0, 0, 0], &x_nhwc[0, 0, 0, 0], &w_packed[0], biasp, &g, &a_,
                       scratchp, nthreads)


def conv2d_grad_scratch_size(x_shape, w_shape, strides=(1, 1), dilation=(1, 1),
                             pads=(0, 0, 0, 0), Py_ssize_t groups=1):
    """Floats of scratch conv2d_grad needs (current GEMM variant); w_shape is the HWIO
    kernel's, I = Cin/groups."""
    cdef ConvGeom g = _conv_geom(tuple(x_shape), tuple(w_shape), tuple(strides),
                                 tuple(dilation), tuple(pads), groups)
    return conv2d_backward_scratch_floats(&g)


def conv2d_grad(const float[:, :, :, ::1] x_nhwc, const float[:, :, :, ::1] w_hwio,
                const float[:, :, :, ::1] dy_nhwc, dx_nhwc, dw_hwio, db, float[::1] scratch,
                strides=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), Py_ssize_t groups=1,
                int nthreads=1):
    """Conv2D backward: dw = im2col(x)^T @ dy, db = sums of dy, dx = col2im(dy @ w^T);
    overwrites each given output (float32 C-contiguous, or None when not needed).

    w_hwio is the plain Keras kernel (KH, KW, Cin/groups, Cout).  scratch: at least
    conv2d_grad_scratch_size(...) floats (the same groups)."""
    cdef ConvGeom g
    cdef _Span outs[4]
    cdef _Span ins[3]
    cdef float* dxp
    cdef float* dwp
    cdef float* dbp
    g = _conv_geom((x_nhwc.shape[0], x_nhwc.shape[1], x_nhwc.shape[2], x_nhwc.shape[3]),
                   (w_hwio.shape[0], w_hwio.shape[1], w_hwio.shape[2], w_hwio.shape[3]),
                   tuple(strides), tuple(dilation), tuple(pads), groups)
    if (dy_nhwc.shape[0] != g.n or dy_nhwc.shape[1] != g.oh or dy_nhwc.shape[2] != g.ow
            or dy_nhwc.shape[3] != g.co):
        raise KernelShapeError(f"conv2d_grad: dy is {tuple(dy_nhwc.shape)[:4]}, expected "
                               f"{(g.n, g.oh, g.ow, g.co)}")
    if scratch.shape[0] < max(conv2d_backward_scratch_floats(&g), 1):
        raise KernelShapeError(f"conv2d_grad: scratch has {scratch.shape[0]} floats, needs "
                               f"{conv2d_backward_scratch_floats(&g)}")
    dxp = _optional_out(dx_nhwc, (g.n, g.h, g.w, g.c), "conv2d_grad: dx", &outs[0])
    dwp = _optional_out(dw_hwio, (g.kh, g.kw, g.c // g.groups, g.co), "conv2d_grad: dw",
                        &outs[1])
    dbp = _optional_out(db, (g.co,), "conv2d_grad: db", &outs[2])
    outs[3] = _span(&scratch[0], scratch.nbytes)
    ins[0] = _span(&x_nhwc[0, 0, 0, 0], x_nhwc.nbytes)
    ins[1] = _span(&w_hwio[0, 0, 0, 0], w_hwio.nbytes)
    ins[2] = _span(&dy_nhwc[0, 0, 0, 0], dy_nhwc.nbytes)
    _require_disjoint(outs, 4, ("dx", "dw", "db", "scratch"), ins, 3, ("x", "w", "dy"),
                      "conv2d_grad")
    with nogil:
        conv2d_backward(dxp, dwp, dbp, &x_nhwc[0, 0, 0, 0], &w_hwio[0, 0, 0, 0],
                        &dy_nhwc[0, 0, 0, 0], &g, &scratch[0], nthreads)
