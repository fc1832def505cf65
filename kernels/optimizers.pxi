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


cdef inline void sgd_update(float* w, const float* g, Py_ssize_t n, float lr) noexcept nogil:
    """keras.optimizers.SGD(momentum=0): w -= g * lr."""
    ec_sgd_update(w, g, n, lr)


cdef inline void sgd_momentum_update(float* w, float* m, const float* g, Py_ssize_t n, float lr,
                                     float momentum, bint nesterov) noexcept nogil:
    """keras.optimizers.SGD(momentum > 0): m = m * momentum - g * lr, then w += m
    (Nesterov: w += m * momentum - g * lr).  m: the momentum slot, zeros at step 1."""
    ec_sgd_momentum_update(w, m, g, n, lr, momentum, nesterov)


cdef inline float adam_alpha(float lr, double beta_1, double beta_2, int64_t step) noexcept nogil:
    """Adam's float32 step size lr * sqrt(1 - beta_2^step) / (1 - beta_1^step), step >= 1."""
    return ec_adam_alpha(lr, beta_1, beta_2, step)


cdef inline void adam_update(float* w, float* m, float* v, const float* g, Py_ssize_t n,
                             float alpha, double beta_1, double beta_2,
                             float epsilon) noexcept nogil:
    """keras.optimizers.Adam / AdamW: m += (g - m) * (1 - beta_1); v += (g^2 - v) *
    (1 - beta_2); w -= (m * alpha) / (sqrt(v) + epsilon).  alpha from adam_alpha; beta_1,
    beta_2 are Keras's Python floats (1 - beta is taken in double, then rounded, as Keras
    does)."""
    ec_adam_update(w, m, v, NULL, g, n, alpha, <float>(1.0 - beta_1), <float>(1.0 - beta_2),
                   epsilon)


cdef inline void adam_amsgrad_update(float* w, float* m, float* v, float* v_hat, const float* g,
                                     Py_ssize_t n, float alpha, double beta_1, double beta_2,
                                     float epsilon) noexcept nogil:
    """Adam(amsgrad=True): as adam_update with v_hat = max(v_hat, v) in the denominator."""
    ec_adam_update(w, m, v, v_hat, g, n, alpha, <float>(1.0 - beta_1), <float>(1.0 - beta_2),
                   epsilon)


cdef inline void rmsprop_update(float* w, float* v, float* mom, const float* g, Py_ssize_t n,
                                float lr, double rho, float momentum,
                                float epsilon) noexcept nogil:
    """keras.optimizers.RMSprop(centered=False): v = rho v + (1 - rho) g^2; increment =
    lr g / sqrt(v + epsilon); with momentum (mom != NULL, Keras's momentum > 0) mom =
    momentum mom + increment, w -= mom, else w -= increment."""
    ec_rmsprop_update(w, v, NULL, mom, g, n, lr, <float>rho, <float>(1.0 - rho), momentum,
                      epsilon)


cdef inline void rmsprop_centered_update(float* w, float* v, float* mg, float* mom,
                                         const float* g, Py_ssize_t n, float lr, double rho,
                                         float momentum, float epsilon) noexcept nogil:
    """RMSprop(centered=True): also mg = rho mg + (1 - rho) g, denominator v - mg^2 + eps."""
    ec_rmsprop_update(w, v, mg, mom, g, n, lr, <float>rho, <float>(1.0 - rho), momentum,
                      epsilon)


cdef inline void weight_decay_update(float* w, Py_ssize_t n, float lr, float wd) noexcept nogil:
    """Keras's decoupled weight decay, applied before the update: w -= w * (wd * lr)."""
    ec_weight_decay_update(w, n, lr, wd)


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
             bint nesterov=False):
    """One keras.optimizers.SGD update of w in place; momentums (the slot, zeros at the
    start) is required exactly when momentum != 0, as Keras creates it."""
    cdef Py_ssize_t n = _check_slots(("w", "momentums"), (w, momentums), g, "sgd_step")
    cdef float* mp = _slot(momentums)
    _require((momentum != 0) == (mp != NULL), "sgd_step: momentums must be given iff momentum != 0")
    with nogil:
        if mp == NULL:
            sgd_update(&w[0], &g[0], n, lr)
        else:
            sgd_momentum_update(&w[0], mp, &g[0], n, lr, momentum, nesterov)


def adam_step_size(float lr, double beta_1, double beta_2, int64_t step):
    """Keras Adam's float32 alpha for 1-based `step` (iterations + 1)."""
    _require(step >= 1, f"adam_step_size: step {step} counts from 1")
    return adam_alpha(lr, beta_1, beta_2, step)


def adam_step(float[::1] w, float[::1] m, float[::1] v, const float[::1] g, float alpha,
              double beta_1=0.9, double beta_2=0.999, float epsilon=1e-7, v_hat=None):
    """One keras.optimizers.Adam update in place (AdamW: weight_decay_step first); alpha
    from adam_step_size; v_hat given means amsgrad=True."""
    cdef Py_ssize_t n = _check_slots(("w", "m", "v", "v_hat"), (w, m, v, v_hat), g,
                                     "adam_step")
    cdef float* vh = _slot(v_hat)
    with nogil:
        if vh == NULL:
            adam_update(&w[0], &m[0], &v[0], &g[0], n, alpha, beta_1, beta_2, epsilon)
        else:
            adam_amsgrad_update(&w[0], &m[0], &v[0], vh, &g[0], n, alpha, beta_1, beta_2,
                                epsilon)


def rmsprop_step(float[::1] w, float[::1] v, const float[::1] g, float lr, double rho=0.9,
                 float momentum=0.0, float epsilon=1e-7, momentums=None, average_grad=None):
    """One keras.optimizers.RMSprop update in place; momentums required iff momentum > 0,
    average_grad given means centered=True."""
    cdef Py_ssize_t n = _check_slots(("w", "v", "momentums", "average_grad"),
                                     (w, v, momentums, average_grad), g, "rmsprop_step")
    cdef float* mp = _slot(momentums)
    cdef float* ag = _slot(average_grad)
    _require((momentum > 0) == (mp != NULL), "rmsprop_step: momentums must be given iff momentum > 0")
    with nogil:
        if ag == NULL:
            rmsprop_update(&w[0], &v[0], mp, &g[0], n, lr, rho, momentum, epsilon)
        else:
            rmsprop_centered_update(&w[0], &v[0], ag, mp, &g[0], n, lr, rho, momentum, epsilon)


def weight_decay_step(float[::1] w, float lr, float wd):
    """Keras's weight decay before an update: w -= w * (wd * lr), in place."""
    _require(w.shape[0] > 0, "weight_decay_step: empty variable")
    with nogil:
        weight_decay_update(&w[0], w.shape[0], lr, wd)
