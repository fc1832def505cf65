# f32 GEMM: C[M, N] = act(A[M, K] @ B[K, N] + bias), B packed once at load.
#
# Packed B ("panels"): N is cut into ceil(N / NR) panels of NR columns; each panel stores
# its K rows of NR floats contiguously, zero padded past N.  A last panel of at most NR/2
# columns is "narrow": its K rows are NR/2 floats each (the second half of its space is
# zeros), and the narrow micro-kernels read it: a 16-channel layer on the 32-wide AVX-512
# tile would otherwise do twice its multiply-adds.  Every panel still starts at p*NR*K.
# The micro-kernel then streams one panel linearly while an MR-row tile of A stays in
# registers.  NR belongs to the micro-kernel chosen once per process (see
# f32_gemm_microkernels.h), so weights are packed after that choice and a plan records the
# NR it was packed for.
#
# Blocking: rows are processed in blocks of `_gemm_block_rows(K)` so one block of A stays
# in L2 while every panel of B passes over it; the activation epilogue (for the ones the
# micro-kernel cannot clamp) runs on the block while it is still in cache.
# Threads (nthreads > 1) take 2-D tiles of C: row blocks, and when those are
# too few per thread, groups of panels (_gemm_tiles); the forward hands them out
# statically, each thread one contiguous run, so consecutive layers find most of their
# rows in the cache of the thread that wrote them (dynamic hand-out moved half of C between
# cores on every call: 392x40x240 ran no faster on 2 threads than on 1, 1.35x static).
# Each C element is the same k loop in the same micro-kernel wherever its tile starts, so
# every thread count gives the same bits; packing and transposition split by panels and by
# destination rows.
#
# Training adds (beside the forward): f32_gemm_forward_acc (C += A @ B, the weight gradient
# summed over row blocks), f32_gemm_pack_b_transposed (pack B = src^T, for dx = dy @ w^T
# from a plain Keras kernel) and f32_transpose (A = x^T for dw = x^T @ dy).  The backward
# passes thereby run on the same micro-kernels as inference.

cdef extern from "f32_gemm_microkernels.h" nogil:
    ctypedef void (*f32_gemm_ukernel_fn)(size_t mr, size_t nc, size_t kc, const float* a,
                                        size_t lda, const float* bp, const float* bias,
                                        float* c, size_t ldc, float lo, float hi) noexcept
    ctypedef void (*f32_gemm_acc_ukernel_fn)(size_t mr, size_t nc, size_t kc, const float* a,
                                            size_t lda, const float* bp, float* c,
                                            size_t ldc) noexcept
    ctypedef struct f32_gemm_config:
        const char* name
        int mr
        int nr
        f32_gemm_ukernel_fn ukernel
        f32_gemm_acc_ukernel_fn ukernel_acc
        int mr_half
        f32_gemm_ukernel_fn ukernel_half
        f32_gemm_acc_ukernel_fn ukernel_acc_half
        f32_gemm_ukernel_fn ukernel_1
        f32_gemm_acc_ukernel_fn ukernel_acc_1
        f32_gemm_ukernel_fn ukernel_narrow
        f32_gemm_acc_ukernel_fn ukernel_acc_narrow
        f32_gemm_ukernel_fn ukernel_narrow_1
        f32_gemm_acc_ukernel_fn ukernel_acc_narrow_1
    const f32_gemm_config* f32_gemm_configs
    int f32_gemm_config_count
    int f32_gemm_config_supported(int index)

import os as _os

cdef const f32_gemm_config* _gemm = NULL


def available_gemm_isas():
    """Names of the GEMM micro-kernel variants this CPU can run, best first."""
    return [f32_gemm_configs[i].name.decode() for i in range(f32_gemm_config_count)
            if f32_gemm_config_supported(i)]


def set_gemm_isa(name=None):
    """Select the GEMM micro-kernel by ISA name (None: the best this CPU supports).

    Packed weights depend on the variant's NR, so select before loading models; a model
    checks at run time that the NR it was packed for is still current.
    """
    global _gemm
    cdef int i
    for i in range(f32_gemm_config_count):
        if not f32_gemm_config_supported(i):
            continue
        if name is None or f32_gemm_configs[i].name.decode() == name:
            _gemm = &f32_gemm_configs[i]
            return gemm_isa()
    raise ValueError(f"GEMM variant {name!r} is not available on this CPU; "
                     f"available: {available_gemm_isas()}")


def gemm_isa():
    """(name, MR, NR) of the current GEMM micro-kernel."""
    return (_gemm.name.decode(), _gemm.mr, _gemm.nr)


set_gemm_isa(_os.environ.get("EDGECORE_GEMM_ISA") or None)


cdef inline Py_ssize_t gemm_panels(Py_ssize_t n) noexcept nogil:
    return (n + _gemm.nr - 1) // _gemm.nr


cdef inline Py_ssize_t gemm_packed_floats(Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    return gemm_panels(n) * _gemm.nr * k


cdef inline Py_ssize_t gemm_packed_bias_floats(Py_ssize_t n) noexcept nogil:
    return gemm_panels(n) * _gemm.nr


cdef inline Py_ssize_t gemm_panel_width(Py_ssize_t cols) noexcept nogil:
    """Floats per packed row of a panel holding `cols` columns: NR/2 when it is narrow."""
    return _gemm.nr // 2 if cols <= _gemm.nr // 2 else _gemm.nr


cdef enum:
    # K blocking of the forward GEMM: past _GEMM_KC_SPLIT, the k loop runs in slices of
    # _GEMM_KC, each over every row tile of the block before the next, so one panel's
    # slice (KC rows of NR floats: 32 KiB at NR = 32) stays in L1 for all the row tiles
    # and the row block is sized for a KC-wide slice of A.  Without it a 3x3 convolution
    # over 512 channels (K = 4608) streamed each 590 KB panel from L2 or L3 for every 8
    # rows (ResNet50's conv5 at 48 GFLOP/s against 140 on small K).
    _GEMM_KC = 256
    _GEMM_KC_SPLIT = 512


cdef inline Py_ssize_t _gemm_block_rows(Py_ssize_t k) noexcept nogil:
    # ~128 KiB of A per block (half a typical L2), a whole number of MR tiles, at least
    # one tile and at most 512 rows so the activation epilogue stays cache-resident; with
    # K blocking (k > _GEMM_KC_SPLIT), 128 KiB of one KC-wide slice.
    cdef Py_ssize_t mr = _gemm.mr
    cdef Py_ssize_t kk = _GEMM_KC if k > _GEMM_KC_SPLIT else k
    cdef Py_ssize_t rows = (32768 // (kk if kk > 0 else 1)) // mr * mr
    if rows < mr:
        rows = mr
    if rows > 512:
        rows = 512 // mr * mr
    return rows


cdef void _pack_b_panels(float* bp, const float* b_kn, Py_ssize_t ldb, Py_ssize_t k,
                         Py_ssize_t n, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Panels p0..p1 of f32_gemm_pack_b."""
    cdef Py_ssize_t nr = _gemm.nr
    cdef Py_ssize_t p, kk, j, cols, width
    cdef const float* src
    cdef float* dst
    for p in range(p0, p1):
        dst = bp + p * nr * k
        cols = min(nr, n - p * nr)
        width = gemm_panel_width(cols)
        for kk in range(k):
            src = b_kn + kk * ldb + p * nr
            for j in range(cols):
                dst[j] = src[j]
            for j in range(cols, width):
                dst[j] = 0.0
            dst += width
        if width < nr:
            memset(dst, 0, (nr - width) * k * sizeof(float))


cdef void f32_gemm_pack_b(float* bp, const float* b_kn, Py_ssize_t ldb, Py_ssize_t k,
                          Py_ssize_t n, int nthreads) noexcept nogil:
    """bp[panel][k][NR] <- b_kn[k, n] (row stride ldb), zero padding past n.

    Row by row copies of NR floats (GCC vectorises them), the zero tail only in the last
    panel: training packs a kernel and a block of dy on every step, so this runs hot.
    Threads take whole panels."""
    cdef Py_ssize_t panels = gemm_panels(n), part
    cdef int t = par_threads(panels * _gemm.nr * k, PAR_MIN_FLOATS, nthreads)
    if t > panels:
        t = <int>panels
    if t <= 1:
        _pack_b_panels(bp, b_kn, ldb, k, n, 0, panels)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _pack_b_part(bp, b_kn, ldb, k, n, part, t, False)


cdef void _pack_b_part(float* bp, const float* b, Py_ssize_t ldb, Py_ssize_t k, Py_ssize_t n,
                       Py_ssize_t part, Py_ssize_t parts, bint transposed) noexcept nogil:
    # The panels of one thread.  (Bounds are computed here, not in the prange body: a
    # variable whose address the body takes would be shared between threads.)
    cdef Py_ssize_t p0, p1
    chunk_bounds(part, parts, gemm_panels(n), 1, &p0, &p1)
    if transposed:
        _pack_bt_panels(bp, b, ldb, k, n, p0, p1)
    else:
        _pack_b_panels(bp, b, ldb, k, n, p0, p1)


cdef void f32_gemm_pack_bias(float* biasp, const float* bias_n, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(gemm_packed_bias_floats(n)):
        biasp[j] = bias_n[j] if j < n else 0.0


cdef struct GemmTiles:
    # The output cut into tiles of `rows` rows (a multiple of MR) by `panels` panels:
    # row_tiles x col_tiles of them, each thread taking a contiguous run (forward) or one
    # at a time (the accumulating GEMM).
    Py_ssize_t rows, row_tiles, panels, col_tiles


cdef inline GemmTiles _gemm_tiles(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                                  int nthreads) noexcept nogil:
    """Tiles for nthreads threads: row blocks of _gemm_block_rows(k) while there are at
    least 4 tiles per thread (so a ragged last tile costs little); else equal row tiles,
    as few per thread as the block allows, while there are two MR tiles per thread;
    otherwise (a handful of rows) the panels are cut into column groups first (B is then
    read once per row block and A, small when m is, once per group), and rows only after
    that.  The tile
    shape never changes a result: every element is the same k loop in the same
    micro-kernel wherever its tile starts."""
    cdef GemmTiles t
    cdef Py_ssize_t mr = _gemm.mr, panels = gemm_panels(n)
    cdef Py_ssize_t want = 4 * nthreads, per
    t.rows = _gemm_block_rows(k)
    t.row_tiles = (m + t.rows - 1) // t.rows
    t.col_tiles = 1
    if t.row_tiles < want and m >= 2 * nthreads * mr:
        # Rows enough for two MR tiles per thread: split rows only, the same number of
        # equal tiles for each thread, as few as the row block allows (each tile streams
        # all of B: with K = 4608, 9.4 MB).  Column groups write parts of the same rows of
        # C, and where a row's part ends inside a cache line two threads write that line
        # (false sharing): 3136x16x72 measured 81 us on one thread and 131 on two with
        # column groups, 196x40x240 30 and 45.
        per = (m + nthreads - 1) // nthreads                    # rows a thread
        per = (per + t.rows - 1) // t.rows                      # tiles a thread
        t.rows = ((m + nthreads * per - 1) // (nthreads * per) + mr - 1) // mr * mr
        t.row_tiles = (m + t.rows - 1) // t.rows
    if t.row_tiles < want:
        t.col_tiles = min(panels, (want + t.row_tiles - 1) // t.row_tiles)
        if t.row_tiles * t.col_tiles < want and t.rows > mr:
            per = (want + t.col_tiles - 1) // t.col_tiles       # row tiles wanted
            t.rows = max(mr, ((m + per - 1) // per + mr - 1) // mr * mr)
            t.row_tiles = (m + t.rows - 1) // t.rows
    t.panels = (panels + t.col_tiles - 1) // t.col_tiles
    t.col_tiles = (panels + t.panels - 1) // t.panels
    return t


cdef inline int _gemm_threads(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                              int nthreads) noexcept nogil:
    # Below ~64K multiply-adds per thread the fork and join cost more than they save
    # (a parallel region is a few microseconds, 64K FMAs well under 1 us at AVX-512).
    return par_threads(m * n * k, 1 << 16, nthreads)


cdef inline f32_gemm_ukernel_fn _gemm_ukernel(Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """The tile for `rows` rows (1, up to MR/2, up to MR) of a panel of `cols` columns."""
    if cols <= _gemm.nr // 2:
        return _gemm.ukernel_narrow if rows > 1 else _gemm.ukernel_narrow_1
    return (_gemm.ukernel if rows > _gemm.mr_half else
            _gemm.ukernel_half if rows > 1 else _gemm.ukernel_1)


cdef inline f32_gemm_acc_ukernel_fn _gemm_ukernel_acc(Py_ssize_t rows,
                                                      Py_ssize_t cols) noexcept nogil:
    """The accumulating tile for `rows` rows of a panel of `cols` columns."""
    if cols <= _gemm.nr // 2:
        return _gemm.ukernel_acc_narrow if rows > 1 else _gemm.ukernel_acc_narrow_1
    return (_gemm.ukernel_acc if rows > _gemm.mr_half else
            _gemm.ukernel_acc_half if rows > 1 else _gemm.ukernel_acc_1)


cdef void _gemm_rect(float* c_mn, Py_ssize_t ldc, const float* a_mk, Py_ssize_t lda,
                     const float* bp, const float* biasp, Py_ssize_t m0, Py_ssize_t mb,
                     Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t n, Py_ssize_t k,
                     const Activation* act, float lo, float hi) noexcept nogil:
    """Rows m0..m0+mb, panels p0..p1 of C = act(A @ B + bias); the activation the
    micro-kernel cannot clamp (lo = -inf, hi = +inf then) runs on the rectangle while it is
    in cache.  Past _GEMM_KC_SPLIT the k loop is blocked: the first slice starts from the
    bias, the others accumulate onto C (the same multiply-adds in the same order, the
    partial sums stored as the float32 accumulators they are, so the same bits), and the
    clamp runs on the finished rectangle."""
    cdef Py_ssize_t mr = _gemm.mr, nr = _gemm.nr
    cdef Py_ssize_t p, i, t, rows, cols, row, c0, c1, width, kb, k0, kcur, j
    cdef float* cr
    cdef float v
    c0 = p0 * nr
    c1 = min(p1 * nr, n)
    if k <= _GEMM_KC_SPLIT:
        for p in range(p0, p1):
            cols = min(nr, n - p * nr)
            for t in range((mb + mr - 1) // mr):
                i = t * mr
                rows = min(mr, mb - i)
                _gemm_ukernel(rows, cols)(rows, cols, k, a_mk + (m0 + i) * lda, lda,
                                          bp + p * nr * k,
                                          biasp + p * nr if biasp != NULL else NULL,
                                          c_mn + (m0 + i) * ldc + p * nr, ldc, lo, hi)
    else:
        for kb in range((k + _GEMM_KC - 1) // _GEMM_KC):
            k0 = kb * _GEMM_KC
            kcur = min(<Py_ssize_t>_GEMM_KC, k - k0)
            for p in range(p0, p1):
                cols = min(nr, n - p * nr)
                width = gemm_panel_width(cols)
                for t in range((mb + mr - 1) // mr):
                    i = t * mr
                    rows = min(mr, mb - i)
                    if kb == 0:
                        _gemm_ukernel(rows, cols)(
                            rows, cols, kcur, a_mk + (m0 + i) * lda, lda, bp + p * nr * k,
                            biasp + p * nr if biasp != NULL else NULL,
                            c_mn + (m0 + i) * ldc + p * nr, ldc, -INFINITY, INFINITY)
                    else:
                        _gemm_ukernel_acc(rows, cols)(
                            rows, cols, kcur, a_mk + (m0 + i) * lda + k0, lda,
                            bp + p * nr * k + k0 * width, c_mn + (m0 + i) * ldc + p * nr, ldc)
        if lo > -INFINITY or hi < INFINITY:
            # The tiles' clamp, element by element: replace only where v < lo or v > hi
            # (a NaN passes, -0 stays -0), as EC_F32_GEMM_BODY does.
            for row in range(m0, m0 + mb):
                cr = c_mn + row * ldc
                for j in range(c0, c1):
                    v = cr[j]
                    if v < lo:
                        cr[j] = lo
                    elif v > hi:
                        cr[j] = hi
    if act_is_clamp(act):
        return
    if ldc == n and c0 == 0 and c1 == n:
        activation_forward(c_mn + m0 * ldc, c_mn + m0 * ldc, mb * n, act, 1)
    else:
        for row in range(m0, m0 + mb):
            activation_forward(c_mn + row * ldc + c0, c_mn + row * ldc + c0, c1 - c0, act, 1)


cdef void _gemm_tile(float* c_mn, Py_ssize_t ldc, const float* a_mk, Py_ssize_t lda,
                     const float* bp, const float* biasp, Py_ssize_t m, Py_ssize_t n,
                     Py_ssize_t k, const Activation* act, float lo, float hi,
                     const GemmTiles* tl, Py_ssize_t tile) noexcept nogil:
    cdef Py_ssize_t rt = tile // tl.col_tiles, ct = tile - rt * tl.col_tiles
    cdef Py_ssize_t m0 = rt * tl.rows, p0 = ct * tl.panels
    _gemm_rect(c_mn, ldc, a_mk, lda, bp, biasp, m0, min(tl.rows, m - m0), p0,
               min(p0 + tl.panels, gemm_panels(n)), n, k, act, lo, hi)


cdef void f32_gemm_forward(float* c_mn, Py_ssize_t ldc, const float* a_mk, Py_ssize_t lda,
                           const float* bp, const float* biasp, Py_ssize_t m, Py_ssize_t n,
                           Py_ssize_t k, const Activation* act, int nthreads) noexcept nogil:
    """c[m, :n] = act(a[m, :k] @ B + bias); overwrites c.  biasp may be NULL.  Threads
    take contiguous runs of 2-D tiles of c (_gemm_tiles); bit for bit the serial result."""
    cdef Py_ssize_t block = _gemm_block_rows(k)
    cdef Py_ssize_t blk, m0, tile
    cdef float lo = -INFINITY, hi = INFINITY
    cdef int t = _gemm_threads(m, n, k, nthreads)
    cdef GemmTiles tl
    if act_is_clamp(act):
        act_clamp_bounds(act, &lo, &hi)
    # Loops count blocks and tiles: Cython compiles range() with a run-time step to
    # Python iteration, which nogil code cannot do.
    if t <= 1:
        for blk in range((m + block - 1) // block):
            m0 = blk * block
            _gemm_rect(c_mn, ldc, a_mk, lda, bp, biasp, m0, min(block, m - m0), 0,
                       gemm_panels(n), n, k, act, lo, hi)
        return
    tl = _gemm_tiles(m, n, k, t)
    if tl.row_tiles * tl.col_tiles < t:
        t = <int>(tl.row_tiles * tl.col_tiles)
    for tile in prange(tl.row_tiles * tl.col_tiles, nogil=True, num_threads=t,
                       schedule="static"):
        _gemm_tile(c_mn, ldc, a_mk, lda, bp, biasp, m, n, k, act, lo, hi, &tl, tile)


cdef void _gemm_acc_rect(float* c_mn, Py_ssize_t ldc, const float* a_mk, Py_ssize_t lda,
                         const float* bp, Py_ssize_t m0, Py_ssize_t mb, Py_ssize_t p0,
                         Py_ssize_t p1, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t mr = _gemm.mr, nr = _gemm.nr
    cdef Py_ssize_t p, i, t, rows, cols
    cdef f32_gemm_acc_ukernel_fn ukernel
    for p in range(p0, p1):
        cols = min(nr, n - p * nr)
        for t in range((mb + mr - 1) // mr):
            i = t * mr
            rows = min(mr, mb - i)
            ukernel = _gemm_ukernel_acc(rows, cols)
            ukernel(rows, cols, k, a_mk + (m0 + i) * lda, lda, bp + p * nr * k,
                    c_mn + (m0 + i) * ldc + p * nr, ldc)


cdef void _gemm_acc_tile(float* c_mn, Py_ssize_t ldc, const float* a_mk, Py_ssize_t lda,
                         const float* bp, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                         const GemmTiles* tl, Py_ssize_t tile) noexcept nogil:
    cdef Py_ssize_t rt = tile // tl.col_tiles, ct = tile - rt * tl.col_tiles
    cdef Py_ssize_t m0 = rt * tl.rows, p0 = ct * tl.panels
    _gemm_acc_rect(c_mn, ldc, a_mk, lda, bp, m0, min(tl.rows, m - m0), p0,
                   min(p0 + tl.panels, gemm_panels(n)), n, k)


cdef void f32_gemm_forward_acc(float* c_mn, Py_ssize_t ldc, const float* a_mk, Py_ssize_t lda,
                               const float* bp, Py_ssize_t m, Py_ssize_t n,
                               Py_ssize_t k, int nthreads) noexcept nogil:
    """c[m, :n] += a[m, :k] @ B; ACCUMULATES into c (no bias, no activation).  B packed by
    f32_gemm_pack_b or f32_gemm_pack_b_transposed; c must not overlap a.  Threads take
    2-D tiles of c, as f32_gemm_forward's."""
    cdef Py_ssize_t block = _gemm_block_rows(k)
    cdef Py_ssize_t blk, m0, tile
    cdef int t = _gemm_threads(m, n, k, nthreads)
    cdef GemmTiles tl
    if t <= 1:
        for blk in range((m + block - 1) // block):
            m0 = blk * block
            _gemm_acc_rect(c_mn, ldc, a_mk, lda, bp, m0, min(block, m - m0), 0,
                           gemm_panels(n), n, k)
        return
    tl = _gemm_tiles(m, n, k, t)
    if tl.row_tiles * tl.col_tiles < t:
        t = <int>(tl.row_tiles * tl.col_tiles)
    for tile in prange(tl.row_tiles * tl.col_tiles, nogil=True, num_threads=t,
                       schedule="dynamic"):
        _gemm_acc_tile(c_mn, ldc, a_mk, lda, bp, m, n, k, &tl, tile)


cdef enum:
    _TRANSPOSE_TB = 32  # tile edge of f32_transpose: two 4 KiB tiles stay in L1


cdef void _pack_bt_panels(float* bp, const float* src, Py_ssize_t ld_src, Py_ssize_t k,
                          Py_ssize_t n, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Panels p0..p1 of f32_gemm_pack_b_transposed."""
    cdef Py_ssize_t nr = _gemm.nr
    cdef Py_ssize_t p, j, col, kk, width
    cdef float* dst
    for p in range(p0, p1):
        dst = bp + p * nr * k
        if (p + 1) * nr <= n:
            _transpose_cols(dst, src + p * nr * ld_src, nr, k, ld_src, 0, k)
            continue
        width = gemm_panel_width(n - p * nr)
        for kk in range(k):
            for j in range(width):
                col = p * nr + j
                dst[kk * width + j] = src[col * ld_src + kk] if col < n else 0.0
        if width < nr:
            memset(dst + width * k, 0, (nr - width) * k * sizeof(float))


cdef void f32_gemm_pack_b_transposed(float* bp, const float* src, Py_ssize_t ld_src,
                                     Py_ssize_t k, Py_ssize_t n, int nthreads) noexcept nogil:
    """Pack B (k, n) where B[i, j] = src[j * ld_src + i], i.e. B = src^T for src (n, k) with
    row stride ld_src; same layout as f32_gemm_pack_b (gemm_packed_floats(k, n) floats).

    A full panel (k rows of NR) is exactly the transpose of NR rows of src, so it is one
    transpose; only the last, partial panel is copied element by element with its zero
    padding.  Threads take whole panels."""
    cdef Py_ssize_t panels = gemm_panels(n), part
    cdef int t = par_threads(panels * _gemm.nr * k, PAR_MIN_FLOATS, nthreads)
    if t > panels:
        t = <int>panels
    if t <= 1:
        _pack_bt_panels(bp, src, ld_src, k, n, 0, panels)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _pack_b_part(bp, src, ld_src, k, n, part, t, True)


cdef void _transpose_cols(float* dst, const float* src, Py_ssize_t rows, Py_ssize_t cols,
                          Py_ssize_t ld_src, Py_ssize_t col0, Py_ssize_t col1) noexcept nogil:
    """Rows col0..col1 of dst = src^T (f32_transpose's loop over a range of src columns)."""
    cdef Py_ssize_t rb, cb, r0, c0, r1, c1, r, c
    cdef const float* s0
    cdef float* d
    for rb in range((rows + _TRANSPOSE_TB - 1) // _TRANSPOSE_TB):
        r0 = rb * _TRANSPOSE_TB
        r1 = min(r0 + _TRANSPOSE_TB, rows)
        for cb in range((col1 - col0 + _TRANSPOSE_TB - 1) // _TRANSPOSE_TB):
            c0 = col0 + cb * _TRANSPOSE_TB
            c1 = min(c0 + _TRANSPOSE_TB, col1)
            r = r0
            while r + 4 <= r1:
                s0 = src + r * ld_src
                for c in range(c0, c1):
                    d = dst + c * rows + r
                    d[0] = s0[c]
                    d[1] = s0[ld_src + c]
                    d[2] = s0[2 * ld_src + c]
                    d[3] = s0[3 * ld_src + c]
                r += 4
            for r in range(r, r1):
                for c in range(c0, c1):
                    dst[c * rows + r] = src[r * ld_src + c]


cdef void f32_transpose(float* dst, const float* src, Py_ssize_t rows, Py_ssize_t cols,
                        Py_ssize_t ld_src, int nthreads) noexcept nogil:
    """dst (cols, rows), contiguous = src^T for src (rows, cols) with row stride ld_src;
    overwrites dst, which must not overlap src.  Blocked in _TRANSPOSE_TB tiles so both the
    strided reads and the strided writes of one tile stay in L1; inside a tile four source
    rows go at once, so each destination row gets 4 adjacent floats per step (GCC packs
    them into one vector store: measured 1.3x over one element at a time).  Threads take
    ranges of destination rows (source columns), whole tiles each."""
    cdef Py_ssize_t part
    cdef int t = par_threads(rows * cols, PAR_MIN_FLOATS, nthreads)
    if t > (cols + _TRANSPOSE_TB - 1) // _TRANSPOSE_TB:
        t = <int>((cols + _TRANSPOSE_TB - 1) // _TRANSPOSE_TB)
    if t <= 1:
        _transpose_cols(dst, src, rows, cols, ld_src, 0, cols)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _transpose_part(dst, src, rows, cols, ld_src, part, t)


cdef void _transpose_part(float* dst, const float* src, Py_ssize_t rows, Py_ssize_t cols,
                          Py_ssize_t ld_src, Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t c0, c1
    chunk_bounds(part, parts, cols, _TRANSPOSE_TB, &c0, &c1)
    _transpose_cols(dst, src, rows, cols, ld_src, c0, c1)


# --- checked Python entry points (tests, benchmarks, weight packing at load) ---------

def gemm_packed_size(Py_ssize_t k, Py_ssize_t n):
    """Floats needed by the packed form of a (k, n) matrix for the current variant."""
    return gemm_packed_floats(k, n)


def gemm_packed_bias_size(Py_ssize_t n):
    return gemm_packed_bias_floats(n)


def gemm_pack_b(const float[:, ::1] b_kn, float[::1] out, int nthreads=1):
    """Pack b_kn (K, N) into `out` (gemm_packed_size(K, N) floats)."""
    cdef Py_ssize_t k = b_kn.shape[0], n = b_kn.shape[1]
    _require(k > 0 and n > 0, f"gemm_pack_b: empty matrix {k}x{n}")
    _require(out.shape[0] == gemm_packed_floats(k, n),
             f"gemm_pack_b: out has {out.shape[0]} floats, packing needs {gemm_packed_floats(k, n)}")
    with nogil:
        f32_gemm_pack_b(&out[0], &b_kn[0, 0], n, k, n, nthreads)


def gemm_pack_bias(const float[::1] bias, float[::1] out):
    cdef Py_ssize_t n = bias.shape[0]
    _require(n > 0 and out.shape[0] == gemm_packed_bias_floats(n),
             f"gemm_pack_bias: out has {out.shape[0]} floats, needs {gemm_packed_bias_floats(n)}")
    with nogil:
        f32_gemm_pack_bias(&out[0], &bias[0], n)


def gemm(const float[:, :] a_mk, const float[::1] b_packed, Py_ssize_t n, float[:, :] c_mn,
         bias_packed=None, int act=0, float alpha=0.0, float max_value=INFINITY,
         float threshold=0.0, int nthreads=1):
    """c = act(a @ B + bias) with B, bias packed by gemm_pack_b / gemm_pack_bias.

    a and c may be row-strided views (inner stride 1), as the planner uses them.
    nthreads: threads to split c over (1: serial; the result is the same).
    """
    cdef Activation a_ = _checked_activation(act, alpha, max_value, threshold)
    cdef Py_ssize_t m = a_mk.shape[0], k = a_mk.shape[1]
    cdef const float[::1] biasv
    cdef const float* biasp = NULL
    _require(m > 0 and k > 0 and n > 0, f"gemm: empty problem m={m} k={k} n={n}")
    _require(a_mk.strides[1] == 4 and c_mn.strides[1] == 4, "gemm: rows must be contiguous")
    _require((m == 1 or a_mk.strides[0] >= 4 * k) and (m == 1 or c_mn.strides[0] >= 4 * n),
             "gemm: rows must not overlap")
    _require(c_mn.shape[0] == m and c_mn.shape[1] == n,
             f"gemm: c is {c_mn.shape[0]}x{c_mn.shape[1]}, expected {m}x{n}")
    _require(b_packed.shape[0] == gemm_packed_floats(k, n),
             f"gemm: packed B has {b_packed.shape[0]} floats, expected {gemm_packed_floats(k, n)}"
             f" for k={k} n={n} (packed for another GEMM variant?)")
    # The micro-kernel writes C panel by panel while later panels still read A: an
    # output overlapping an input would be read after it was overwritten.
    _require(not _overlaps(&c_mn[0, 0], (m - 1) * c_mn.strides[0] + 4 * n,
                           &a_mk[0, 0], (m - 1) * a_mk.strides[0] + 4 * k),
             "gemm: c must not overlap a")
    if bias_packed is not None:
        biasv = bias_packed
        _require(biasv.shape[0] == gemm_packed_bias_floats(n), "gemm: packed bias size mismatch")
        biasp = &biasv[0]
    with nogil:
        f32_gemm_forward(&c_mn[0, 0], c_mn.strides[0] // 4, &a_mk[0, 0], a_mk.strides[0] // 4,
                         &b_packed[0], biasp, m, n, k, &a_, nthreads)


def gemm_acc(const float[:, :] a_mk, const float[::1] b_packed, Py_ssize_t n, float[:, :] c_mn,
             int nthreads=1):
    """c += a @ B with B packed by gemm_pack_b or gemm_pack_b_transposed (accumulates).

    a and c may be row-strided views (inner stride 1); c must not overlap a."""
    cdef Py_ssize_t m = a_mk.shape[0], k = a_mk.shape[1]
    _require(m > 0 and k > 0 and n > 0, f"gemm_acc: empty problem m={m} k={k} n={n}")
    _require(a_mk.strides[1] == 4 and c_mn.strides[1] == 4, "gemm_acc: rows must be contiguous")
    _require((m == 1 or a_mk.strides[0] >= 4 * k) and (m == 1 or c_mn.strides[0] >= 4 * n),
             "gemm_acc: rows must not overlap")
    _require(c_mn.shape[0] == m and c_mn.shape[1] == n,
             f"gemm_acc: c is {c_mn.shape[0]}x{c_mn.shape[1]}, expected {m}x{n}")
    _require(b_packed.shape[0] == gemm_packed_floats(k, n),
             f"gemm_acc: packed B has {b_packed.shape[0]} floats, expected {gemm_packed_floats(k, n)}")
    _require(not _overlaps(&c_mn[0, 0], (m - 1) * c_mn.strides[0] + 4 * n,
                           &a_mk[0, 0], (m - 1) * a_mk.strides[0] + 4 * k),
             "gemm_acc: c must not overlap a")
    with nogil:
        f32_gemm_forward_acc(&c_mn[0, 0], c_mn.strides[0] // 4, &a_mk[0, 0],
                             a_mk.strides[0] // 4, &b_packed[0], m, n, k, nthreads)


def gemm_pack_b_transposed(const float[:, :] src_nk, float[::1] out, int nthreads=1):
    """Pack B = src^T, src (N, K) (a row-strided view is fine), into `out`
    (gemm_packed_size(K, N) floats): the same packing gemm_pack_b gives for src.T."""
    cdef Py_ssize_t n = src_nk.shape[0], k = src_nk.shape[1]
    _require(k > 0 and n > 0, f"gemm_pack_b_transposed: empty matrix {n}x{k}")
    _require(src_nk.strides[1] == 4 and (n == 1 or src_nk.strides[0] >= 4 * k),
             "gemm_pack_b_transposed: src rows must be contiguous and not overlap")
    _require(out.shape[0] == gemm_packed_floats(k, n),
             f"gemm_pack_b_transposed: out has {out.shape[0]} floats, packing needs {gemm_packed_floats(k, n)}")
    with nogil:
        f32_gemm_pack_b_transposed(&out[0], &src_nk[0, 0], src_nk.strides[0] // 4, k, n,
                                   nthreads)


def transpose2d(const float[:, :] src, float[:, ::1] dst, int nthreads=1):
    """dst (cols, rows) = src^T for src (rows, cols), a row-strided view allowed; overwrites
    dst, which must not overlap src."""
    cdef Py_ssize_t rows = src.shape[0], cols = src.shape[1]
    _require(rows > 0 and cols > 0, f"transpose2d: empty matrix {rows}x{cols}")
    _require(src.strides[1] == 4 and (rows == 1 or src.strides[0] >= 4 * cols),
             "transpose2d: src rows must be contiguous and not overlap")
    _require(dst.shape[0] == cols and dst.shape[1] == rows,
             f"transpose2d: dst is {dst.shape[0]}x{dst.shape[1]}, expected {cols}x{rows}")
    _require(not _overlaps(&dst[0, 0], dst.nbytes, &src[0, 0],
                           (rows - 1) * src.strides[0] + 4 * cols), "transpose2d: dst overlaps src")
    with nogil:
        f32_transpose(&dst[0, 0], &src[0, 0], rows, cols, src.strides[0] // 4, nthreads)
