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
# Non-goals: normalising over non-trailing axes, BatchNorm (folded into the preceding conv,
# or run as channel_affine_forward).

from libc.math cimport sqrt

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
