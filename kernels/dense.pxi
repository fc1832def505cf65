# Dense (fully connected) backward, and the weight-gradient helpers Conv2D's backward shares.
#
# The forward of a Dense layer is f32_gemm_forward (gemm.pxi): y (M, N) = act(x (M, K) @
# w (K, N) + b), with w packed for the variant.  Training keeps w in its plain Keras layout
# (K, N) row-major, so the backward derives both products from it on our own micro-kernels:
#   dw (K, N) = x^T @ dy   x is transposed one block of rows at a time into scratch (A of the
#                          GEMM), the same rows of dy are packed as B; the first block
#                          overwrites dw, later ones accumulate (f32_gemm_forward_acc).
#                          With N below one panel the roles swap (dw^T = dy^T @ x, then one
#                          transpose), see _wgrad_narrow;
#   dx (M, K) = dy @ w^T   w is packed transposed (f32_gemm_pack_b_transposed) into scratch,
#                          or, for a kernel larger than the batch's activations, dx^T =
#                          w @ dy^T on the unpacked kernel (_dense_dx_transposed);
#   db (N)    = column sums of dy, in double.
# Row blocks bound the scratch (_WGRAD_BUDGET floats) whatever the batch, and keep the GEMM's
# inner dimension long (up to _WGRAD_MAX_ROWS rows) so dw is re-read only a few times.
# The activation's gradient is not fused: the caller runs activation_backward on dy first.
# Threads: each step splits its outputs (transpose by destination rows, packing by panels,
# the GEMMs by tiles of dw or dx, column sums by column blocks), never the sum over rows:
# dw's rows are summed in the same order at any thread count, so the result is the same
# bits, and the scratch does not grow with threads.
# Non-goals: fusing the bias gradient into the packing pass.

cdef enum:
    _WGRAD_BUDGET = 1 << 19     # floats of scratch for one block of the weight gradient (2 MiB)
    _WGRAD_MAX_ROWS = 512       # rows per block; more gains nothing once dw traffic is amortised
    _COLSUM_BLOCK = 256         # columns per block of f32_column_sums (2 KiB of doubles)


cdef inline Py_ssize_t wgrad_block_rows(Py_ssize_t per_row, Py_ssize_t m) noexcept nogil:
    """Rows of one weight-gradient block when each row needs `per_row` floats of scratch:
    a multiple of 8 within the budget, at least 8 and at most _WGRAD_MAX_ROWS (or m)."""
    cdef Py_ssize_t rows = _WGRAD_BUDGET // (per_row if per_row > 0 else 1) // 8 * 8
    if rows < 8:
        rows = 8
    if rows > _WGRAD_MAX_ROWS:
        rows = _WGRAD_MAX_ROWS
    return rows if rows < m else m


cdef inline bint _wgrad_narrow(Py_ssize_t n) noexcept nogil:
    # Fewer gradient columns than one panel (a classifier head: 1280 -> 10 under NR = 32):
    # computing dw^T = dy^T @ x instead runs the GEMM K wide rather than filling n of NR
    # lanes; measured 1.9x faster on the 32x1280 -> 10 head (AVX-512), and the final
    # transpose of dw^T is only k * n floats.
    return n < _gemm.nr


cdef inline Py_ssize_t wgrad_row_floats(Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """Scratch floats per row of a weight-gradient block: its column of x^T and its packed
    row of dy, or (narrow) its column of dy^T and its packed row of x."""
    if _wgrad_narrow(n):
        return n + gemm_packed_floats(1, k)
    return k + gemm_packed_floats(1, n)


cdef inline Py_ssize_t wgrad_scratch_floats(Py_ssize_t rows, Py_ssize_t k,
                                            Py_ssize_t n) noexcept nogil:
    """Scratch of f32_wgrad_block for blocks of up to `rows` rows (narrow: plus dw^T)."""
    return rows * wgrad_row_floats(k, n) + (k * n if _wgrad_narrow(n) else 0)


cdef void f32_wgrad_block(float* dw_kn, const float* x_mk, Py_ssize_t ldx, const float* dy_mn,
                          Py_ssize_t ldy, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                          Py_ssize_t rows, bint first, bint last, float* scratch,
                          int nthreads) noexcept nogil:
    """dw (k, n) = x^T @ dy over one block of m <= rows rows (x rows of stride ldx, dy rows
    of stride ldy), summed over the blocks of a pass: the `first` block overwrites, later
    ones accumulate; dw is complete after the `last`.  scratch: wgrad_scratch_floats(rows,
    k, n) floats, kept intact by the caller for the whole pass (narrow: dw^T lives there)."""
    cdef Activation linear = make_activation(ACT_LINEAR, 0.0, INFINITY, 0.0)
    cdef float* dwt
    cdef float* packed
    cdef float* at
    if _wgrad_narrow(n):
        dwt = scratch                                       # dw^T (n, k)
        packed = dwt + k * n                                # x block as B (m, k)
        at = packed + gemm_packed_floats(rows, k)           # dy^T block (n, m)
        f32_transpose(at, dy_mn, m, n, ldy, nthreads)
        f32_gemm_pack_b(packed, x_mk, ldx, m, k, nthreads)
        if first:
            f32_gemm_forward(dwt, k, at, m, packed, NULL, n, k, m, &linear, nthreads)
        else:
            f32_gemm_forward_acc(dwt, k, at, m, packed, n, k, m, nthreads)
        if last:
            f32_transpose(dw_kn, dwt, n, k, k, nthreads)
        return
    packed = scratch                                        # dy block as B (m, n)
    at = packed + gemm_packed_floats(rows, n)               # x^T block (k, m)
    f32_transpose(at, x_mk, m, k, ldx, nthreads)
    f32_gemm_pack_b(packed, dy_mn, ldy, m, n, nthreads)
    if first:
        f32_gemm_forward(dw_kn, n, at, m, packed, NULL, k, n, m, &linear, nthreads)
    else:
        f32_gemm_forward_acc(dw_kn, n, at, m, packed, k, n, m, nthreads)


cdef void _column_sums_block(float* s_n, const float* a_mn, Py_ssize_t m, Py_ssize_t n,
                             Py_ssize_t blk) noexcept nogil:
    cdef double acc[_COLSUM_BLOCK]
    cdef Py_ssize_t c0 = blk * _COLSUM_BLOCK, nc, r, j
    cdef const float* row
    nc = min(<Py_ssize_t>_COLSUM_BLOCK, n - c0)
    for j in range(nc):
        acc[j] = 0.0
    for r in range(m):
        row = a_mn + r * n + c0
        for j in range(nc):
            acc[j] += row[j]
    for j in range(nc):
        s_n[c0 + j] = <float>acc[j]


cdef inline void f32_column_sums(float* s_n, const float* a_mn, Py_ssize_t m,
                                 Py_ssize_t n) noexcept nogil:
    """f32_column_sums_threads on one thread (the signature dwconv2d.pxi calls)."""
    f32_column_sums_threads(s_n, a_mn, m, n, 1)


cdef void f32_column_sums_threads(float* s_n, const float* a_mn, Py_ssize_t m, Py_ssize_t n,
                                  int nthreads) noexcept nogil:
    """s[j] = sum over rows of a[:, j] for a (m, n) contiguous; overwrites s.  Accumulated
    in double (a bias gradient sums up to batch * pixels terms), rows streamed in order.
    Threads take whole blocks of _COLSUM_BLOCK columns (each column summed by one)."""
    cdef Py_ssize_t blocks = (n + _COLSUM_BLOCK - 1) // _COLSUM_BLOCK, blk
    cdef int t = par_threads(m * n, PAR_MIN_FLOATS, nthreads)
    if t > blocks:
        t = <int>blocks
    if t <= 1:
        for blk in range(blocks):
            _column_sums_block(s_n, a_mn, m, n, blk)
        return
    for blk in prange(blocks, nogil=True, num_threads=t, schedule="static", chunksize=1):
        _column_sums_block(s_n, a_mn, m, n, blk)


cdef inline bint _dense_dx_transposed(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    # dx = dy @ w^T packs the whole kernel every step, a pass over memory as large as the
    # layer.  When the kernel outweighs the batch's dy and dx (1280 -> 1000 at batch 32:
    # 1.3M floats against 73k) and the batch fills at least half a panel, dx^T = w @ dy^T
    # reads the kernel as it is (the GEMM's A) and packs only dy: measured 1.5x on that
    # layer (AVX-512), the 208 us pack of w^T being 40% of the unswapped time.
    return k * n > m * (k + n) and 2 * m >= _gemm.nr


cdef inline Py_ssize_t dense_backward_scratch_floats(Py_ssize_t m, Py_ssize_t k,
                                                     Py_ssize_t n) noexcept nogil:
    """Scratch of one dense_backward call: the larger of the dw phase (f32_wgrad_block's)
    and the dx phase (w^T packed, or dy^T packed and dx^T), which run one after the other."""
    cdef Py_ssize_t rows = wgrad_block_rows(wgrad_row_floats(k, n), m)
    cdef Py_ssize_t wgrad = wgrad_scratch_floats(rows, k, n)
    cdef Py_ssize_t xgrad = gemm_packed_floats(n, k)
    if _dense_dx_transposed(m, k, n):
        xgrad = gemm_packed_floats(n, m) + k * m
    return wgrad if wgrad > xgrad else xgrad


cdef void dense_backward(float* dx_mk, float* dw_kn, float* db_n, const float* x_mk,
                         const float* w_kn, const float* dy_mn, Py_ssize_t m, Py_ssize_t k,
                         Py_ssize_t n, float* scratch, int nthreads) noexcept nogil:
    """Gradients of y = x @ w + b given dy (M, N) (after the activation's backward):
    dw (K, N) = x^T @ dy, db (N) = column sums of dy, dx (M, K) = dy @ w^T.  OVERWRITES each
    output; any of dx, dw, db may be NULL (not needed).  x (M, K) and w (K, N): plain
    row-major, w in its Keras layout.  scratch: dense_backward_scratch_floats(m, k, n)
    floats.  No output may overlap an input or another output."""
    cdef Py_ssize_t rows = wgrad_block_rows(wgrad_row_floats(k, n), m)
    cdef Py_ssize_t blocks = (m + rows - 1) // rows, blk, r0
    cdef Activation linear = make_activation(ACT_LINEAR, 0.0, INFINITY, 0.0)
    if db_n != NULL:
        f32_column_sums_threads(db_n, dy_mn, m, n, nthreads)
    if dw_kn != NULL:
        for blk in range(blocks):
            r0 = blk * rows
            f32_wgrad_block(dw_kn, x_mk + r0 * k, k, dy_mn + r0 * n, n, min(rows, m - r0), k, n,
                            rows, blk == 0, blk == blocks - 1, scratch, nthreads)
    if dx_mk != NULL and _dense_dx_transposed(m, k, n):
        # B = dy^T (n, m), then dx^T (k, m) = w @ B in scratch, transposed into dx.
        f32_gemm_pack_b_transposed(scratch, dy_mn, n, n, m, nthreads)
        f32_gemm_forward(scratch + gemm_packed_floats(n, m), m, w_kn, n, scratch, NULL, k, m, n,
                         &linear, nthreads)
        f32_transpose(dx_mk, scratch + gemm_packed_floats(n, m), k, m, m, nthreads)
    elif dx_mk != NULL:
        f32_gemm_pack_b_transposed(scratch, w_kn, n, n, k, nthreads)  # B = w^T (n, k)
        f32_gemm_forward(dx_mk, k, dy_mn, n, scratch, NULL, m, k, n, &linear, nthreads)


# --- checked Python entry points ---------------------------------------------------------

def dense_grad_scratch_size(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n):
    """Floats of scratch dense_grad needs for x (m, k), w (k, n) under the current GEMM."""
    return dense_backward_scratch_floats(m, k, n)


def dense_grad(const float[:, ::1] x_mk, const float[:, ::1] w_kn, const float[:, ::1] dy_mn,
               dx_mk, dw_kn, db_n, float[::1] scratch, int nthreads=1):
    """dw = x^T @ dy, db = column sums of dy, dx = dy @ w^T; overwrites each given output.

    dx_mk (M, K), dw_kn (K, N), db_n (N,): float32 C-contiguous arrays, or None when that
    gradient is not needed.  scratch: at least dense_grad_scratch_size(M, K, N) floats."""
    cdef Py_ssize_t m = x_mk.shape[0], k = x_mk.shape[1], n = w_kn.shape[1]
    cdef _Span outs[4]
    cdef _Span ins[3]
    cdef float* dxp
    cdef float* dwp
    cdef float* dbp
    _require(m > 0 and k > 0 and n > 0, "dense_grad: empty problem")
    if w_kn.shape[0] != k or dy_mn.shape[0] != m or dy_mn.shape[1] != n:
        raise KernelShapeError(f"dense_grad: x {tuple(x_mk.shape)[:2]}, w {tuple(w_kn.shape)[:2]} "
                               f"and dy {tuple(dy_mn.shape)[:2]} do not fit (M, K) (K, N) (M, N)")
    if scratch.shape[0] < dense_backward_scratch_floats(m, k, n):
        raise KernelShapeError(f"dense_grad: scratch has {scratch.shape[0]} floats, needs "
                               f"{dense_backward_scratch_floats(m, k, n)}")
    dxp = _optional_out(dx_mk, (m, k), "dense_grad: dx", &outs[0])
    dwp = _optional_out(dw_kn, (k, n), "dense_grad: dw", &outs[1])
    dbp = _optional_out(db_n, (n,), "dense_grad: db", &outs[2])
    outs[3] = _span(&scratch[0], scratch.nbytes)
    ins[0] = _span(&x_mk[0, 0], x_mk.nbytes)
    ins[1] = _span(&w_kn[0, 0], w_kn.nbytes)
    ins[2] = _span(&dy_mn[0, 0], dy_mn.nbytes)
    _require_disjoint(outs, 4, ("dx", "dw", "db", "scratch"), ins, 3, ("x", "w", "dy"),
                      "dense_grad")
    with nogil:
        dense_backward(dxp, dwp, dbp, &x_mk[0, 0], &w_kn[0, 0], &dy_mn[0, 0], m, k, n,
                       &scratch[0], nthreads)
