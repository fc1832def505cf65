# The elementwise activations only Keras 3 has: celu, hard_shrink, hard_tanh, soft_shrink,
# sparse_plus, sparse_sigmoid, squareplus, tanh_shrink (keras/src/backend/tensorflow/nn.py).
#
# act_scalar / _act_deriv / activation_backward (activations.pxi) hand these codes here.
# Finite inputs: Keras's function evaluated in double and rounded once, in a form that is
# exact where TF's float32 one cancels (squareplus for x << 0, tanh_shrink near 0), so we
# agree with TF to its round-off, which the parity tests bound.  Non-finite inputs give
# exactly what TF gives (tests/test_kernels_activations_k3.py records it): NaN propagates
# through hard_tanh, sparse_plus, sparse_sigmoid, squareplus, tanh_shrink and celu, while
# hard_shrink and soft_shrink map it to 0 (their tf.where tests are false); squareplus(-inf)
# is NaN (-inf + inf).  Where TF's float32 x * x overflows (|x| > 1.8e19) it returns inf
# for squareplus and we the true value: the one documented difference on finite inputs.
#
# Gradients as TF differentiates those ops: tf.where passes dy to the selected branch only
# (hard_shrink / soft_shrink: 1 where |x| > threshold, strictly; sparse_sigmoid: 0.5
# strictly inside (-1, 1), so 0.5 at NaN too); hard_tanh is minimum then maximum, whose
# gradients pass at ties (1 at x = +-1) and not at NaN; celu is maximum(x, 0) +
# alpha * expm1(minimum(x, 0) / alpha), both halves passing at 0, so celu'(0) = 2 (and 0 at
# NaN).  sparse_plus and squareplus have NaN gradients at NaN and +-inf (a zero times an
# infinite unselected-branch gradient in TF); elsewhere their derivatives are exact.
# The masks select dy rather than multiply, so a NaN dy there gives 0, as TF's Select.

from libc.math cimport isfinite


cdef inline double _tanh_shrink(double x) noexcept nogil:
    # x - tanh(x) cancels for small |x|: below 0.1 the Taylor series (next term < 4e-16
    # relative), above it double keeps >= 13 correct digits.
    cdef double x2
    if fabs(x) >= 0.1 or not isfinite(x):
        return x - tanh(x)
    x2 = x * x
    return x * x2 * (1.0 / 3 + x2 * (-2.0 / 15 + x2 * (17.0 / 315 + x2 * (
        -62.0 / 2835 + x2 * (1382.0 / 155925)))))


cdef inline double _act_k3(double x, const Activation* a) noexcept nogil:
    """f(x) for the codes ACT_CELU .. ACT_TANH_SHRINK (file comment)."""
    cdef int code = a.code
    cdef double t = a.threshold, r
    if code == ACT_CELU:
        if x > 0:
            return x
        if x <= 0:     # max(x, 0) + ...: +0 at x = -0, as TF
            return 0.0 + a.alpha * expm1(x / a.alpha)
        return x       # NaN
    elif code == ACT_HARD_SHRINK:
        return x if fabs(x) > t else 0.0
    elif code == ACT_HARD_TANH:
        return -1.0 if x < -1 else (1.0 if x > 1 else x)
    elif code == ACT_SOFT_SHRINK:
        return x - t if x > t else (x + t if x < -t else 0.0)
    elif code == ACT_SPARSE_PLUS:
        return 0.0 if x <= -1 else (0.25 * (x + 1) * (x + 1) if x < 1 else x)
    elif code == ACT_SPARSE_SIGMOID:
        return 0.0 if x <= -1 else (1.0 if x >= 1 else 0.5 * (x + 1))
    elif code == ACT_SQUAREPLUS:
        # (x + sqrt(x^2 + b)) / 2; for x < 0 as b / (2 (sqrt(x^2 + b) - x)), no cancellation.
        if x != x or x == -INFINITY:
            return NAN
        r = sqrt(x * x + a.alpha)
        return 0.5 * (x + r) if x >= 0 else 0.5 * a.alpha / (r - x)
    elif code == ACT_TANH_SHRINK:
        return _tanh_shrink(x)
    return x


cdef inline double _act_deriv_k3(double x, const Activation* a) noexcept nogil:
    """f'(x) as TF differentiates the Keras op (file comment), codes ACT_CELU ..."""
    cdef int code = a.code
    cdef double t = a.threshold, r
    if code == ACT_CELU:
        # d max(x, 0) (passes at x >= 0) + d alpha expm1(min(x, 0) / alpha) (x <= 0)
        return (1.0 if x >= 0 else 0.0) + (exp(x / a.alpha) if x <= 0 else 0.0)
    elif code == ACT_HARD_SHRINK:
        return 1.0 if fabs(x) > t else 0.0
    elif code == ACT_HARD_TANH:
        return 1.0 if -1 <= x <= 1 else 0.0
    elif code == ACT_SOFT_SHRINK:
        return 1.0 if (x > t or x < -t) else 0.0
    elif code == ACT_SPARSE_PLUS:
        if not isfinite(x):
            return NAN
        return 0.0 if x <= -1 else (0.5 * (x + 1) if x < 1 else 1.0)
    elif code == ACT_SPARSE_SIGMOID:
        return 0.0 if (x <= -1 or x >= 1) else 0.5
    elif code == ACT_SQUAREPLUS:
        # (1 + x / r) / 2, for x < 0 as b / (2 r (r - x)).
        if not isfinite(x):
            return NAN
        r = sqrt(x * x + a.alpha)
        return 0.5 * (1.0 + x / r) if x >= 0 else 0.5 * a.alpha / (r * (r - x))
    elif code == ACT_TANH_SHRINK:
        r = tanh(x)
        return r * r                                      # 1 - TanhGrad: tanh^2
    return 1.0


cdef inline bint _act_k3_is_mask(int code) noexcept nogil:
    """Gradients TF computes with Select: dx is dy or 0 (times a constant slope)."""
    return (code == ACT_HARD_SHRINK or code == ACT_HARD_TANH or code == ACT_SOFT_SHRINK
            or code == ACT_SPARSE_SIGMOID)


cdef void _activation_backward_k3(float* dx, const float* dy, const float* x, Py_ssize_t n,
                                  const Activation* a) noexcept nogil:
    """dx[i] = dy[i] * f'(x[i]) for the Keras 3 codes; OVERWRITES dx (may be dy or x).
    Masks select (0 where TF's Select passes nothing, even for a NaN dy); sparse_sigmoid's
    0.5 and the smooth derivatives multiply in double, rounded once."""
    cdef Py_ssize_t i
    cdef double d
    if _act_k3_is_mask(a.code):
        for i in range(n):
            d = _act_deriv_k3(x[i], a)
            dx[i] = <float>(dy[i] * d) if d != 0 else 0
    else:
        for i in range(n):
            dx[i] = <float>(dy[i] * _act_deriv_k3(x[i], a))


cdef void _vact_table_k3(const f32_vact_kernels* k) noexcept:
    """The Keras 3 codes with a vector kernel (set_activation_isa, activations.pxi): celu
    (float expm1) and the exact ones; sparse_plus, squareplus and tanh_shrink stay on
    _act_k3 (rare, and tanh_shrink / squareplus need their cancellation-free forms)."""
    _vact_table[<int>ACT_CELU] = k.celu
    _vact_table[<int>ACT_HARD_SHRINK] = k.hard_shrink
    _vact_table[<int>ACT_HARD_TANH] = k.hard_tanh
    _vact_table[<int>ACT_SOFT_SHRINK] = k.soft_shrink
    _vact_table[<int>ACT_SPARSE_SIGMOID] = k.sparse_sigmoid
