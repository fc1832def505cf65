# Optimizer updates, element-wise over n floats of a trainable variable in its Keras layout
# (so one call serves a Dense kernel, an HWIO kernel or a bias alike), in Keras 3's float32
# operation order: keras/src/optimizers/{sgd,adam,rmsprop,base_optimizer}.py as TensorFlow
# runs them under model.fit.  The arithmetic is in f32_optimizer_updates.h (C, so that no
# multiply-add is ever fused: see its header); this file holds the cores' Cython face and
# the checked wrappers.
#
# Checked against Keras 3.15 / TF 2.21 (x86-64, 4000 elements, 8 steps, eager and
# tf.function): SGD (plain, momentum, Nesterov), Adam, AdamW, Adam(amsgrad) and the weight
# decay reproduce Keras bit for bit; RMSprop differs only where TF's approximate rsqrt does.
# Two orders follow model.fit's graph rather than Keras's source, because TF's grappler
# rewrites them there: weight decay is w - w * (wd * lr), RMSprop divides by sqrt through
# a multiply by rsqrt.
#
# All updates run in place; no state array may overlap another or the gradient.  The
# caller runs them in Keras's order: clip the gradients, weight_decay_update (optimizers
# with weight_decay), then the update; `step` counts from 1 (Keras's iterations + 1).
# Threads: an update is elementwise, so threads take contiguous parts of the n elements and
# every thread count gives the same bits (_opt_run).
# Non-goals: gradient clipping and accumulation, EMA, learning-rate schedules (the caller
# evaluates the schedule and passes float32 lr), the other Keras optimizers.

cdef extern from "f32_optimizer_updates.h" nogil:
    void ec_sgd_update(float* w, const float* g, size_t n, float lr)
    void ec_sgd_momentum_update(float* w, float* m, const float* g, size_t n, float lr,
                                float momentum, int nesterov)
    void ec_adam_update(float* w, float* m, float* v, float* v_hat, const float* g, size_t n,
                        float alpha, float one_minus_beta_1, float one_minus_beta_2,
                        float epsilon)
    void ec_rmsprop_update(float* w, float* v, float* mg, float* mom, const float* g, size_t n,
                           float lr, float rho, float one_minus_rho, float momentum,
                           float epsilon)
    void ec_weight_decay_update(float* w, size_t n, float lr, float wd)
    float ec_adam_alpha(float lr, double beta_1, double beta_2, int64_t step)


cdef enum _OptKind:
    _OPT_SGD = 0
    _OPT_SGD_MOMENTUM = 1
    _OPT_ADAM = 2
    _OPT_RMSPROP = 3
    _OPT_WEIGHT_DECAY = 4


cdef struct _OptArgs:
    # One update's arrays (NULL: absent) and hyperparameters, as the C loops take them.
    int kind
    float* w
    float* m
    float* v
    float* extra        # Adam's v_hat, RMSprop's mean gradient
    float* mom          # RMSprop's momentum
    const float* g
    float a, b, c, d, e  # per kind, in the C function's argument order
    int flag


cdef inline float* _at(float* p, Py_ssize_t i) noexcept nogil:
    return p + i if p != NULL else NULL


cdef void _opt_range(const _OptArgs* o, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """The update on elements lo..hi (every element is independent of the others)."""
    cdef size_t n = hi - lo
    if n == 0:
        return
    if o.kind == _OPT_SGD:
        ec_sgd_update(o.w + lo, o.g + lo, n, o.a)
    elif o.kind == _OPT_SGD_MOMENTUM:
        ec_sgd_momentum_update(o.w + lo, o.m + lo, o.g + lo, n, o.a, o.b, o.flag)
    elif o.kind == _OPT_ADAM:
        ec_adam_update(o.w + lo, o.m + lo, o.v + lo, _at(o.extra, lo), o.g + lo, n, o.a, o.b,
                       o.c, o.d)
    elif o.kind == _OPT_RMSPROP:
        ec_rmsprop_update(o.w + lo, o.v + lo, _at(o.extra, lo), _at(o.mom, lo), o.g + lo, n,
                          o.a, o.b, o.c, o.d, o.e)
    else:
        ec_weight_decay_update(o.w + lo, n, o.a, o.b)


cdef void _opt_part(const _OptArgs* o, Py_ssize_t n, Py_ssize_t part,
                    Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t lo, hi
    chunk_bounds(part, parts, n, 16, &lo, &hi)
    _opt_range(o, lo, hi)


cdef void _opt_run(const _OptArgs* o, Py_ssize_t n, int nthreads) noexcept nogil:
    """Run an update over n elements, split in contiguous parts (on 64-byte boundaries)
    across threads: elementwise, so the same bits at any thread count."""
    cdef Py_ssize_t part
    cdef int t = par_threads(n, PAR_MIN_FLOATS // 4, nthreads)   # ~4 loads + stores each
    if t <= 1:
        _opt_range(o, 0, n)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _opt_part(o, n, part, t)


cdef inline _OptArgs _opt_args(int kind, float* w, const float* g) noexcept nogil:
    cdef _OptArgs o
    o.kind = kind
    o.w = w
    o.g = g
    o.m = o.v = o.extra = o.mom = NULL
    o.a = o.b = o.c = o.d = o.e = 0
    o.flag = 0
    return o


cdef inline void sgd_update(float* w, const float* g, Py_ssize_t n, float lr,
                            int nthreads) noexcept nogil:
    """keras.optimizers.SGD(momentum=0): w -= g * lr."""
    cdef _OptArgs o = _opt_args(_OPT_SGD, w, g)
    o.a = lr
    _opt_run(&o, n, nthreads)


cdef inline void sgd_momentum_update(float* w, float* m, const float* g, Py_ssize_t n, float lr,
                                     float momentum, bint nesterov,
                                     int nthreads) noexcept nogil:
    """keras.optimizers.SGD(momentum > 0): m = m * momentum - g * lr, then w += m
    (Nesterov: w += m * momentum - g * lr).  m: the momentum slot, zeros at step 1."""
    cdef _OptArgs o = _opt_args(_OPT_SGD_MOMENTUM, w, g)
    o.m = m
    o.a = lr
    o.b = momentum
    o.flag = nesterov
    _opt_run(&o, n, nthreads)


cdef inline float adam_alpha(float lr, double beta_1, double beta_2, int64_t step) noexcept nogil:
    """Adam's float32 step size lr * sqrt(1 - beta_2^step) / (1 - beta_1^step), step >= 1."""
    return ec_adam_alpha(lr, beta_1, beta_2, step)


cdef inline void adam_update(float* w, float* m, float* v, float* v_hat, const float* g,
                             Py_ssize_t n, float alpha, double beta_1, double beta_2,
                             float epsilon, int nthreads) noexcept nogil:
    """keras.optimizers.Adam / AdamW: m += (g - m) * (1 - beta_1); v += (g^2 - v) *
    (1 - beta_2); w -= (m * alpha) / (sqrt(v) + epsilon); with v_hat (amsgrad) v_hat =
    max(v_hat, v) in the denominator.  alpha from adam_alpha; beta_1, beta_2 are Keras's
    Python floats (1 - beta is taken in double, then rounded, as Keras does)."""
    cdef _OptArgs o = _opt_args(_OPT_ADAM, w, g)
    o.m = m
    o.v = v
    o.extra = v_hat
    o.a = alpha
    o.b = <float>(1.0 - beta_1)
    o.c = <float>(1.0 - beta_2)
    o.d = epsilon
    _opt_run(&o, n, nthreads)


cdef inline void rmsprop_update(float* w, float* v, float* mg, float* mom, const float* g,
                                Py_ssize_t n, float lr, double rho, float momentum,
                                float epsilon, int nthreads) noexcept nogil:
    """keras.optimizers.RMSprop: v = rho v + (1 - rho) g^2; increment = lr g / sqrt(v +
    epsilon); with momentum (mom != NULL, Keras's momentum > 0) mom = momentum mom +
    increment, w -= mom, else w -= increment.  centered=True (mg != NULL): also mg = rho mg
    + (1 - rho) g, denominator v - mg^2 + eps."""
    cdef _OptArgs o = _opt_args(_OPT_RMSPROP, w, g)
    o.v = v
    o.extra = mg
    o.mom = mom
    o.a = lr
    o.b = <float>rho
    o.c = <float>(1.0 - rho)
    o.d = momentum
    o.e = epsilon
    _opt_run(&o, n, nthreads)


cdef inline void weight_decay_update(float* w, Py_ssize_t n, float lr, float wd,
                                     int nthreads) noexcept nogil:
    """Keras's decoupled weight decay, applied before the update: w -= w * (wd * lr)."""
    cdef _OptArgs o = _opt_args(_OPT_WEIGHT_DECAY, w, NULL)
    o.a = lr
    o.b = wd
    _opt_run(&o, n, nthreads)


# --- checked Python entry points ---------------------------------------------------------

cdef Py_ssize_t _check_slots(tuple names, tuple bufs, const float[::1] g, str name) except -1:
    """Every state slot (None allowed for optional ones) has g's length and no two of them,
    nor a slot and g, share memory; returns n."""
    cdef Py_ssize_t n = g.shape[0], i
    cdef _Span spans[5]
    cdef _Span gs = _span(&g[0], g.nbytes) if n > 0 else _span(NULL, 0)
    cdef float[::1] sv
    _require(n > 0, "empty gradient")
    for i in range(5):
        spans[i] = _span(NULL, 0)
    for i in range(len(bufs)):
        if bufs[i] is None:
            continue
        sv = bufs[i]
        if sv.shape[0] != n:
            raise KernelShapeError(f"{name}: {names[i]} has {sv.shape[0]} elements, gradient {n}")
        spans[i] = _span(&sv[0], sv.nbytes)
    _require_disjoint(spans, len(bufs), names, &gs, 1, ("gradient",), name)
    return n


cdef inline float* _slot(buf) except? NULL:
    cdef float[::1] sv
    if buf is None:
        return NULL
    sv = buf
    return &sv[0]


def sgd_step(float[::1] w, const float[::1] g, float lr, momentums=None, float momentum=0.0,
             bint nesterov=False, int nthreads=1):
    """One keras.optimizers.SGD update of w in place; momentums (the slot, zeros at the
    start) is required exactly when momentum != 0, as Keras creates it."""
    cdef Py_ssize_t n = _check_slots(("w", "momentums"), (w, momentums), g, "sgd_step")
    cdef float* mp = _slot(momentums)
    _require((momentum != 0) == (mp != NULL), "sgd_step: momentums must be given iff momentum != 0")
    with nogil:
        if mp == NULL:
            sgd_update(&w[0], &g[0], n, lr, nthreads)
        else:
            sgd_momentum_update(&w[0], mp, &g[0], n, lr, momentum, nesterov, nthreads)


def adam_step_size(float lr, double beta_1, double beta_2, int64_t step):
    """Keras Adam's float32 alpha for 1-based `step` (iterations + 1)."""
    _require(step >= 1, f"adam_step_size: step {step} counts from 1")
    return adam_alpha(lr, beta_1, beta_2, step)


def adam_step(float[::1] w, float[::1] m, float[::1] v, const float[::1] g, float alpha,
              double beta_1=0.9, double beta_2=0.999, float epsilon=1e-7, v_hat=None,
              int nthreads=1):
    """One keras.optimizers.Adam update in place (AdamW: weight_decay_step first); alpha
    from adam_step_size; v_hat given means amsgrad=True."""
    cdef Py_ssize_t n = _check_slots(("w", "m", "v", "v_hat"), (w, m, v, v_hat), g,
                                     "adam_step")
    cdef float* vh = _slot(v_hat)
    with nogil:
        adam_update(&w[0], &m[0], &v[0], vh, &g[0], n, alpha, beta_1, beta_2, epsilon,
                    nthreads)


def rmsprop_step(float[::1] w, float[::1] v, const float[::1] g, float lr, double rho=0.9,
                 float momentum=0.0, float epsilon=1e-7, momentums=None, average_grad=None,
                 int nthreads=1):
    """One keras.optimizers.RMSprop update in place; momentums required iff momentum > 0,
    average_grad given means centered=True."""
    cdef Py_ssize_t n = _check_slots(("w", "v", "momentums", "average_grad"),
                                     (w, v, momentums, average_grad), g, "rmsprop_step")
    cdef float* mp = _slot(momentums)
    cdef float* ag = _slot(average_grad)
    _require((momentum > 0) == (mp != NULL), "rmsprop_step: momentums must be given iff momentum > 0")
    with nogil:
        rmsprop_update(&w[0], &v[0], ag, mp, &g[0], n, lr, rho, momentum, epsilon, nthreads)


def weight_decay_step(float[::1] w, float lr, float wd, int nthreads=1):
    """Keras's weight decay before an update: w -= w * (wd * lr), in place."""
    _require(w.shape[0] > 0, "weight_decay_step: empty variable")
    with nogil:
        weight_decay_update(&w[0], w.shape[0], lr, wd, nthreads)
