# Training losses fused with their gradient, as Keras 3 computes them on TensorFlow.
#
# Each kernel writes the per-row loss (loss_rows, before the batch reduction) and the
# gradient with respect to its input, scaled by grad_scale: for Keras's default reduction
# "sum_over_batch_size" the caller passes 1 / (number of loss values), the gradient of
# sum / count.  Either output may be NULL (loss only for evaluation, gradient only for a
# step).  Sources: keras/src/losses/losses.py and keras/src/backend/tensorflow/nn.py.
#   * Keras hands the LOGITS to TensorFlow whenever the model output is a softmax / sigmoid
#     (_get_logits), even with from_logits=False, so the logit forms here are what Keras
#     trains with; the caller picks the kernel.
#   * softmax cross-entropy is TF's fused op: loss = sum_j t_j * (logsumexp(z) - z_j), and
#     its gradient is softmax(z) - t even when t does not sum to 1 (TF's backprop, not the
#     derivative of that loss); sparse labels are the one-hot case.
#   * label smoothing is applied to the targets in float32 exactly as Keras writes it:
#     categorical t * f32(1 - ls) + f32(ls) / f32(classes), binary t * f32(1 - ls) +
#     f32(0.5 * ls), where (1 - ls) and 0.5 * ls are Python (double) arithmetic; hence the
#     double label_smoothing arguments.  ls == 0 leaves t untouched, as Keras skips it.
#   * sigmoid cross-entropy: TF's stable max(z, 0) - z t + log1p(exp(-|z|)) per element,
#     averaged over the last axis; gradient (sigmoid(z) - t) / cols.
# Losses and gradients are computed in double and rounded once.
# NaN, as TF 2.21 (tests/test_kernels_nan.py): a NaN or +inf logit makes its row's
# softmax cross-entropy loss and gradient NaN (a -inf one gives a 0 probability); a NaN
# target, or any NaN element of the element-wise losses, makes its row's loss and its own
# gradient element NaN.  No comparison or clamp here drops a NaN: exp, log and log1p keep it.
# Non-goals: sample weights, ignore_class, probabilities input (from_logits=False on an
# output that is not a softmax / sigmoid), reductions other than a scale.

from libc.math cimport NAN, log


cdef inline double _row_max(const float* z, Py_ssize_t n) noexcept nogil:
    cdef double m = z[0]
    cdef Py_ssize_t j
    for j in range(1, n):
        if z[j] > m:
            m = z[j]
    return m


cdef inline double _sum_exp(const float* z, Py_ssize_t n, double m) noexcept nogil:
    cdef double s = 0.0
    cdef Py_ssize_t j
    for j in range(n):
        s += exp(z[j] - m)
    return s


cdef void sparse_softmax_cross_entropy(float* loss_rows, float* dlogits, const float* logits,
                                       const int64_t* labels, Py_ssize_t rows,
                                       Py_ssize_t classes, float grad_scale) noexcept nogil:
    """Keras SparseCategoricalCrossentropy on logits (rows, classes), integer labels (rows):
    loss_rows[r] = logsumexp(z_r) - z_r[label_r]; dlogits = (softmax(z) - onehot) *
    grad_scale.  OVERWRITES both (either may be NULL).  Every label must be in
    [0, classes): the checked wrapper and the trainer refuse others; a row whose label is
    out of range anyway (the plan runner trusts its arena) gets a NaN loss and a NaN
    gradient instead of an out-of-bounds read."""
    cdef Py_ssize_t r, j
    cdef const float* z
    cdef float* d
    cdef double m, s
    for r in range(rows):
        z = logits + r * classes
        if labels[r] < 0 or labels[r] >= classes:
            if loss_rows != NULL:
                loss_rows[r] = NAN
            if dlogits != NULL:
                for j in range(classes):
                    dlogits[r * classes + j] = NAN
            continue
        m = _row_max(z, classes)
        s = _sum_exp(z, classes, m)
        if loss_rows != NULL:
            loss_rows[r] = <float>(log(s) - (z[labels[r]] - m))
        if dlogits != NULL:
            d = dlogits + r * classes
            for j in range(classes):
                d[j] = <float>((exp(z[j] - m) / s - (1.0 if j == labels[r] else 0.0))
                               * grad_scale)


cdef inline float _smoothed(float t, float keep, float add) noexcept nogil:
    # Keras's y_true * (1 - ls) + ls-term, in float32 as TF evaluates it.
    return t * keep + add


cdef void softmax_cross_entropy(float* loss_rows, float* dlogits, const float* logits,
                                const float* targets, Py_ssize_t rows, Py_ssize_t classes,
                                double label_smoothing, float grad_scale) noexcept nogil:
    """Keras CategoricalCrossentropy on logits (rows, classes) with targets (rows, classes)
    smoothed as Keras does (file comment): loss_rows[r] = sum_j t_j (logsumexp(z) - z_j);
    dlogits = (softmax(z) - t) * grad_scale.  OVERWRITES both (either may be NULL);
    dlogits may be logits or targets (a row is fully read before it is written)."""
    cdef Py_ssize_t r, j
    cdef const float* z
    cdef const float* t
    cdef float* d
    cdef double m, s, lse, loss
    cdef float keep = <float>(1.0 - label_smoothing)
    cdef float add = <float>label_smoothing / <float>classes
    cdef float tj
    for r in range(rows):
        z = logits + r * classes
        t = targets + r * classes
        m = _row_max(z, classes)
        s = _sum_exp(z, classes, m)
        lse = log(s)
        loss = 0.0
        for j in range(classes):
            tj = _smoothed(t[j], keep, add) if label_smoothing != 0 else t[j]
            loss += tj * (lse - (z[j] - m))
        if dlogits != NULL:
            d = dlogits + r * classes
            for j in range(classes):
                tj = _smoothed(t[j], keep, add) if label_smoothing != 0 else t[j]
                d[j] = <float>((exp(z[j] - m) / s - tj) * grad_scale)
        if loss_rows != NULL:
            loss_rows[r] = <float>loss


cdef void sigmoid_binary_cross_entropy(float* loss_rows, float* dlogits, const float* logits,
                                       const float* targets, Py_ssize_t rows, Py_ssize_t cols,
                                       double label_smoothing, float grad_scale) noexcept nogil:
    """Keras BinaryCrossentropy(from_logits=True) on (rows, cols), targets smoothed toward
    0.5 as Keras does: loss_rows[r] = mean_j max(z, 0) - z t + log1p(exp(-|z|));
    dlogits = (sigmoid(z) - t) * grad_scale / cols.  OVERWRITES both (either may be NULL);
    dlogits may be logits or targets (element-wise)."""
    cdef Py_ssize_t r, j
    cdef double zj, tj, loss, scale = <double>grad_scale / cols
    cdef float keep = <float>(1.0 - label_smoothing)
    cdef float add = <float>(0.5 * label_smoothing)
    cdef Py_ssize_t o
    for r in range(rows):
        loss = 0.0
        for j in range(cols):
            o = r * cols + j
            zj = logits[o]
            tj = _smoothed(targets[o], keep, add) if label_smoothing != 0 else targets[o]
            loss += fmax(zj, 0.0) - zj * tj + log1p(exp(-fabs(zj)))
            if dlogits != NULL:
                dlogits[o] = <float>((_sigmoid(zj) - tj) * scale)
        if loss_rows != NULL:
            loss_rows[r] = <float>(loss / cols)


cdef void mean_squared_error(float* loss_rows, float* dpred, const float* pred,
                             const float* targets, Py_ssize_t rows, Py_ssize_t cols,
                             float grad_scale) noexcept nogil:
    """Keras MeanSquaredError on (rows, cols): loss_rows[r] = mean_j (p - t)^2;
    dpred = 2 (p - t) * grad_scale / cols.  OVERWRITES both (either may be NULL); dpred may
    be pred or targets (element-wise)."""
    cdef Py_ssize_t r, j, o
    cdef double diff, loss, scale = 2.0 * grad_scale / cols
    for r in range(rows):
        loss = 0.0
        for j in range(cols):
            o = r * cols + j
            diff = <double>pred[o] - targets[o]
            loss += diff * diff
            if dpred != NULL:
                dpred[o] = <float>(diff * scale)
        if loss_rows != NULL:
            loss_rows[r] = <float>(loss / cols)


# --- checked Python entry points ---------------------------------------------------------

cdef inline void _require_rows(const float[:, ::1] z, str name) except *:
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise KernelShapeError(f"{name}: empty input {tuple(z.shape)[:2]}")


cdef void _check_loss_io(const float[:, ::1] z, loss_rows, dz, const _Span* ins, int n_in,
                         tuple in_names, str name, float** lp, float** dp) except *:
    """Shapes of the optional outputs; dz may be an input itself (element-wise kernels)
    but must not partially overlap one; loss_rows must not overlap anything."""
    cdef _Span ls, ds
    cdef int i
    lp[0] = _optional_out(loss_rows, (z.shape[0],), "loss_rows", &ls)
    dp[0] = _optional_out(dz, (z.shape[0], z.shape[1]), "gradient", &ds)
    _require_disjoint(&ls, 1, ("loss_rows",), ins, n_in, in_names, name)
    _require_disjoint(&ls, 1, ("loss_rows",), &ds, 1, ("gradient",), name)
    for i in range(n_in):
        if ds.p != NULL and ds.p != ins[i].p and _overlaps(ds.p, ds.nbytes, ins[i].p, ins[i].nbytes):
            raise KernelShapeError(f"{name}: gradient partially overlaps {in_names[i]}")


def sparse_softmax_cross_entropy_loss(const float[:, ::1] logits, const int64_t[::1] labels,
                                      loss_rows, dlogits, float grad_scale=1.0):
    """Per-row loss (rows,) and gradient (rows, classes) of Keras's sparse categorical
    cross-entropy on logits; either output None.  Labels outside [0, classes) are refused."""
    cdef Py_ssize_t rows = logits.shape[0], classes = logits.shape[1], r
    cdef float* lp = NULL
    cdef float* dp = NULL
    cdef _Span ins[1]
    _require_rows(logits, "sparse_softmax_cross_entropy")
    if labels.shape[0] != rows:
        raise KernelShapeError(f"sparse_softmax_cross_entropy: {labels.shape[0]} labels for {rows} rows")
    for r in range(rows):
        if not 0 <= labels[r] < classes:
            raise KernelShapeError(f"sparse_softmax_cross_entropy: label {labels[r]} at row {r} "
                                   f"is outside [0, {classes})")
    ins[0] = _span(&logits[0, 0], logits.nbytes)
    _check_loss_io(logits, loss_rows, dlogits, ins, 1, ("logits",),
                   "sparse_softmax_cross_entropy", &lp, &dp)
    with nogil:
        sparse_softmax_cross_entropy(lp, dp, &logits[0, 0], &labels[0], rows, classes, grad_scale)


cdef void _loss_pair(const float[:, ::1] z, const float[:, ::1] t, str name,
                     _Span* ins) except *:
    """Input spans of (z, targets) after checking they are non-empty and of one shape."""
    _require_rows(z, name)
    if t.shape[0] != z.shape[0] or t.shape[1] != z.shape[1]:
        raise KernelShapeError(f"{name}: targets {tuple(t.shape)[:2]} do not match {tuple(z.shape)[:2]}")
    ins[0] = _span(&z[0, 0], z.nbytes)
    ins[1] = _span(&t[0, 0], t.nbytes)


def softmax_cross_entropy_loss(const float[:, ::1] logits, const float[:, ::1] targets,
                               loss_rows, dlogits, double label_smoothing=0.0,
                               float grad_scale=1.0):
    """Keras CategoricalCrossentropy on logits: per-row loss and gradient, either None."""
    cdef float* lp = NULL
    cdef float* dp = NULL
    cdef _Span ins[2]
    _require(0 <= label_smoothing <= 1, "softmax_cross_entropy: label_smoothing not in [0, 1]")
    _loss_pair(logits, targets, "softmax_cross_entropy", ins)
    _check_loss_io(logits, loss_rows, dlogits, ins, 2, ("logits", "targets"),
                   "softmax_cross_entropy", &lp, &dp)
    with nogil:
        softmax_cross_entropy(lp, dp, &logits[0, 0], &targets[0, 0], logits.shape[0],
                              logits.shape[1], label_smoothing, grad_scale)


def sigmoid_binary_cross_entropy_loss(const float[:, ::1] logits, const float[:, ::1] targets,
                                      loss_rows, dlogits, double label_smoothing=0.0,
                                      float grad_scale=1.0):
    """Keras BinaryCrossentropy(from_logits=True): per-row loss and gradient, either None."""
    cdef float* lp = NULL
    cdef float* dp = NULL
    cdef _Span ins[2]
    _require(0 <= label_smoothing <= 1, "sigmoid_binary_cross_entropy: label_smoothing not in [0, 1]")
    _loss_pair(logits, targets, "sigmoid_binary_cross_entropy", ins)
    _check_loss_io(logits, loss_rows, dlogits, ins, 2, ("logits", "targets"),
                   "sigmoid_binary_cross_entropy", &lp, &dp)
    with nogil:
        sigmoid_binary_cross_entropy(lp, dp, &logits[0, 0], &targets[0, 0], logits.shape[0],
                                     logits.shape[1], label_smoothing, grad_scale)


def mean_squared_error_loss(const float[:, ::1] pred, const float[:, ::1] targets, loss_rows,
                            dpred, float grad_scale=1.0):
    """Keras MeanSquaredError: per-row loss and gradient, either None."""
    cdef float* lp = NULL
    cdef float* dp = NULL
    cdef _Span ins[2]
    _loss_pair(pred, targets, "mean_squared_error", ins)
    _check_loss_io(pred, loss_rows, dpred, ins, 2, ("pred", "targets"), "mean_squared_error",
                   &lp, &dp)
    with nogil:
        mean_squared_error(lp, dp, &pred[0, 0], &targets[0, 0], pred.shape[0], pred.shape[1],
                           grad_scale)
