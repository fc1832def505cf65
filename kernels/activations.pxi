# Elementwise activations with Keras's exact definitions.
#
# Every function here matches Keras 3 (keras/src/activations/activations.py) unless the
# code says Keras 2; the comments name the formula Keras uses where it is not the
# textbook one.  y may alias x (activations run in place in the plan).
#
# Two forward paths.  act_scalar is the reference and fallback: double + libm, rounded
# once (Keras/TF compute in float32 with their own approximations, so we agree to
# round-off, which the parity tests bound); it is what activation_forward_scalar runs and
# what the backward recomputes y with.  activation_forward runs the float32 vector
# kernels of f32_vector_math.h (NEON / SSE / AVX2 / AVX-512, chosen once per process like
# the GEMM micro-kernels) for every code that has one, act_scalar for the others (relu
# with a threshold or slope, sparse_plus, squareplus, tanh_shrink).  Vector error bounds,
# measured over every finite float32 (bench/measure_activations.py, asserted per ISA by
# tests/test_kernels_activations_vector.py), in ulp of the exact result:
#   sigmoid 2, swish 3, tanh 2, elu / selu / celu 2, softplus / log_sigmoid 3, mish 4,
#   exponential 1, gelu 5, gelu_tanh 3 + 2|u| ulp for x < 0 (u its tanh argument: the
#   rounding of u is amplified by the function's own condition number there; Keras's
#   float32 form loses everything beyond x < -5); exact (bit for bit act_scalar):
#   hard_sigmoid (Keras 3 and 2), hard_swish, softsign, leaky_relu, hard_tanh, hard_shrink,
#   soft_shrink, sparse_sigmoid.  NaN and +-inf give act_scalar's results exactly; kinks
#   are act_scalar's; denormal inputs and outputs are computed, never flushed.
#
# Threads: activation_forward(..., nthreads) cuts n into one contiguous range per thread
# (whole cache lines, >= _ACT_MIN_CHUNK floats, threads.pxi's convention); lane-wise
# kernels make the result bit for bit the same at every thread count.
#
# activation_backward: dx = dy * f'(x) with f' as TensorFlow differentiates Keras's ops, so
# the kinks follow TF rather than calculus: relu'(0) = 0 (ReluGrad tests y > 0); relu6 and
# relu(max_value=6) pass 0 < x < 6 (Relu6Grad); relu with another max_value is relu then
# clip_by_value, whose gradient passes at both bounds (x <= max passes); leaky_relu'(0) =
# alpha (LeakyReluGrad tests x > 0); hard_sigmoid / hard_swish differentiate relu6(x + 3)
# / 6 with x + 3 rounded in float32 (so hard_sigmoid'(2.9999998) = 0, as in TF); elu'(0) =
# alpha, selu'(0) = scale.  Where TF's gradient reads the forward output (sigmoid, tanh,
# exponential, elu, selu) so does this, from y when the caller has it.
#
# NaN, as TF 2.21 / Keras 3.15 (tests/test_kernels_nan.py records them): every forward
# passes a NaN x through as NaN (relu, relu6, the clip of relu(max_value), hard_sigmoid
# keep it: clamps compare `v < lo` then `v > hi`, both false for NaN, never fmin/fmax,
# which drop it), except relu with a threshold and no slope, whose where(x > threshold,
# x, 0) gives 0.  Backward, a NaN dy stays NaN where TF multiplies by a mask (ReluGrad,
# Relu6Grad, hence relu, relu6 and hard_sigmoid everywhere, and every relu with a
# negative slope) and becomes 0 where TF selects (tf.where, clip_by_value's gradient:
# relu's threshold and max_value bounds, Keras 2 hard_sigmoid); a NaN x gets the mask's
# 0 in the relu family, and the select's "else" branch in EluGrad / SeluGrad (their
# activations < 0 test is false for NaN): elu'(NaN) = alpha, selu'(NaN) = scale.

from libc.math cimport exp, expm1, log1p, tanh, erf, fabs, sqrt, fmax
from cython.parallel cimport prange

cdef extern from "f32_vector_math.h" nogil:
    ctypedef struct f32_vact_params:
        float alpha
        float threshold
    ctypedef void (*f32_vact_fn)(size_t n, const float* x, float* y,
                                 const f32_vact_params* params) noexcept
    ctypedef struct f32_vact_kernels:
        f32_vact_fn sigmoid, swish, tanh, gelu, gelu_tanh, elu, selu, celu, softplus
        f32_vact_fn log_sigmoid, mish, exp, leaky_relu, hard_tanh, hard_shrink, soft_shrink
        f32_vact_fn sparse_sigmoid, hard_sigmoid, hard_sigmoid_k2, hard_swish, softsign
    ctypedef struct f32_vact_config:
        const char* name
        const f32_vact_kernels* kernels
    const f32_vact_config* f32_vact_configs
    int f32_vact_config_count
    int f32_vact_config_supported(int index)

cdef double _SELU_ALPHA = 1.6732632423543772848170429916717
cdef double _SELU_SCALE = 1.0507009873554804934193349852946
cdef double _SQRT_2_OVER_PI = 0.7978845608028654
cdef float _K2_PASS_LO = -2.5                      # Keras 2 hard_sigmoid: see _act_deriv
cdef float _K2_PASS_HI = 2.5000002384185791015625


cdef inline double _sigmoid(double x) noexcept nogil:
    # Branch on sign so exp never overflows.
    cdef double e
    if x >= 0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


cdef inline double _clip(double v, double lo, double hi) noexcept nogil:
    # min(max(v, lo), hi) keeping NaN, as TF's Relu / Relu6 / clip_by_value do: both
    # comparisons are false for NaN, so it passes (fmin / fmax would return the bound).
    v = lo if v < lo else v
    return hi if v > hi else v


cdef inline double _softplus(double x) noexcept nogil:
    return fmax(x, 0.0) + log1p(exp(-fabs(x)))


cdef inline double _relu_general(double x, const Activation* a) noexcept nogil:
    # keras.activations.relu(x, negative_slope, max_value, threshold), same branch order
    # as Keras's ReLU.static_call: threshold gate (or relu), clip, minus the negative part.
    # NaN: the where() gives 0, relu and the clip keep it, the negative part makes it NaN.
    cdef double v
    if a.threshold != 0:
        v = x if x > a.threshold else 0.0
    else:
        v = _clip(x, 0.0, INFINITY)
    if a.max_value < INFINITY:
        v = _clip(v, 0.0, a.max_value)
    if a.alpha != 0:
        v -= a.alpha * _clip(a.threshold - x, 0.0, INFINITY)
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
        return <float>(_clip(x + 3.0, 0.0, 6.0) * (1.0 / 6.0))  # as the vector lanes: no division
    elif code == ACT_HARD_SIGMOID_K2:
        return <float>_clip(0.2 * x + 0.5, 0.0, 1.0)
    elif code == ACT_HARD_SWISH:
        return <float>(x * _clip(x + 3.0, 0.0, 6.0) * (1.0 / 6.0))
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
    elif code >= ACT_CELU:
        return <float>_act_k3(x, a)                       # activations_k3.pxi
    return xf


cdef void activation_forward_scalar(float* y, const float* x, Py_ssize_t n,
                                    const Activation* a) noexcept nogil:
    """y[i] = act(x[i]) for i < n with act_scalar (double, rounded once): the reference
    and the fallback for codes without a vector kernel; y may alias x."""
    cdef Py_ssize_t i
    cdef float lo, hi, v
    if a.code == ACT_LINEAR:
        if y != x:
            for i in range(n):
                y[i] = x[i]
    elif act_is_clamp(a):
        # The common case (relu, relu6).  Comparisons, not fminf/fmaxf: without
        # -ffast-math GCC keeps those as two libm calls per element (measured 30x slower).
        # In this order (v < lo, then v > hi) a NaN fails both and passes, as through TF's
        # Relu / Relu6; GCC still emits one maxps and one minps.
        act_clamp_bounds(a, &lo, &hi)
        for i in range(n):
            v = x[i]
            v = lo if v < lo else v
            y[i] = hi if v > hi else v
    else:
        for i in range(n):
            y[i] = act_scalar(x[i], a)


# The vector kernel of each activation code for the selected ISA (NULL: act_scalar), and
# the ISA's name; set by set_activation_isa, once per process unless a test forces one.
cdef f32_vact_fn _vact_table[<int>ACT_COUNT]
cdef const char* _vact_isa = NULL

cdef enum:
    # Floats per thread at least (par_threads, threads.pxi): a parallel region costs a
    # few microseconds, about what 8K elements of a transcendental vector kernel take.
    _ACT_MIN_CHUNK = 8192
    # floats of y the backward recomputes at a time when it is not given
    _ACT_BWD_CHUNK = 256


cdef void _activation_span(float* y, const float* x, Py_ssize_t n, const Activation* a,
                           const f32_vact_params* params) noexcept nogil:
    cdef f32_vact_fn fn = _vact_table[a.code]
    if fn != NULL:
        fn(n, x, y, params)
    else:
        activation_forward_scalar(y, x, n, a)


cdef void _activation_part(float* y, const float* x, Py_ssize_t n, const Activation* a,
                           const f32_vact_params* params, Py_ssize_t part,
                           Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t lo, hi
    chunk_bounds(part, parts, n, 16, &lo, &hi)     # whole 64-byte lines: no false sharing
    if hi > lo:
        _activation_span(y + lo, x + lo, hi - lo, a, params)


cdef void activation_forward(float* y, const float* x, Py_ssize_t n, const Activation* a,
                             int nthreads) noexcept nogil:
    """y[i] = act(x[i]) for i < n; y may alias x (not partially overlap it).  Vector
    kernels where the code has one (file comment), act_scalar otherwise.  nthreads <= 1
    (the GEMM / conv epilogues, which run per block inside their own threads, pass 1):
    serial, no OpenMP region; more: one contiguous range per thread (threads.pxi), the
    same bits at every count since every kernel is lane-wise."""
    cdef f32_vact_params params
    cdef Py_ssize_t part
    cdef int t
    params.alpha = a.alpha
    params.threshold = a.threshold
    t = par_threads(n, _ACT_MIN_CHUNK, nthreads)
    if t <= 1:
        _activation_span(y, x, n, a, &params)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _activation_part(y, x, n, a, &params, part, t)


def available_activation_isas():
    """Names of the activation kernel variants this CPU can run, best first; "scalar" (the
    double-precision reference path, act_scalar) is always last."""
    return [f32_vact_configs[i].name.decode() for i in range(f32_vact_config_count)
            if f32_vact_config_supported(i)] + ["scalar"]


def set_activation_isa(name=None):
    """Select the activation kernels by ISA name (None: the best this CPU supports;
    "scalar": act_scalar for everything).  Results differ between ISAs by rounding only
    (within the stated bounds); nothing is packed, so this may change at any time when no
    kernel is running."""
    global _vact_isa
    cdef int i, code
    cdef const f32_vact_kernels* k = NULL
    if name == "scalar":
        _vact_isa = b"scalar"
    else:
        for i in range(f32_vact_config_count):
            if f32_vact_config_supported(i) and (
                    name is None or f32_vact_configs[i].name.decode() == name):
                k = f32_vact_configs[i].kernels
                _vact_isa = f32_vact_configs[i].name
                break
        else:
            raise ValueError(f"activation ISA {name!r} is not available on this CPU; "
                             f"available: {available_activation_isas()}")
    for code in range(ACT_COUNT):
        _vact_table[code] = NULL
    if k != NULL:
        _vact_table[<int>ACT_SIGMOID] = k.sigmoid
        _vact_table[<int>ACT_HARD_SIGMOID] = k.hard_sigmoid
        _vact_table[<int>ACT_HARD_SIGMOID_K2] = k.hard_sigmoid_k2
        _vact_table[<int>ACT_HARD_SWISH] = k.hard_swish
        _vact_table[<int>ACT_SWISH] = k.swish
        _vact_table[<int>ACT_GELU] = k.gelu
        _vact_table[<int>ACT_GELU_TANH] = k.gelu_tanh
        _vact_table[<int>ACT_ELU] = k.elu
        _vact_table[<int>ACT_SELU] = k.selu
        _vact_table[<int>ACT_SOFTPLUS] = k.softplus
        _vact_table[<int>ACT_SOFTSIGN] = k.softsign
        _vact_table[<int>ACT_LEAKY_RELU] = k.leaky_relu
        _vact_table[<int>ACT_TANH] = k.tanh
        _vact_table[<int>ACT_EXPONENTIAL] = k.exp
        _vact_table[<int>ACT_MISH] = k.mish
        _vact_table[<int>ACT_LOG_SIGMOID] = k.log_sigmoid
        _vact_table_k3(k)                                  # activations_k3.pxi
    return activation_isa()


def activation_isa():
    """Name of the current activation kernel variant ("scalar": act_scalar)."""
    return _vact_isa.decode()


cdef inline float _relu_general_grad(float dy, float x, const Activation* a) noexcept nogil:
    # dx of _relu_general as TF differentiates Keras's ReLU.static_call, op by op: where()
    # and clip_by_value select (a NaN dy outside the branch gives 0), ReluGrad and
    # Relu6Grad multiply by a 0/1 mask (a NaN dy stays NaN).  Exact: 0, dy or alpha * dy.
    cdef float g
    if a.alpha != 0 and a.max_value == INFINITY and a.threshold == 0:
        return dy if x > 0 else dy * a.alpha              # tf.nn.leaky_relu
    if a.threshold != 0:
        # where(x > threshold, x, 0), then clip_by_value (bounds pass): both select.
        g = dy if x > a.threshold and (a.max_value == INFINITY or 0 <= x <= a.max_value) else 0
    elif a.max_value == 6:
        g = dy * (<float>1 if 0 < x < 6 else <float>0)    # tf.nn.relu6
    else:
        g = dy if a.max_value == INFINITY or x <= a.max_value else 0   # clip (NaN x: 0)
        g = g * (<float>1 if x > 0 else <float>0)         # tf.nn.relu
    if a.alpha != 0:
        # minus alpha * relu(threshold - x): ReluGrad's mask times alpha * dy.
        g = g + (dy * a.alpha) * (<float>1 if x < a.threshold else <float>0)
    return g


cdef inline double _act_deriv(float xf, float yf, const Activation* a) noexcept nogil:
    """f'(x) as TF computes it (see the file comment); yf = f(xf) as act_scalar gives it."""
    cdef double x = xf, y = yf, s, t, u, sp
    cdef float xs
    cdef int code = a.code
    if code == ACT_RELU:
        return _relu_general_grad(1, xf, a)
    elif code == ACT_SIGMOID:
        return y * (1.0 - y)                              # SigmoidGrad reads y
    elif code == ACT_HARD_SIGMOID or code == ACT_HARD_SWISH:
        xs = xf + <float>3.0                              # relu6(x + 3) / 6, x + 3 in float
        u = 1.0 / 6.0 if 0 < xs < 6 else 0.0
        if code == ACT_HARD_SIGMOID:
            return u
        return _clip(xs, 0.0, 6.0) / 6.0 + x * u          # x * hard_sigmoid(x)
    elif code == ACT_HARD_SIGMOID_K2:
        # TF passes the gradient where 0 <= (0.2f * x) + 0.5f <= 1, each op rounded to float
        # (clip_by_value: bounds pass).  Computing that here would let the compiler fuse it
        # into one fma (aarch64 does, and -2.5 then falls out), so compare x with the float
        # interval it is exactly: [-2.5, nextafterf(2.5, inf)].
        return <float>0.2 if _K2_PASS_LO <= xf <= _K2_PASS_HI else 0.0   # dy * 0.2f, TF's Mul
    elif code == ACT_SWISH:
        s = _sigmoid(x)                                   # tf.nn.silu's custom gradient
        return s * (1.0 + x * (1.0 - s))
    elif code == ACT_GELU:
        return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) * 0.3989422804014327
    elif code == ACT_GELU_TANH:
        t = tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (
            1.0 + 3.0 * 0.044715 * x * x)
    elif code == ACT_ELU:
        # EluGrad: alpha * (elu(x) + 1) where elu(x) < 0, else alpha (x = NaN included)
        return 1.0 if x > 0 else (y + a.alpha if x < 0 else a.alpha)
    elif code == ACT_SELU:
        return y + _SELU_SCALE * _SELU_ALPHA if y < 0 else _SELU_SCALE   # SeluGrad (NaN: scale)
    elif code == ACT_SOFTPLUS:
        return _sigmoid(x)
    elif code == ACT_SOFTSIGN:
        return 1.0 / ((1.0 + fabs(x)) * (1.0 + fabs(x)))
    elif code == ACT_LEAKY_RELU:
        return 1.0 if x > 0 else a.alpha                  # LeakyReluGrad: alpha at 0
    elif code == ACT_TANH:
        return 1.0 - y * y                                # TanhGrad reads y
    elif code == ACT_EXPONENTIAL:
        return y
    elif code == ACT_MISH:
        sp = _softplus(x)
        t = tanh(sp)
        return t + x * (1.0 - t * t) * _sigmoid(x)
    elif code == ACT_LOG_SIGMOID:
        return _sigmoid(-x)
    elif code >= ACT_CELU:
        return _act_deriv_k3(x, a)                        # activations_k3.pxi
    return 1.0


cdef void activation_backward(float* dx, const float* dy, const float* x, const float* y,
                              Py_ssize_t n, const Activation* a) noexcept nogil:
    """dx[i] = dy[i] * f'(x[i]) for i < n, f' as TensorFlow differentiates the Keras op
    (file comment); OVERWRITES dx, which may be dy, x or y (element i is read before it is
    written).  x is the forward input; y is the
    forward output f(x) (read by sigmoid, tanh, exponential, elu, selu, like TF's gradient
    ops) or NULL to recompute it from x (with the forward's vector kernel, so the
    same bits as a y the forward wrote).  Pure masks (relu family, leaky, hard_sigmoid)
    multiply in float and are exact; the others are computed in double, rounded once."""
    cdef Py_ssize_t i, j, m
    cdef float xv, yv
    cdef float ybuf[_ACT_BWD_CHUNK]
    cdef f32_vact_params params
    cdef bint plain_relu = a.code == ACT_RELU and a.alpha == 0 and a.threshold == 0
    if a.code == ACT_LINEAR:
        if dx != dy:
            for i in range(n):
                dx[i] = dy[i]
    # ReluGrad, Relu6Grad and hard_sigmoid's multiply dy by the mask (a NaN dy stays NaN,
    # as in TF), which also loads dy unconditionally so GCC vectorises the loop.
    elif plain_relu and a.max_value == INFINITY:
        for i in range(n):
            dx[i] = dy[i] * (<float>1 if x[i] > 0 else <float>0)           # ReluGrad
    elif plain_relu and a.max_value == 6:
        for i in range(n):
            dx[i] = dy[i] * (<float>1 if 0 < x[i] < 6 else <float>0)       # Relu6Grad
    elif a.code == ACT_LEAKY_RELU:
        for i in range(n):
            dx[i] = dy[i] if x[i] > 0 else dy[i] * a.alpha    # LeakyReluGrad
    elif a.code == ACT_RELU:
        for i in range(n):
            dx[i] = _relu_general_grad(dy[i], x[i], a)
    elif a.code == ACT_HARD_SIGMOID:
        for i in range(n):
            xv = x[i] + <float>3.0
            dx[i] = (dy[i] / <float>6.0) * (<float>1 if 0 < xv < 6 else <float>0)   # Relu6Grad
    elif a.code == ACT_HARD_SIGMOID_K2:
        for i in range(n):
            # clip_by_value's gradient selects (a NaN dy outside the interval gives 0),
            # then Mul's: dy * 0.2f.  The interval: see _act_deriv.
            dx[i] = dy[i] * <float>0.2 if _K2_PASS_LO <= x[i] <= _K2_PASS_HI else 0
    elif a.code >= ACT_CELU:
        _activation_backward_k3(dx, dy, x, n, a)              # activations_k3.pxi
    elif y == NULL and _vact_table[a.code] != NULL:
        # recompute y with the same vector kernel the forward ran, in stack-sized chunks
        # (dx may alias x: a chunk's y is made before its dx is written)
        params.alpha = a.alpha
        params.threshold = a.threshold
        i = 0
        while i < n:
            m = min(n - i, <Py_ssize_t>_ACT_BWD_CHUNK)
            _vact_table[a.code](m, x + i, ybuf, &params)
            for j in range(m):
                dx[i + j] = <float>(dy[i + j] * _act_deriv(x[i + j], ybuf[j], a))
            i += m
    else:
        for i in range(n):
            xv = x[i]
            yv = y[i] if y != NULL else act_scalar(xv, a)
            dx[i] = <float>(dy[i] * _act_deriv(xv, yv, a))


def activation(const float[::1] x, float[::1] y, int code, float alpha=0.0,
               float max_value=INFINITY, float threshold=0.0, int nthreads=1):
    """Checked wrapper: y = act(x) (vector kernels, file comment).  x and y may be the same
    buffer, not partially overlapping ones."""
    cdef Activation a = _checked_activation(code, alpha, max_value, threshold)
    _require(x.shape[0] == y.shape[0], f"activation: x has {x.shape[0]} elements, y {y.shape[0]}")
    if x.shape[0] == 0:
        return
    _require(&y[0] == &x[0] or not _overlaps(&y[0], y.nbytes, &x[0], x.nbytes),
             "activation: y partially overlaps x")
    with nogil:
        activation_forward(&y[0], &x[0], x.shape[0], &a, nthreads)


def activation_scalar(const float[::1] x, float[::1] y, int code, float alpha=0.0,
                      float max_value=INFINITY, float threshold=0.0):
    """Checked wrapper of the reference path: y = act_scalar(x) (double, rounded once)."""
    cdef Activation a = _checked_activation(code, alpha, max_value, threshold)
    _require(x.shape[0] == y.shape[0],
             f"activation_scalar: x has {x.shape[0]} elements, y {y.shape[0]}")
    if x.shape[0] == 0:
        return
    _require(&y[0] == &x[0] or not _overlaps(&y[0], y.nbytes, &x[0], x.nbytes),
             "activation_scalar: y partially overlaps x")
    with nogil:
        activation_forward_scalar(&y[0], &x[0], x.shape[0], &a)


def activation_grad(const float[::1] dy, const float[::1] x, y, float[::1] dx, int code,
                    float alpha=0.0, float max_value=INFINITY, float threshold=0.0):
    """dx = dy * f'(x) for activation `code` (TF's gradient rules); overwrites dx, which may
    be dy, x or y.  y: the forward output f(x) (float32, len(x)) or None to recompute it."""
    cdef Activation a = _checked_activation(code, alpha, max_value, threshold)
    cdef Py_ssize_t n = x.shape[0]
    cdef const float[::1] yv
    cdef const float* yp = NULL
    _require(dy.shape[0] == n and dx.shape[0] == n,
             f"activation_grad: dy has {dy.shape[0]}, x {n}, dx {dx.shape[0]} elements")
    if n == 0:
        return
    if y is not None:
        yv = y
        _require(yv.shape[0] == n, f"activation_grad: y has {yv.shape[0]} elements, x {n}")
        yp = &yv[0]
        _require(&dx[0] == yp or not _overlaps(&dx[0], dx.nbytes, yp, yv.nbytes),
                 "activation_grad: dx partially overlaps y")
    # Elementwise: dx may be any input itself, but must not partially overlap one.
    _require(&dx[0] == &dy[0] or not _overlaps(&dx[0], dx.nbytes, &dy[0], dy.nbytes),
             "activation_grad: dx partially overlaps dy")
    _require(&dx[0] == &x[0] or not _overlaps(&dx[0], dx.nbytes, &x[0], x.nbytes),
             "activation_grad: dx partially overlaps x")
    with nogil:
        activation_backward(&dx[0], &dy[0], &x[0], yp, n, &a)


import os as _os_act
set_activation_isa(_os_act.environ.get("EDGECORE_ACTIVATION_ISA") or None)
