# BatchNormalization over (rows, C), channels last (rows = N*H*W), Keras semantics.
#
# Two pairs, each forward beside its backward:
#   * inference mode (batchnorm_inference_forward / _backward): the layer normalises with
#     its moving statistics (Keras training=False, or a BatchNormalization whose gamma and
#     beta train while its statistics stay frozen).  It takes the Keras variables as stored,
#     moving = [moving_mean (C), moving_variance (C)], plus epsilon, and evaluates
#     tf.nn.batch_normalization's float32 order: inv = rsqrt(variance + epsilon) * gamma,
#     y = x * inv + (beta - mean * inv).  rsqrt is taken in double and rounded once (TF's
#     is an approximation within ~2 ulp of that).  For plain inference the layer is folded
#     into the preceding conv or run as channel_affine_forward instead.
#   * training mode (batchnorm_train_forward / _backward): batch statistics, the moving
#     statistics updated in place, and the full gradient (mean and variance depend on x).
#     The batch mean and the biased variance are accumulated in double, two passes (mean,
#     then squared deviations) so a large mean does not cancel the variance; the output is
#     (x - mean) * (inv_std * gamma) + beta with the mean subtracted as two floats (hi + lo),
#     as layernorm_forward does.
# Statistics and parameter gradients are reduced over rows for a block of _NORM_BLOCK
# channels (normalization.pxi) at a time: per-channel state lives on the stack (a few KiB), the rows are
# streamed in order, and no kernel needs scratch.
# Threads: every kernel splits the channels (ranges of 16 or more, all rows each), so a
# channel's statistics and gradient sums are the same bits at any thread count.
# Non-goals: normalising over a non-channel axis, batch renormalization, masks,
# synchronized (multi-replica) statistics.

from libc.math cimport sqrt

cdef extern from "f32_optimizer_updates.h" nogil:
    void ec_moving_average_update(float* moving, const float* value, size_t n, float keep,
                                  float take)

cdef inline int _bn_threads(Py_ssize_t rows, Py_ssize_t c, int nthreads) noexcept nogil:
    """Threads for a batch-norm kernel: each takes a range of channels (16 or more) over
    all rows, so every channel's sums run in row order whatever the count."""
    cdef int t = par_threads(rows * c, PAR_MIN_FLOATS, nthreads)
    return <int>(c // 16) if t > c // 16 else t


cdef inline float _bn_inv_std(double variance, float epsilon) noexcept nogil:
    """float32(1 / sqrt(variance + epsilon)), the square root taken in double."""
    return <float>(1.0 / sqrt(variance + epsilon))


cdef void _bn_block_sums(double* sdx, double* sd, double* sx, const float* x, const float* dy,
                         Py_ssize_t rows, Py_ssize_t c, Py_ssize_t nc,
                         const float* mean) noexcept nogil:
    """Over nc channels (x, dy and mean already point at the block's first channel; rows
    have stride c), in double: sd = sum_r dy and, when x is not NULL, sdx = sum_r dy * (x -
    mean), sx = sum_r (x - mean).  Independent per channel, so the inner loop vectorises."""
    cdef Py_ssize_t r, j
    cdef const float* xr
    cdef const float* dyr
    cdef double d
    for j in range(nc):
        sdx[j] = 0.0
        sd[j] = 0.0
        sx[j] = 0.0
    if x == NULL:
        for r in range(rows):
            dyr = dy + r * c
            for j in range(nc):
                sd[j] += dyr[j]
        return
    for r in range(rows):
        xr = x + r * c
        dyr = dy + r * c
        for j in range(nc):
            d = <double>xr[j] - mean[j]
            sdx[j] += dyr[j] * d
            sd[j] += dyr[j]
            sx[j] += d


cdef void _batchnorm_inference_forward_part(float* y, const float* x, Py_ssize_t rows,
                                            Py_ssize_t c, const float* gamma, const float* beta,
                                            const float* moving, float epsilon, Py_ssize_t part,
                                            Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t cl, ch
    chunk_bounds(part, parts, c, 16, &cl, &ch)
    if ch > cl:
        _batchnorm_inference_forward_range(y, x, rows, c, gamma, beta, moving, epsilon, cl, ch)


cdef void batchnorm_inference_forward(float* y, const float* x, Py_ssize_t rows, Py_ssize_t c,
                                      const float* gamma, const float* beta, const float* moving,
                                      float epsilon, int nthreads) noexcept nogil:
    """Keras BatchNormalization(training=False) over (rows, c) in TF's float32 order:
    inv = rsqrt(moving_variance + epsilon) * gamma, y = x * inv + (beta - moving_mean * inv).
    moving: [moving_mean (c), moving_variance (c)]; gamma NULL means scale=False, beta NULL
    center=False.  OVERWRITES y, which may be x."""
    cdef Py_ssize_t part
    cdef int t = _bn_threads(rows, c, nthreads)
    if t <= 1:
        _batchnorm_inference_forward_range(y, x, rows, c, gamma, beta, moving, epsilon, 0, c)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _batchnorm_inference_forward_part(y, x, rows, c, gamma, beta, moving, epsilon, part, t)


cdef void _batchnorm_inference_forward_range(float* y, const float* x, Py_ssize_t rows,
                                             Py_ssize_t c, const float* gamma, const float* beta,
                                             const float* moving, float epsilon, Py_ssize_t cl,
                                             Py_ssize_t ch) noexcept nogil:
    # batchnorm_inference_forward on channels cl..ch only (rows of stride c).
    cdef float scale[_NORM_BLOCK]
    cdef float shift[_NORM_BLOCK]
    cdef Py_ssize_t blk, c0, nc, r, j
    cdef float inv
    cdef float* yr
    cdef const float* xr
    for blk in range((ch - cl + _NORM_BLOCK - 1) // _NORM_BLOCK):
        c0 = cl + blk * _NORM_BLOCK
        nc = min(<Py_ssize_t>_NORM_BLOCK, ch - c0)
        for j in range(nc):
            inv = _bn_inv_std(moving[c + c0 + j], epsilon)
            if gamma != NULL:
                inv = inv * gamma[c0 + j]
            scale[j] = inv
            shift[j] = beta[c0 + j] - moving[c0 + j] * inv if beta != NULL else -(moving[c0 + j] * inv)
        for r in range(rows):
            yr = y + r * c + c0
            xr = x + r * c + c0
            for j in range(nc):
                yr[j] = xr[j] * scale[j] + shift[j]


cdef void _batchnorm_inference_backward_part(float* dx, float* dgamma, float* dbeta,
                                             const float* x, const float* dy, Py_ssize_t rows,
                                             Py_ssize_t c, const float* gamma,
                                             const float* moving, float epsilon, Py_ssize_t part,
                                             Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t cl, ch
    chunk_bounds(part, parts, c, 16, &cl, &ch)
    if ch > cl:
        _batchnorm_inference_backward_range(dx, dgamma, dbeta, x, dy, rows, c, gamma, moving,
                                            epsilon, cl, ch)


cdef void batchnorm_inference_backward(float* dx, float* dgamma, float* dbeta, const float* x,
                                       const float* dy, Py_ssize_t rows, Py_ssize_t c,
                                       const float* gamma, const float* moving, float epsilon,
                                       int nthreads) noexcept nogil:
    """Gradients of batchnorm_inference_forward (statistics frozen, so y is affine in x):
    with inv_std = rsqrt(moving_variance + epsilon), dgamma = sum_rows dy * (x - moving_mean)
    * inv_std, dbeta = sum_rows dy, dx = dy * (inv_std * gamma) (the float product TF's
    batch_normalization forms).  OVERWRITES each output; any of dx, dgamma, dbeta may be NULL
    (not needed); gamma NULL means scale=False.  dx may be dy (a block's parameter gradients
    are taken before its dx is written); x is read only for dgamma (NULL allowed without)."""
    cdef Py_ssize_t part
    cdef int t = _bn_threads(rows, c, nthreads)
    if t <= 1:
        _batchnorm_inference_backward_range(dx, dgamma, dbeta, x, dy, rows, c, gamma, moving,
                                            epsilon, 0, c)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _batchnorm_inference_backward_part(dx, dgamma, dbeta, x, dy, rows, c, gamma, moving,
                                           epsilon, part, t)


cdef void _batchnorm_inference_backward_range(float* dx, float* dgamma, float* dbeta,
                                              const float* x, const float* dy, Py_ssize_t rows,
                                              Py_ssize_t c, const float* gamma,
                                              const float* moving, float epsilon, Py_ssize_t cl,
                                              Py_ssize_t ch) noexcept nogil:
    # batchnorm_inference_backward on channels cl..ch only (rows of stride c).
    cdef double sdx[_NORM_BLOCK]
    cdef double sd[_NORM_BLOCK]
    cdef double sx[_NORM_BLOCK]
    cdef float inv[_NORM_BLOCK]
    cdef Py_ssize_t blk, c0, nc, r, j
    cdef float* dxr
    cdef const float* dyr
    for blk in range((ch - cl + _NORM_BLOCK - 1) // _NORM_BLOCK):
        c0 = cl + blk * _NORM_BLOCK
        nc = min(<Py_ssize_t>_NORM_BLOCK, ch - c0)
        for j in range(nc):
            inv[j] = _bn_inv_std(moving[c + c0 + j], epsilon)
        if dgamma != NULL or dbeta != NULL:
            _bn_block_sums(sdx, sd, sx, x + c0 if dgamma != NULL else NULL, dy + c0, rows, c,
                           nc, moving + c0)
            for j in range(nc):
                if dgamma != NULL:
                    dgamma[c0 + j] = <float>(sdx[j] * inv[j])
                if dbeta != NULL:
                    dbeta[c0 + j] = <float>sd[j]
        if dx == NULL:
            continue
        if gamma != NULL:
            for j in range(nc):
                inv[j] = inv[j] * gamma[c0 + j]
        for r in range(rows):
            dxr = dx + r * c + c0
            dyr = dy + r * c + c0
            for j in range(nc):
                dxr[j] = dyr[j] * inv[j]


cdef void _bn_block_moments(double* mean, double* var, const float* x, Py_ssize_t rows,
                            Py_ssize_t c, Py_ssize_t nc) noexcept nogil:
    """Batch mean and biased (population) variance of nc channels (x points at the block's
    first channel, rows have stride c), in double: the mean, then the squared deviations
    from it, so a mean much larger than the spread does not cancel the variance."""
    cdef Py_ssize_t r, j
    cdef const float* xr
    cdef double d
    for j in range(nc):
        mean[j] = 0.0
        var[j] = 0.0
    for r in range(rows):
        xr = x + r * c
        for j in range(nc):
            mean[j] += xr[j]
    for j in range(nc):
        mean[j] = mean[j] / rows
    for r in range(rows):
        xr = x + r * c
        for j in range(nc):
            d = xr[j] - mean[j]
            var[j] += d * d
    for j in range(nc):
        var[j] = var[j] / rows


cdef void _batchnorm_train_forward_part(float* y, float* saved, const float* x, Py_ssize_t rows,
                                        Py_ssize_t c, const float* gamma, const float* beta,
                                        float* moving, float keep, float take, float epsilon,
                                        int bessel, Py_ssize_t part,
                                        Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t cl, ch
    chunk_bounds(part, parts, c, 16, &cl, &ch)
    if ch > cl:
        _batchnorm_train_forward_range(y, saved, x, rows, c, gamma, beta, moving, keep, take,
                                       epsilon, bessel, cl, ch)


cdef void batchnorm_train_forward(float* y, float* saved, const float* x, Py_ssize_t rows,
                                  Py_ssize_t c, const float* gamma, const float* beta,
                                  float* moving, float keep, float take, float epsilon,
                                  int bessel, int nthreads) noexcept nogil:
    """Keras BatchNormalization(training=True) over (rows, c): batch mean and biased variance
    per channel, inv_std = 1 / sqrt(var + epsilon), y = (x - mean) * (inv_std * gamma) + beta
    (gamma NULL: 1, beta NULL: 0).  OVERWRITES y, which may be x (a block's statistics are
    complete before its y is written), and saved (2c floats) = [batch mean as float (c),
    inv_std (c)] for batchnorm_train_backward.  UPDATES moving = [moving_mean (c),
    moving_variance (c)] in place as Keras 3 does in float32:
        moving_mean = moving_mean * momentum + mean * (1 - momentum)
        moving_variance = moving_variance * momentum + var_u * (1 - momentum)
    with keep = float32(momentum) and take = float32(1 - momentum), the difference taken in
    double by the caller (Keras subtracts its Python float), var_u = var (bessel = 0: Keras 3, tf.keras on 2-D inputs) or
    var * rows / (rows - 1) (bessel = 1: TF's fused batch norm, tf.keras on 4-D inputs;
    rows = 1 keeps var, as TF does).  A NaN in a channel makes its y, saved and moving
    statistics NaN.  Not bit for bit with TF: the batch statistics (ours are the double
    two-pass values rounded once, TF's float32 reductions differ by a few ulp); tf.keras's
    update forms (moving - (moving - value) * (1 - momentum) on 2-D inputs, (1 - f) *
    moving + (f * rows / (rows - 1)) * var with f = float32(1 - momentum) in the fused op)."""
    cdef Py_ssize_t part
    cdef int t = _bn_threads(rows, c, nthreads)
    if t <= 1:
        _batchnorm_train_forward_range(y, saved, x, rows, c, gamma, beta, moving, keep, take,
                                       epsilon, bessel, 0, c)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _batchnorm_train_forward_part(y, saved, x, rows, c, gamma, beta, moving, keep, take,
                                      epsilon, bessel, part, t)


cdef void _batchnorm_train_forward_range(float* y, float* saved, const float* x, Py_ssize_t rows,
                                         Py_ssize_t c, const float* gamma, const float* beta,
                                         float* moving, float keep, float take, float epsilon,
                                         int bessel, Py_ssize_t cl, Py_ssize_t ch) noexcept nogil:
    # batchnorm_train_forward on channels cl..ch only (rows of stride c).
    cdef double mean[_NORM_BLOCK]
    cdef double var[_NORM_BLOCK]
    cdef float hi[_NORM_BLOCK]
    cdef float lo[_NORM_BLOCK]
    cdef float scale[_NORM_BLOCK]
    cdef float var_u[_NORM_BLOCK]
    cdef double unbias = rows / (rows - 1.0) if bessel and rows > 1 else 1.0
    cdef Py_ssize_t blk, c0, nc, r, j
    cdef float inv
    cdef float* yr
    cdef const float* xr
    for blk in range((ch - cl + _NORM_BLOCK - 1) // _NORM_BLOCK):
        c0 = cl + blk * _NORM_BLOCK
        nc = min(<Py_ssize_t>_NORM_BLOCK, ch - c0)
        _bn_block_moments(mean, var, x + c0, rows, c, nc)
        for j in range(nc):
            inv = _bn_inv_std(var[j], epsilon)
            hi[j] = <float>mean[j]
            lo[j] = <float>(mean[j] - hi[j])
            scale[j] = inv * gamma[c0 + j] if gamma != NULL else inv
            var_u[j] = <float>(var[j] * unbias)
            saved[c + c0 + j] = inv
        for j in range(nc):
            saved[c0 + j] = hi[j]
        ec_moving_average_update(moving + c0, hi, nc, keep, take)
        ec_moving_average_update(moving + c + c0, var_u, nc, keep, take)
        for r in range(rows):
            yr = y + r * c + c0
            xr = x + r * c + c0
            if beta != NULL:
                for j in range(nc):
                    yr[j] = ((xr[j] - hi[j]) - lo[j]) * scale[j] + beta[c0 + j]
            else:
                for j in range(nc):
                    yr[j] = ((xr[j] - hi[j]) - lo[j]) * scale[j]


cdef void _batchnorm_train_backward_part(float* dx, float* dgamma, float* dbeta, const float* x,
                                         const float* dy, Py_ssize_t rows, Py_ssize_t c,
                                         const float* gamma, const float* saved, Py_ssize_t part,
                                         Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t cl, ch
    chunk_bounds(part, parts, c, 16, &cl, &ch)
    if ch > cl:
        _batchnorm_train_backward_range(dx, dgamma, dbeta, x, dy, rows, c, gamma, saved, cl, ch)


cdef void batchnorm_train_backward(float* dx, float* dgamma, float* dbeta, const float* x,
                                   const float* dy, Py_ssize_t rows, Py_ssize_t c,
                                   const float* gamma, const float* saved,
                                   int nthreads) noexcept nogil:
    """Gradients of batchnorm_train_forward, the batch mean and variance depending on x:
    with xhat = (x - mean) * inv_std, dbeta = sum_rows dy, dgamma = sum_rows dy * xhat,
    dx = gamma * inv_std / rows * (rows * dy - dbeta - xhat * dgamma).  saved: the forward's
    [mean (c), inv_std (c)] for this x.  The sums are in double, and the mean's float
    rounding is undone in the same pass (sum_rows (x - mean) / rows, ~0 but for that
    rounding, is the residual), so a large mean costs no accuracy.  OVERWRITES each output;
    any of dx, dgamma, dbeta may be NULL; gamma NULL means scale=False; dx may be dy (a
    block's sums are taken before its dx is written)."""
    cdef Py_ssize_t part
    cdef int t = _bn_threads(rows, c, nthreads)
    if t <= 1:
        _batchnorm_train_backward_range(dx, dgamma, dbeta, x, dy, rows, c, gamma, saved, 0, c)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _batchnorm_train_backward_part(dx, dgamma, dbeta, x, dy, rows, c, gamma, saved, part, t)


cdef void _batchnorm_train_backward_range(float* dx, float* dgamma, float* dbeta, const float* x,
                                          const float* dy, Py_ssize_t rows, Py_ssize_t c,
                                          const float* gamma, const float* saved, Py_ssize_t cl,
                                          Py_ssize_t ch) noexcept nogil:
    # batchnorm_train_backward on channels cl..ch only (rows of stride c).
    cdef double sdx[_NORM_BLOCK]
    cdef double sd[_NORM_BLOCK]
    cdef double sx[_NORM_BLOCK]
    cdef float lo[_NORM_BLOCK]
    cdef float k[_NORM_BLOCK]
    cdef float mb[_NORM_BLOCK]
    cdef float mg[_NORM_BLOCK]
    cdef Py_ssize_t blk, c0, nc, r, j
    cdef const float* mean = saved
    cdef const float* inv = saved + c
    cdef double resid, dg
    cdef float xhat
    cdef float* dxr
    cdef const float* xr
    cdef const float* dyr
    for blk in range((ch - cl + _NORM_BLOCK - 1) // _NORM_BLOCK):
        c0 = cl + blk * _NORM_BLOCK
        nc = min(<Py_ssize_t>_NORM_BLOCK, ch - c0)
        _bn_block_sums(sdx, sd, sx, x + c0, dy + c0, rows, c, nc, mean + c0)
        for j in range(nc):
            resid = sx[j] / rows
            dg = (sdx[j] - resid * sd[j]) * inv[c0 + j]
            if dgamma != NULL:
                dgamma[c0 + j] = <float>dg
            if dbeta != NULL:
                dbeta[c0 + j] = <float>sd[j]
            lo[j] = <float>resid
            k[j] = inv[c0 + j] * gamma[c0 + j] if gamma != NULL else inv[c0 + j]
            mb[j] = <float>(sd[j] / rows)
            mg[j] = <float>(dg / rows)
        if dx == NULL:
            continue
        for r in range(rows):
            dxr = dx + r * c + c0
            xr = x + r * c + c0
            dyr = dy + r * c + c0
            for j in range(nc):
                xhat = ((xr[j] - mean[c0 + j]) - lo[j]) * inv[c0 + j]
                dxr[j] = k[j] * ((dyr[j] - mb[j]) - xhat * mg[j])


# --- checked Python entry points ----------------------------------------------------------

cdef void _check_forward_aliasing(str name, const float[:, ::1] x, float[:, ::1] y,
                                  _Span* outs, int n_out, tuple out_names, _Span* params,
                                  int n_params, tuple param_names) except *:
    """y is x or disjoint from it; the outputs (y, then state buffers) overlap no input."""
    cdef _Span ys = _span(&y[0, 0], y.nbytes)
    cdef _Span xs = _span(&x[0, 0], x.nbytes)
    _require(&y[0, 0] == &x[0, 0] or not _overlaps(&y[0, 0], y.nbytes, &x[0, 0], x.nbytes),
             f"{name}: y partially overlaps x")
    _require_disjoint(&ys, 1, ("y",), params, n_params, param_names, name)
    _require_disjoint(outs, n_out, out_names, params, n_params, param_names, name)
    _require_disjoint(outs, n_out, out_names, &xs, 1, ("x",), name)
    _require_disjoint(outs, n_out, out_names, &ys, 1, ("y",), name)


def batchnorm_inference(const float[:, ::1] x, const float[::1] moving, gamma, beta,
                        float[:, ::1] y, float epsilon=1e-3, int nthreads=1):
    """Keras BatchNormalization(training=False) over (rows, C) with the layer's moving
    statistics, moving = [moving_mean (C), moving_variance (C)] float32; gamma / beta
    float32 (C,) or None.  Overwrites y, which may be x."""
    cdef Py_ssize_t rows = x.shape[0], c = x.shape[1]
    cdef _Span params[3]
    cdef const float* gp
    cdef const float* bp
    _require(rows > 0 and c > 0, "batchnorm_inference: empty input")
    if moving.shape[0] != 2 * c or y.shape[0] != rows or y.shape[1] != c:
        raise KernelShapeError(f"batchnorm_inference: moving {moving.shape[0]}, y "
                               f"{tuple(y.shape)[:2]} do not match x {(rows, c)}")
    _require(epsilon >= 0, f"batchnorm_inference: negative epsilon {epsilon}")
    gp = _optional_in(gamma, c, "batchnorm_inference: gamma", &params[0])
    bp = _optional_in(beta, c, "batchnorm_inference: beta", &params[1])
    params[2] = _span(&moving[0], moving.nbytes)
    _check_forward_aliasing("batchnorm_inference", x, y, NULL, 0, (), params, 3,
                            ("gamma", "beta", "moving"))
    with nogil:
        batchnorm_inference_forward(&y[0, 0], &x[0, 0], rows, c, gp, bp, &moving[0], epsilon,
                                    nthreads)


def batchnorm_train(const float[:, ::1] x, float[::1] moving, gamma, beta, float[:, ::1] y,
                    float[::1] saved, double momentum=0.99, float epsilon=1e-3,
                    bint bessel=False, int nthreads=1):
    """Keras BatchNormalization(training=True) over (rows, C): y from the batch statistics,
    saved = [batch mean (C), inv_std (C)] for batchnorm_train_grad, and the moving
    statistics moving = [moving_mean (C), moving_variance (C)] updated in place with
    momentum (a Python float, as Keras's; see batchnorm_train_forward for bessel).
    gamma / beta float32 (C,) or None.  Overwrites y, which may be x, and saved."""
    cdef Py_ssize_t rows = x.shape[0], c = x.shape[1]
    cdef _Span params[2]
    cdef _Span outs[2]
    cdef const float* gp
    cdef const float* bp
    _require(rows > 0 and c > 0, "batchnorm_train: empty input")
    if (moving.shape[0] != 2 * c or saved.shape[0] != 2 * c or y.shape[0] != rows
            or y.shape[1] != c):
        raise KernelShapeError(f"batchnorm_train: moving {moving.shape[0]}, saved "
                               f"{saved.shape[0]}, y {tuple(y.shape)[:2]} do not match x "
                               f"{(rows, c)}")
    _require(epsilon >= 0, f"batchnorm_train: negative epsilon {epsilon}")
    _require(0 <= momentum <= 1, f"batchnorm_train: momentum {momentum} outside [0, 1]")
    gp = _optional_in(gamma, c, "batchnorm_train: gamma", &params[0])
    bp = _optional_in(beta, c, "batchnorm_train: beta", &params[1])
    outs[0] = _span(&saved[0], saved.nbytes)
    outs[1] = _span(&moving[0], moving.nbytes)
    _check_forward_aliasing("batchnorm_train", x, y, outs, 2, ("saved", "moving"), params, 2,
                            ("gamma", "beta"))
    with nogil:
        batchnorm_train_forward(&y[0, 0], &saved[0], &x[0, 0], rows, c, gp, bp, &moving[0],
                                <float>momentum, <float>(1.0 - momentum), epsilon, bessel,
                                nthreads)


_BN_INFERENCE_GRAD = _grad_names("batchnorm_inference_grad")
_BN_TRAIN_GRAD = _grad_names("batchnorm_train_grad")


def batchnorm_inference_grad(const float[:, ::1] x, const float[:, ::1] dy,
                             const float[::1] moving, gamma, dx, dgamma, dbeta,
                             float epsilon=1e-3, int nthreads=1):
    """Inference-mode BatchNormalization backward over (rows, C) with the moving statistics
    moving = [moving_mean (C), moving_variance (C)]: dgamma, dbeta (C,) and dx (rows, C),
    each a float32 C-contiguous array or None; gamma None means scale=False.  Overwrites
    each given output; dx may be dy itself."""
    cdef _NormGrad g
    _require(epsilon >= 0, f"batchnorm_inference_grad: negative epsilon {epsilon}")
    g = _norm_grad_args(_BN_INFERENCE_GRAD, x, dy, moving, gamma, dx, dgamma, dbeta)
    with nogil:
        batchnorm_inference_backward(g.dx, g.dgamma, g.dbeta, &x[0, 0], &dy[0, 0], x.shape[0],
                                     x.shape[1], g.gamma, g.stats, epsilon, nthreads)


def batchnorm_train_grad(const float[:, ::1] x, const float[:, ::1] dy, const float[::1] saved,
                         gamma, dx, dgamma, dbeta, int nthreads=1):
    """Training-mode BatchNormalization backward over (rows, C): saved is what
    batchnorm_train wrote for this x ([batch mean (C), inv_std (C)]); dgamma, dbeta (C,) and
    dx (rows, C), each a float32 C-contiguous array or None; gamma None means scale=False.
    Overwrites each given output; dx may be dy itself."""
    cdef _NormGrad g = _norm_grad_args(_BN_TRAIN_GRAD, x, dy, saved, gamma, dx, dgamma, dbeta)
    with nogil:
        batchnorm_train_backward(g.dx, g.dgamma, g.dbeta, &x[0, 0], &dy[0, 0], x.shape[0],
                                 x.shape[1], g.gamma, g.stats, nthreads)
