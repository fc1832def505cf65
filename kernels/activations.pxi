# Elementwise activations with Keras's exact definitions.
#
# Every function here matches Keras 3 (keras/src/activations/activations.py) unless the
# code says Keras 2; the comments name the formula Keras uses where it is not the
# textbook one.  Math is done in double and rounded once: Keras/TF compute in float32
# with their own approximations, so we agree to round-off, which the parity tests bound.
# y may alias x (activations run in place in the plan).

from libc.math cimport exp, expm1, log1p, tanh, erf, fabs, sqrt, fmin, fmax

cdef double _SELU_ALPHA = 1.6732632423543772848170429916717
cdef double _SELU_SCALE = 1.0507009873554804934193349852946
cdef double _SQRT_2_OVER_PI = 0.7978845608028654


cdef inline double _sigmoid(double x) noexcept nogil:
    # Branch on sign so exp never overflows.
    cdef double e
    if x >= 0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


cdef inline double _softplus(double x) noexcept nogil:
    return fmax(x, 0.0) + log1p(exp(-fabs(x)))


cdef inline double _relu_general(double x, const Activation* a) noexcept nogil:
    # keras.activations.relu(x, negative_slope, max_value, threshold), same branch order
    # as Keras's ReLU.static_call: threshold gate (or relu), clip, minus the negative part.
    cdef double v
    if a.threshold != 0:
        v = x if x > a.threshold else 0.0
    else:
        v = fmax(x, 0.0)
    if a.max_value < INFINITY:
        v = fmin(fmax(v, 0.0), a.max_value)
    if a.alpha != 0:
        v -= a.alpha * fmax(a.threshold - x, 0.0)
    return v


cdef inline float act_scalar(float xf, const Activation* a) noexcept nogil:
    cdef double x = xf
    cdef int code = a.code
    if code == ACT_LINEAR:
        return xf
    elif code == ACT_RELU:
        return <float>_relu_general(x, a)
    elif code == ACT_SIGMOID:
        return <float>_sigmoid(x)
    elif code == ACT_HARD_SIGMOID:
        return <float>(fmin(fmax(x + 3.0, 0.0), 6.0) / 6.0)
    elif code == ACT_HARD_SIGMOID_K2:
        return <float>fmin(fmax(0.2 * x + 0.5, 0.0), 1.0)
    elif code == ACT_HARD_SWISH:
        return <float>(x * fmin(fmax(x + 3.0, 0.0), 6.0) / 6.0)
    elif code == ACT_SWISH:
        return <float>(x * _sigmoid(x))
    elif code == ACT_GELU:
        return <float>(0.5 * x * (1.0 + erf(x / sqrt(2.0))))
    elif code == ACT_GELU_TANH:
        return <float>(0.5 * x * (1.0 + tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))))
    elif code == ACT_ELU:
        return <float>(x if x > 0 else a.alpha * expm1(x))
    elif code == ACT_SELU:
        return <float>(_SELU_SCALE * (x if x > 0 else _SELU_ALPHA * expm1(x)))
    elif code == ACT_SOFTPLUS:
        return <float>_softplus(x)
    elif code == ACT_SOFTSIGN:
        return <float>(x / (1.0 + fabs(x)))
    elif code == ACT_LEAKY_RELU:
        return <float>(x if x >= 0 else a.alpha * x)
    elif code == ACT_TANH:
        return <float>tanh(x)
    elif code == ACT_EXPONENTIAL:
        return <float>exp(x)
    elif code == ACT_MISH:
        return <float>(x * tanh(_softplus(x)))
    elif code == ACT_LOG_SIGMOID:
        return <float>(-_softplus(-x))
    return xf


cdef void activation_forward(float* y, const float* x, Py_ssize_t n,
                             const Activation* a) noexcept nogil:
    """y[i] = act(x[i]) for i < n; y may alias x."""
    cdef Py_ssize_t i
    cdef float lo, hi, v
    if a.code == ACT_LINEAR:
        if y != x:
            for i in range(n):
                y[i] = x[i]
    elif act_is_clamp(a):
        # The common case (relu, relu6).  Comparisons, not fminf/fmaxf: without
        # -ffast-math GCC keeps those as two libm calls per element (measured 30x slower).
        act_clamp_bounds(a, &lo, &hi)
        for i in range(n):
            v = x[i]
            v = v if v > lo else lo
            y[i] = v if v < hi else hi
    else:
        for i in range(n):
            y[i] = act_scalar(x[i], a)


def activation(const float[::1] x, float[::1] y, int code, float alpha=0.0,
               float max_value=INFINITY, float threshold=0.0):
    """Checked wrapper: y = act(x).  x and y may be the same buffer."""
    cdef Activation a = _checked_activation(code, alpha, max_value, threshold)
    _require(x.shape[0] == y.shape[0], f"activation: x has {x.shape[0]} elements, y {y.shape[0]}")
    if x.shape[0] == 0:
        return
    with nogil:
        activation_forward(&y[0], &x[0], x.shape[0], &a)
