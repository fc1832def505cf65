# LayerNormalization over the trailing axes, Keras 3 semantics.
#
# Keras 3 (keras/src/ops/nn.py, _layer_normalization) with the TensorFlow backend:
#   mean, var = tf.nn.moments(x, axes)    # var = mean((x - mean)^2), the population variance
#   inv = rsqrt(var + epsilon) * gamma
#   y = x * inv + (beta - mean * inv)
# and with rms_scaling=True (deprecated in Keras, kept for old files):
#   y = x * rsqrt(var(x) + epsilon) * gamma
# where var is still the *centred* variance (Keras's own warning: it "incorrectly scales the
# input by the variance, not the root mean square") and there is no beta (Keras creates none).
# Statistics are accumulated in double, two passes (mean, then squared deviations) so a
# large mean does not cancel the variance.  The output uses (x - mean) * inv + beta, the same
# formula with the mean subtracted first: for |mean| >> std, Keras's x * inv - mean * inv
# cancels and loses |mean| / std ulps, the rearranged form does not.  The mean is subtracted
# as two floats (hi + lo, together ~48 bits) so the loop stays float-wide and vectorised:
# rounding it to one float would shift the whole row by up to half an ulp of the mean.
# RMSNormalization (Keras 3) is the third mode: y = x * rsqrt(mean(x^2) + epsilon) * scale,
# the uncentred mean square.
#
# layernorm_backward is the gradient of all three modes (with the statistics' dependence on
# x), from the same row statistics recomputed from x: no saved buffer.  Its per-column
# sums (dgamma, dbeta) run in double over blocks of _NORM_BLOCK columns, as BatchNorm's do
# (batchnorm.pxi, which also uses the shared argument checks at the end of this file).
# NaN: a NaN in a row makes that row's statistics, y and dx NaN, and dgamma NaN (every
# column sums that row); a NaN dy its row of dx and its column of dgamma and dbeta, as
# TF's autodiff of Keras's formulas (tests/test_kernels_nan.py records it).
# Non-goals: normalising over non-trailing axes; BatchNormalization is in batchnorm.pxi.

from libc.math cimport sqrt

cdef enum:
    # Columns (channels) per block of a reduction over rows kept per column: the parameter
    # gradients, BatchNorm's statistics.  A few double arrays of it live on the stack.
    _NORM_BLOCK = 256


cdef enum NormMode:
    NORM_LAYER = 0          # LayerNormalization
    NORM_LAYER_RMS = 1      # LayerNormalization(rms_scaling=True): centred variance, no beta
    NORM_RMS = 2            # RMSNormalization: mean of squares

NORM_MODES = {"layer": NORM_LAYER, "layer_rms_scaling": NORM_LAYER_RMS, "rms": NORM_RMS}


cdef inline double _sum4(const float* x, Py_ssize_t n, double shift, bint square) noexcept nogil:
    """sum(x - shift) or sum((x - shift)^2) in double, four independent chains so the
    loop is not bound by the latency of one addsd chain."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, d0, d1, d2, d3
    cdef Py_ssize_t q, i
    for q in range(n // 4):
        i = 4 * q
        d0 = x[i] - shift
        d1 = x[i + 1] - shift
        d2 = x[i + 2] - shift
        d3 = x[i + 3] - shift
        if square:
            d0 = d0 * d0
            d1 = d1 * d1
            d2 = d2 * d2
            d3 = d3 * d3
        s0 += d0
        s1 += d1
        s2 += d2
        s3 += d3
    for i in range(n // 4 * 4, n):
        d0 = x[i] - shift
        s0 += d0 * d0 if square else d0
    return (s0 + s1) + (s2 + s3)


cdef inline float _row_inv_std(const float* xr, Py_ssize_t cols, float epsilon, int mode,
                               double* mean) noexcept nogil:
    """One row's statistics: *mean (0 in NORM_RMS) and float32(1 / sqrt(var + epsilon)),
    var the centred population variance, or the mean square in NORM_RMS."""
    cdef double var
    if mode == NORM_RMS:
        mean[0] = 0.0
        var = _sum4(xr, cols, 0.0, True) / cols
    else:
        mean[0] = _sum4(xr, cols, 0.0, False) / cols
        var = _sum4(xr, cols, mean[0], True) / cols
    return <float>(1.0 / sqrt(var + epsilon))


cdef void _layernorm_part(float* y, const float* x, Py_ssize_t rows, Py_ssize_t cols,
                          const float* gamma, const float* beta, float epsilon, int mode,
                          Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t r0, r1
    chunk_bounds(part, parts, rows, 1, &r0, &r1)
    if r1 > r0:
        _layernorm_rows(y + r0 * cols, x + r0 * cols, r1 - r0, cols, gamma, beta, epsilon, mode)


cdef void layernorm_forward(float* y, const float* x, Py_ssize_t rows, Py_ssize_t cols,
                            const float* gamma, const float* beta, float epsilon, int mode,
                            int nthreads) noexcept nogil:
    """Normalise each of `rows` rows of `cols` floats over the trailing axes (NormMode);
    overwrites y, which may be x.  gamma, beta: cols floats or NULL; beta is ignored in
    the two rms modes (Keras has none there).  cols >= 1.  Threads split the rows."""
    cdef Py_ssize_t part
    cdef int t = par_threads(rows * cols, PAR_MIN_FLOATS // 2, nthreads)
    if t > rows:
        t = <int>rows
    if t <= 1:
        _layernorm_rows(y, x, rows, cols, gamma, beta, epsilon, mode)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _layernorm_part(y, x, rows, cols, gamma, beta, epsilon, mode, part, t)


cdef void _layernorm_rows(float* y, const float* x, Py_ssize_t rows, Py_ssize_t cols,
                          const float* gamma, const float* beta, float epsilon,
                          int mode) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef const float* xr
    cdef float* yr
    cdef double mean
    cdef float inv, m_hi, m_lo, s
    for r in range(rows):
        xr = x + r * cols
        yr = y + r * cols
        inv = _row_inv_std(xr, cols, epsilon, mode, &mean)
        m_hi = <float>mean
        m_lo = <float>(mean - m_hi)
        if mode != NORM_LAYER:
            for j in range(cols):
                s = inv * gamma[j] if gamma != NULL else inv
                yr[j] = xr[j] * s
        else:
            for j in range(cols):
                s = inv * gamma[j] if gamma != NULL else inv
                yr[j] = ((xr[j] - m_hi) - m_lo) * s + (beta[j] if beta != NULL else 0)


cdef void _layernorm_row_dx(float* dxr, const float* xr, const float* dyr, Py_ssize_t cols,
                            const float* gamma, int mode, double mean, float inv) noexcept nogil:
    """dx of one row.  With g = gamma * dy, xc = (x - mean) * inv (mean = 0 in NORM_RMS) and
    s = the shift y subtracts (the mean in NORM_LAYER, else 0):
        dx = inv * (g - a - xc * b),  a = mean(g) in NORM_LAYER else 0,
                                      b = inv * sum(g * (x - s)) / cols
    (d inv / dx = -inv^3 (x - mean) / cols in every mode; only NORM_LAYER's y depends on
    the mean).  The sums are in double and read the whole row before dx is written, so dx
    may be dy."""
    cdef Py_ssize_t j
    cdef double sg = 0.0, sgx = 0.0, g
    cdef float a, b, m_hi = <float>mean, m_lo = <float>(mean - m_hi), xc, gf
    for j in range(cols):
        g = dyr[j] * gamma[j] if gamma != NULL else dyr[j]
        sg += g
        sgx += g * (xr[j] - mean)
    if mode == NORM_LAYER_RMS:
        sgx += mean * sg            # y = x * inv * gamma uses x itself, not x - mean
    a = <float>(sg / cols) if mode == NORM_LAYER else 0.0
    b = <float>(inv * sgx / cols)
    for j in range(cols):
        xc = ((xr[j] - m_hi) - m_lo) * inv
        gf = dyr[j] * gamma[j] if gamma != NULL else dyr[j]
        dxr[j] = inv * ((gf - a) - xc * b)


cdef void _layernorm_param_grads(float* dgamma, float* dbeta, float* dx, const float* x,
                                 const float* dy, Py_ssize_t rows, Py_ssize_t cols,
                                 const float* gamma, float epsilon, int mode) noexcept nogil:
    """dgamma = sum_rows dy * (x - s) * inv, dbeta = sum_rows dy (s: the row mean in
    NORM_LAYER, else 0), in double over blocks of _NORM_BLOCK columns; a row's statistics
    are recomputed per block (no scratch).  When the columns fit one block and dx is not
    NULL it also writes dx, row by row after that row's sums (dx may be dy)."""
    cdef double sg[_NORM_BLOCK]
    cdef double sb[_NORM_BLOCK]
    cdef Py_ssize_t blk, c0, nc, r, j
    cdef const float* xr
    cdef const float* dyr
    cdef double mean, s
    cdef float inv
    cdef bint fused = dx != NULL and cols <= _NORM_BLOCK
    for blk in range((cols + _NORM_BLOCK - 1) // _NORM_BLOCK):
        c0 = blk * _NORM_BLOCK
        nc = min(<Py_ssize_t>_NORM_BLOCK, cols - c0)
        for j in range(nc):
            sg[j] = 0.0
            sb[j] = 0.0
        for r in range(rows):
            xr = x + r * cols
            dyr = dy + r * cols
            inv = _row_inv_std(xr, cols, epsilon, mode, &mean)
            s = mean if mode == NORM_LAYER else 0.0
            for j in range(nc):
                sg[j] += dyr[c0 + j] * ((xr[c0 + j] - s) * inv)
                sb[j] += dyr[c0 + j]
            if fused:
                _layernorm_row_dx(dx + r * cols, xr, dyr, cols, gamma, mode, mean, inv)
        for j in range(nc):
            if dgamma != NULL:
                dgamma[c0 + j] = <float>sg[j]
            if dbeta != NULL:
                dbeta[c0 + j] = <float>sb[j]


cdef void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* x,
                             const float* dy, Py_ssize_t rows, Py_ssize_t cols,
                             const float* gamma, float epsilon, int mode,
                             int nthreads) noexcept nogil:
    """Gradients of layernorm_forward (same NormMode, epsilon, gamma) over rows of cols
    floats, the row statistics recomputed from x: dgamma, dbeta per column summed over
    rows, dx per row (see _layernorm_row_dx), as TF's autodiff of Keras 3's formulas gives
    them.  OVERWRITES each output; any of dx, dgamma, dbeta may be NULL (not needed); dbeta
    must be NULL in the rms modes (no beta); gamma NULL means scale=False.  dx may be dy
    (every sum reading dy is taken before that part of dx is written).  Threads: the dx
    rows are split when dx is the only output or cols > _NORM_BLOCK; the parameter sums
    (and the dx fused with them) stay on one thread."""
    cdef Py_ssize_t part
    cdef int t
    if dgamma != NULL or dbeta != NULL:
        _layernorm_param_grads(dgamma, dbeta, dx, x, dy, rows, cols, gamma, epsilon, mode)
        if cols <= _NORM_BLOCK:
            return          # dx (if any) was written with the sums
    if dx == NULL:
        return
    t = par_threads(rows * cols, PAR_MIN_FLOATS // 2, nthreads)
    if t > rows:
        t = <int>rows
    if t <= 1:
        _layernorm_dx_rows(dx, x, dy, cols, gamma, epsilon, mode, 0, rows)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _layernorm_dx_part(dx, x, dy, rows, cols, gamma, epsilon, mode, part, t)


cdef void _layernorm_dx_rows(float* dx, const float* x, const float* dy, Py_ssize_t cols,
                             const float* gamma, float epsilon, int mode, Py_ssize_t r0,
                             Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t r
    cdef double mean
    cdef float inv
    for r in range(r0, r1):
        inv = _row_inv_std(x + r * cols, cols, epsilon, mode, &mean)
        _layernorm_row_dx(dx + r * cols, x + r * cols, dy + r * cols, cols, gamma, mode, mean,
                          inv)


cdef void _layernorm_dx_part(float* dx, const float* x, const float* dy, Py_ssize_t rows,
                             Py_ssize_t cols, const float* gamma, float epsilon, int mode,
                             Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t r0, r1
    chunk_bounds(part, parts, rows, 1, &r0, &r1)
    _layernorm_dx_rows(dx, x, dy, cols, gamma, epsilon, mode, r0, r1)


# --- checked Python entry points --------------------------------------------------------

def layernorm(const float[:, ::1] x, float[:, ::1] y, gamma=None, beta=None,
              float epsilon=1e-3, int mode=NORM_LAYER, int nthreads=1):
    """Keras LayerNormalization of x viewed as (rows, cols), cols = the normalised trailing
    axes; overwrites y, which may be x.  gamma/beta: cols floats or None."""
    cdef Py_ssize_t rows = x.shape[0], cols = x.shape[1]
    cdef const float[::1] gv
    cdef const float[::1] bv
    cdef const float* gp = NULL
    cdef const float* bp = NULL
    _require(rows > 0 and cols > 0, f"layernorm: empty input {tuple(x.shape)[:2]}")
    _require(y.shape[0] == rows and y.shape[1] == cols,
             f"layernorm: y is {tuple(y.shape)[:2]}, expected {(rows, cols)}")
    _require(&y[0, 0] == &x[0, 0] or not _overlap(&y[0, 0], y.nbytes, &x[0, 0], x.nbytes),
             "layernorm: y partially overlaps x")
    _require(epsilon >= 0, f"layernorm: negative epsilon {epsilon}")
    _require(mode in (NORM_LAYER, NORM_LAYER_RMS, NORM_RMS), f"layernorm: unknown mode {mode}")
    _require(not (mode != NORM_LAYER and beta is not None),
             "layernorm: the rms modes have no beta (Keras creates none)")
    if gamma is not None:
        gv = gamma
        _require(gv.shape[0] == cols, f"layernorm: gamma has {gv.shape[0]} values, cols = {cols}")
        gp = &gv[0]
    if beta is not None:
        bv = beta
        _require(bv.shape[0] == cols, f"layernorm: beta has {bv.shape[0]} values, cols = {cols}")
        bp = &bv[0]
    with nogil:
        layernorm_forward(&y[0, 0], &x[0, 0], rows, cols, gp, bp, epsilon, mode, nthreads)


cdef const float* _optional_in(object buf, Py_ssize_t n, str what, _Span* span) except? NULL:
    """Pointer to an optional float32 (n,) input (None: NULL); writes its range to *span."""
    cdef const float[::1] v
    span[0] = _span(NULL, 0)
    if buf is None:
        return NULL
    v = buf
    if v.shape[0] != n:
        raise KernelShapeError(f"{what} has {v.shape[0]} values, expected {n}")
    span[0] = _span(&v[0], v.nbytes)
    return &v[0]


cdef struct _NormGrad:
    float* dx
    float* dgamma
    float* dbeta
    const float* gamma
    const float* stats


cdef tuple _grad_names(str name):
    """The messages' prefixes of a backward wrapper, formatted once at import."""
    return (name, f"{name}: dx", f"{name}: dgamma", f"{name}: dbeta", f"{name}: gamma")


cdef _NormGrad _norm_grad_args(tuple names, const float[:, ::1] x, const float[:, ::1] dy,
                               object stats, object gamma, object dx, object dgamma,
                               object dbeta) except *:
    """The checks every normalisation backward wrapper shares, over x (rows, n) with its
    per-column parameters: dy matches x; stats (2n floats, the kernel's statistics) unless
    None; optional gamma (n,); optional outputs dx (rows, n), dgamma and dbeta (n,), none
    overlapping an input or each other, except that dx may be dy itself."""
    cdef str name = names[0]
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    cdef const float[::1] sv
    cdef _NormGrad g
    cdef _Span ins[4]
    cdef _Span outs[2]
    cdef _Span dxs
    cdef tuple in_names = ("x", "stats", "gamma", "dy")
    _require(rows > 0 and n > 0, f"{name}: empty input")
    if dy.shape[0] != rows or dy.shape[1] != n:
        raise KernelShapeError(f"{name}: dy {tuple(dy.shape)[:2]} does not match x {(rows, n)}")
    g.stats = NULL
    ins[1] = _span(NULL, 0)
    if stats is not None:
        sv = stats
        if sv.shape[0] != 2 * n:
            raise KernelShapeError(f"{name}: statistics have {sv.shape[0]} values, expected {2 * n}")
        g.stats = &sv[0]
        ins[1] = _span(g.stats, sv.nbytes)
    g.gamma = _optional_in(gamma, n, names[4], &ins[2])
    ins[0] = _span(&x[0, 0], x.nbytes)
    ins[3] = _span(&dy[0, 0], dy.nbytes)
    g.dgamma = _optional_out(dgamma, (n,), names[2], &outs[0])
    g.dbeta = _optional_out(dbeta, (n,), names[3], &outs[1])
    _require_disjoint(outs, 2, ("dgamma", "dbeta"), ins, 4, in_names, name)
    g.dx = _optional_out(dx, (rows, n), names[1], &dxs)
    if g.dx != NULL:
        # dx may be dy itself (each element is read before it is written), nothing else.
        _require(g.dx == &dy[0, 0] or not _overlaps(g.dx, dxs.nbytes, &dy[0, 0], dy.nbytes),
                 f"{name}: dx partially overlaps dy")
        _require_disjoint(&dxs, 1, ("dx",), ins, 3, in_names, name)
        _require_disjoint(&dxs, 1, ("dx",), outs, 2, ("dgamma", "dbeta"), name)
    return g


_LAYERNORM_GRAD = _grad_names("layernorm_grad")


def layernorm_grad(const float[:, ::1] x, const float[:, ::1] dy, gamma, dx, dgamma, dbeta,
                   float epsilon=1e-3, int mode=NORM_LAYER, int nthreads=1):
    """Backward of layernorm(x, ..., epsilon, mode) over (rows, cols): dgamma, dbeta (cols,)
    and dx (rows, cols), each a float32 C-contiguous array or None (dbeta must be None in
    the rms modes, which have no beta); gamma (cols,) or None.  Overwrites each given
    output; dx may be dy itself."""
    cdef _NormGrad g
    _require(epsilon >= 0, f"layernorm_grad: negative epsilon {epsilon}")
    _require(mode in (NORM_LAYER, NORM_LAYER_RMS, NORM_RMS), f"layernorm_grad: unknown mode {mode}")
    _require(not (mode != NORM_LAYER and dbeta is not None),
             "layernorm_grad: the rms modes have no beta (Keras creates none)")
    g = _norm_grad_args(_LAYERNORM_GRAD, x, dy, None, gamma, dx, dgamma, dbeta)
    with nogil:
        layernorm_backward(g.dx, g.dgamma, g.dbeta, &x[0, 0], &dy[0, 0], x.shape[0], x.shape[1],
                           g.gamma, epsilon, mode, nthreads)
