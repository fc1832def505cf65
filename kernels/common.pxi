# Shared types, constants and argument checks for every kernel family.

from libc.stdint cimport int64_t


class KernelShapeError(ValueError):
    """A kernel was called with inconsistent shapes (raised before any nogil work)."""


cdef inline void _require(bint ok, str what) except *:
    if not ok:
        raise KernelShapeError(what)


# Activation codes.  The Python side never hard-codes these numbers: it reads them from
# `ACTIVATION_CODES` so the table below is the single source of truth.
cdef enum ActCode:
    ACT_LINEAR = 0
    ACT_RELU = 1            # Keras relu(x, negative_slope, max_value, threshold), all params
    ACT_SIGMOID = 2
    ACT_HARD_SIGMOID = 3    # Keras 3: relu6(x + 3) / 6
    ACT_HARD_SIGMOID_K2 = 4 # Keras 2: clip(0.2 x + 0.5, 0, 1)
    ACT_HARD_SWISH = 5      # Keras 3 hard_silu: x * relu6(x + 3) / 6
    ACT_SWISH = 6           # silu: x * sigmoid(x)
    ACT_GELU = 7            # exact: 0.5 x (1 + erf(x / sqrt 2))
    ACT_GELU_TANH = 8       # approximate=True
    ACT_ELU = 9             # alpha
    ACT_SELU = 10
    ACT_SOFTPLUS = 11
    ACT_SOFTSIGN = 12
    ACT_LEAKY_RELU = 13     # alpha = negative slope
    ACT_TANH = 14
    ACT_EXPONENTIAL = 15
    ACT_MISH = 16           # x * tanh(softplus(x))
    ACT_LOG_SIGMOID = 17
    # Keras 3 only (activations_k3.pxi); parameters in the Activation fields as noted.
    ACT_CELU = 18           # alpha
    ACT_HARD_SHRINK = 19    # threshold (Keras default 0.5)
    ACT_HARD_TANH = 20
    ACT_SOFT_SHRINK = 21    # threshold (Keras default 0.5)
    ACT_SPARSE_PLUS = 22
    ACT_SPARSE_SIGMOID = 23
    ACT_SQUAREPLUS = 24     # alpha = b (Keras default 4)
    ACT_TANH_SHRINK = 25
    ACT_COUNT = 26

ACTIVATION_CODES = {
    "linear": ACT_LINEAR, "relu": ACT_RELU, "sigmoid": ACT_SIGMOID,
    "hard_sigmoid": ACT_HARD_SIGMOID, "hard_sigmoid_k2": ACT_HARD_SIGMOID_K2,
    "hard_swish": ACT_HARD_SWISH, "swish": ACT_SWISH, "gelu": ACT_GELU,
    "gelu_tanh": ACT_GELU_TANH, "elu": ACT_ELU, "selu": ACT_SELU, "softplus": ACT_SOFTPLUS,
    "softsign": ACT_SOFTSIGN, "leaky_relu": ACT_LEAKY_RELU, "tanh": ACT_TANH,
    "exponential": ACT_EXPONENTIAL, "mish": ACT_MISH, "log_sigmoid": ACT_LOG_SIGMOID,
    "celu": ACT_CELU, "hard_shrink": ACT_HARD_SHRINK, "hard_tanh": ACT_HARD_TANH,
    "soft_shrink": ACT_SOFT_SHRINK, "sparse_plus": ACT_SPARSE_PLUS,
    "sparse_sigmoid": ACT_SPARSE_SIGMOID, "squareplus": ACT_SQUAREPLUS,
    "tanh_shrink": ACT_TANH_SHRINK,
}


cdef struct Activation:
    int code
    float alpha       # negative slope (relu, leaky_relu), ELU/CELU alpha, squareplus b
    float max_value   # relu cap; +inf when Keras has max_value=None
    float threshold   # relu threshold, hard_shrink / soft_shrink threshold


cdef inline Activation make_activation(int code, float alpha, float max_value,
                                       float threshold) noexcept nogil:
    cdef Activation a
    a.code = code
    a.alpha = alpha
    a.max_value = max_value
    a.threshold = threshold
    return a


cdef inline Activation _checked_activation(int code, float alpha, float max_value,
                                           float threshold) except *:
    _require(0 <= code < ACT_COUNT, f"unknown activation code {code}")
    return make_activation(code, alpha, max_value, threshold)


cdef inline bint act_is_clamp(const Activation* a) noexcept nogil:
    """True when the activation is y = min(max(x, lo), hi), which GEMM fuses for free."""
    if a.code == ACT_LINEAR:
        return True
    return a.code == ACT_RELU and a.alpha == 0 and a.threshold == 0


cdef inline void act_clamp_bounds(const Activation* a, float* lo, float* hi) noexcept nogil:
    if a.code == ACT_LINEAR:
        lo[0] = -INFINITY
        hi[0] = INFINITY
    else:
        lo[0] = 0
        hi[0] = a.max_value


cdef inline bint _overlaps(const void* a, Py_ssize_t a_bytes, const void* b,
                           Py_ssize_t b_bytes) noexcept:
    """Do two byte ranges share memory (for rejecting aliased outputs in wrappers)."""
    cdef const char* pa = <const char*>a
    cdef const char* pb = <const char*>b
    return pa < pb + b_bytes and pb < pa + a_bytes


# --- helpers of the backward wrappers, whose outputs are optional (None: not needed) ------
# Messages are formatted only on failure: these run on every call of a training wrapper.

cdef struct _Span:
    const char* p           # NULL: an absent optional buffer
    Py_ssize_t nbytes


cdef inline _Span _span(const void* p, Py_ssize_t nbytes) noexcept:
    cdef _Span s
    s.p = <const char*>p
    s.nbytes = nbytes
    return s


cdef float* _optional_out(object buf, tuple shape, str what, _Span* span) except? NULL:
    """Pointer to an optional output: None gives NULL, anything else must be a writable,
    C-contiguous float32 buffer of exactly `shape` (checked through the buffer protocol, so
    nothing is ever silently copied).  Writes its byte range to *span."""
    cdef float[::1] flat
    span.p = NULL
    span.nbytes = 0
    if buf is None:
        return NULL
    mv = memoryview(buf)
    if mv.format not in ("f", "<f", "=f") or not mv.c_contiguous or mv.readonly:
        raise KernelShapeError(f"{what} must be a writable C-contiguous float32 array")
    if mv.shape != shape or mv.nbytes == 0:
        raise KernelShapeError(f"{what} is {tuple(mv.shape)}, expected {shape}")
    flat = mv.cast("B").cast("f")
    span[0] = _span(&flat[0], mv.nbytes)
    return &flat[0]


cdef void _require_disjoint(const _Span* outs, int n_out, tuple out_names, const _Span* ins,
                            int n_in, tuple in_names, str name) except *:
    """No present output range overlaps an input range or another output."""
    cdef int i, j
    for i in range(n_out):
        if outs[i].p == NULL:
            continue
        for j in range(n_in):
            if ins[j].p != NULL and _overlaps(outs[i].p, outs[i].nbytes, ins[j].p, ins[j].nbytes):
                raise KernelShapeError(f"{name}: {out_names[i]} overlaps {in_names[j]}")
        for j in range(i):
            if outs[j].p != NULL and _overlaps(outs[i].p, outs[i].nbytes, outs[j].p, outs[j].nbytes):
                raise KernelShapeError(f"{name}: {out_names[i]} overlaps {out_names[j]}")
