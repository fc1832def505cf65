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
# BatchNormalization in inference mode with trainable gamma / beta (training the final
# layers of a network whose statistics stay frozen; for inference it is folded into the
# preceding conv or run as channel_affine_forward): batchnorm_inference_forward /
# _backward over (rows, C), channels last, with the frozen mean and inv_std =
# rsqrt(moving_variance + epsilon) given by the caller.  The forward uses TF's
# tf.nn.batch_normalization order: inv = inv_std * gamma, y = x * inv + (beta - mean * inv).
# Non-goals: normalising over non-trailing axes, training-mode BatchNorm (batch statistics,
# moving-average updates).

from libc.math cimport sqrt

cdef enum:
    _BN_BLOCK = 256     # channels per block of the BatchNorm parameter gradients (4 KiB)


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


cdef void layernorm_forward(float* y, const float* x, Py_ssize_t rows, Py_ssize_t cols,
                            const float* gamma, const float* beta, float epsilon,
                            int mode) noexcept nogil:
    """Normalise each of `rows` rows of `cols` floats over the trailing axes (NormMode);
    overwrites y, which may be x.  gamma, beta: cols floats or NULL; beta is ignored in
    the two rms modes (Keras has none there).  cols >= 1."""
    cdef Py_ssize_t r, j
    cdef const float* xr
    cdef float* yr
    cdef double mean, var
    cdef float inv, m_hi, m_lo, s
    for r in range(rows):
        xr = x + r * cols
        yr = y + r * cols
        if mode == NORM_RMS:
            mean = 0.0
            var = _sum4(xr, cols, 0.0, True) / cols
        else:
            mean = _sum4(xr, cols, 0.0, False) / cols
            var = _sum4(xr, cols, mean, True) / cols
        inv = <float>(1.0 / sqrt(var + epsilon))
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


cdef void batchnorm_inference_forward(float* y, const float* x, Py_ssize_t rows, Py_ssize_t c,
                                      const float* mean, const float* inv_std,
                                      const float* gamma, const float* beta) noexcept nogil:
    """y = x * inv + (beta - mean * inv) with inv = inv_std * gamma, per channel of (rows, c):
    Keras BatchNormalization(training=False) in TF's float32 order.  OVERWRITES y, which
    may be x; gamma NULL means scale=False, beta NULL center=False."""
    cdef Py_ssize_t r, j
    cdef float inv, shift
    cdef float* yr
    cdef const float* xr
    for r in range(rows):
        yr = y + r * c
        xr = x + r * c
        for j in range(c):
            inv = inv_std[j] * gamma[j] if gamma != NULL else inv_std[j]
            shift = beta[j] - mean[j] * inv if beta != NULL else -(mean[j] * inv)
            yr[j] = xr[j] * inv + shift


cdef void _bn_param_grads(float* dgamma, float* dbeta, const float* x, const float* dy,
                          Py_ssize_t rows, Py_ssize_t c, const float* mean,
                          const float* inv_std) noexcept nogil:
    """dgamma[j] = inv_std[j] * sum_r dy * (x - mean), dbeta[j] = sum_r dy, in double over
    blocks of _BN_BLOCK channels (rows streamed in order); either output may be NULL."""
    cdef double sg[_BN_BLOCK]
    cdef double sb[_BN_BLOCK]
    cdef Py_ssize_t blk, c0, nc, r, j
    cdef const float* xr
    cdef const float* dyr
    for blk in range((c + _BN_BLOCK - 1) // _BN_BLOCK):
        c0 = blk * _BN_BLOCK
        nc = min(<Py_ssize_t>_BN_BLOCK, c - c0)
        for j in range(nc):
            sg[j] = 0.0
            sb[j] = 0.0
        for r in range(rows):
            xr = x + r * c + c0
            dyr = dy + r * c + c0
            for j in range(nc):
                sg[j] += <double>dyr[j] * (<double>xr[j] - mean[c0 + j])
                sb[j] += dyr[j]
        for j in range(nc):
            if dgamma != NULL:
                dgamma[c0 + j] = <float>(sg[j] * inv_std[c0 + j])
            if dbeta != NULL:
                dbeta[c0 + j] = <float>sb[j]


cdef void batchnorm_inference_backward(float* dx, float* dgamma, float* dbeta, const float* x,
                                       const float* dy, Py_ssize_t rows, Py_ssize_t c,
                                       const float* mean, const float* inv_std,
                                       const float* gamma) noexcept nogil:
    """Gradients of y = gamma * (x - mean) * inv_std + beta over (rows, c), channels last,
    with frozen statistics (BatchNormalization in inference mode):
    dgamma = sum_rows dy * (x - mean) * inv_std, dbeta = sum_rows dy, dx = dy * (inv_std *
    gamma) (the float product TF's batch_normalization forms).  OVERWRITES each output; any
    of dx, dgamma, dbeta may be NULL (not needed); gamma NULL means scale=False.  dx may be
    dy (the parameter gradients are taken before dx is written); x is used only for
    dgamma (NULL allowed when dgamma is)."""
    cdef Py_ssize_t r, j
    cdef float* dxr
    cdef const float* dyr
    if dgamma != NULL or dbeta != NULL:
        _bn_param_grads(dgamma, dbeta, x, dy, rows, c, mean, inv_std)
    if dx == NULL:
        return
    for r in range(rows):
        dxr = dx + r * c
        dyr = dy + r * c
        for j in range(c):
            dxr[j] = dyr[j] * (inv_std[j] * gamma[j] if gamma != NULL else inv_std[j])


# --- checked Python entry point ---------------------------------------------------------

def layernorm(const float[:, ::1] x, float[:, ::1] y, gamma=None, beta=None,
              float epsilon=1e-3, int mode=NORM_LAYER):
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
        layernorm_forward(&y[0, 0], &x[0, 0], rows, cols, gp, bp, epsilon, mode)


def batchnorm_inference(const float[:, ::1] x, const float[::1] mean, const float[::1] inv_std,
                        gamma, beta, float[:, ::1] y):
    """Keras BatchNormalization(training=False) over (rows, C) with the frozen mean and
    inv_std = rsqrt(moving_variance + epsilon); gamma / beta float32 (C,) or None.
    Overwrites y, which may be x."""
    cdef Py_ssize_t rows = x.shape[0], c = x.shape[1]
    cdef const float[::1] gv
    cdef const float[::1] bv
    cdef const float* gp = NULL
    cdef const float* bp = NULL
    _require(rows > 0 and c > 0, "batchnorm_inference: empty input")
    if (mean.shape[0] != c or inv_std.shape[0] != c or y.shape[0] != rows or y.shape[1] != c):
        raise KernelShapeError(f"batchnorm_inference: mean {mean.shape[0]}, inv_std "
                               f"{inv_std.shape[0]}, y {tuple(y.shape)[:2]} do not match x {(rows, c)}")
    if gamma is not None:
        gv = gamma
        _require(gv.shape[0] == c, "batchnorm_inference: gamma does not match C")
        gp = &gv[0]
    if beta is not None:
        bv = beta
        _require(bv.shape[0] == c, "batchnorm_inference: beta does not match C")
        bp = &bv[0]
    _require(&y[0, 0] == &x[0, 0] or not _overlap(&y[0, 0], y.nbytes, &x[0, 0], x.nbytes),
             "batchnorm_inference: y partially overlaps x")
    with nogil:
        batchnorm_inference_forward(&y[0, 0], &x[0, 0], rows, c, &mean[0], &inv_std[0], gp, bp)


def batchnorm_inference_grad(const float[:, ::1] x, const float[:, ::1] dy,
                             const float[::1] mean, const float[::1] inv_std, gamma, dx,
                             dgamma, dbeta):
    """Inference-mode BatchNormalization backward over (rows, C): dgamma, dbeta (C,) and dx
    (rows, C), each a float32 C-contiguous array or None; gamma None means scale=False.
    Overwrites each given output; dx may be dy itself."""
    cdef Py_ssize_t rows = x.shape[0], c = x.shape[1]
    cdef const float[::1] gv
    cdef const float* gp = NULL
    cdef _Span outs[2]
    cdef _Span ins[5]
    cdef _Span dxs
    cdef float* dxp
    cdef float* dgp
    cdef float* dbp
    cdef tuple in_names = ("x", "mean", "inv_std", "gamma", "dy")
    _require(rows > 0 and c > 0, "batchnorm_inference_grad: empty input")
    if dy.shape[0] != rows or dy.shape[1] != c or mean.shape[0] != c or inv_std.shape[0] != c:
        raise KernelShapeError(f"batchnorm_inference_grad: dy {tuple(dy.shape)[:2]}, mean "
                               f"{mean.shape[0]}, inv_std {inv_std.shape[0]} do not match x {(rows, c)}")
    ins[3] = _span(NULL, 0)
    if gamma is not None:
        gv = gamma
        if gv.shape[0] != c:
            raise KernelShapeError(f"batchnorm_inference_grad: gamma has {gv.shape[0]} values, C = {c}")
        gp = &gv[0]
        ins[3] = _span(gp, gv.nbytes)
    ins[0] = _span(&x[0, 0], x.nbytes)
    ins[1] = _span(&mean[0], mean.nbytes)
    ins[2] = _span(&inv_std[0], inv_std.nbytes)
    ins[4] = _span(&dy[0, 0], dy.nbytes)
    dgp = _optional_out(dgamma, (c,), "batchnorm_inference_grad: dgamma", &outs[0])
    dbp = _optional_out(dbeta, (c,), "batchnorm_inference_grad: dbeta", &outs[1])
    _require_disjoint(outs, 2, ("dgamma", "dbeta"), ins, 5, in_names, "batchnorm_inference_grad")
    dxp = _optional_out(dx, (rows, c), "batchnorm_inference_grad: dx", &dxs)
    if dxp != NULL:
        # dx may be dy itself (element-wise), but no other input nor a partial overlap.
        _require(dxp == &dy[0, 0] or not _overlap(dxp, dxs.nbytes, &dy[0, 0], dy.nbytes),
                 "batchnorm_inference_grad: dx partially overlaps dy")
        _require_disjoint(&dxs, 1, ("dx",), ins, 4, in_names, "batchnorm_inference_grad")
        _require_disjoint(&dxs, 1, ("dx",), outs, 2, ("dgamma", "dbeta"), "batchnorm_inference_grad")
    with nogil:
        batchnorm_inference_backward(dxp, dgp, dbp, &x[0, 0], &dy[0, 0], rows, c, &mean[0],
                                     &inv_std[0], gp)
