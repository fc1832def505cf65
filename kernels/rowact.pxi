# Row activations over the last axis besides softmax (softmax.pxi): log_softmax, sparsemax
# and glu, Keras 3's `activation="..."` strings that are not elementwise.  Each works on
# `rows` contiguous rows; forward and backward side by side; the runner's rows call the
# cores, the `def` wrappers check shapes and aliasing first.
#
# log_softmax  y = (x - max) - log(sum exp(x - max)), TF's LogSoftmax (the terms by
#              _exp_nonpos, summed and logged in double).  A row holding NaN or +inf is all
#              NaN, as in TF; -inf elements give -inf.  Backward (TF's _LogSoftmaxGrad):
#              dx = dy - exp(y) * sum(dy).
# sparsemax    y = max(x - tau, 0) with Keras's threshold: sort the row descending (ties by
#              index, NaN last), cumulative sums c_m, support s_m = z_m - (c_m - 1) / m > 0,
#              k = sum s_m, and
#                SPARSEMAX_KERAS_3_15: tau = (sum_{m: s_m} c_m - 1) / k, what every backend of
#                  Keras 3.15 computes (keras-team/keras#23425: it sums the cumulative sums,
#                  so the row does not sum to 1 when k > 1);
#                SPARSEMAX_SIMPLEX: tau = (sum_{m: s_m} z_m - 1) / k, the projection onto the
#                  simplex (Martins & Astudillo 2016; Keras's fix, keras-team/keras#23469).
#              Backward as TF differentiates that graph: the sort's gradient goes back to
#              each element's position, maximum passes where x - tau >= 0 (ties included):
#                dx_j = [x_j - tau >= 0] dy_j - (sum_{l: x_l - tau >= 0} dy_l) w_{rank(j)},
#              w_m = #{i >= m: s_i} / k (KERAS_3_15) or s_m / k (SIMPLEX), 0 when k = 0.
#              NaN sorts last, so it is left out of tau and gives NaN only where it is (TF's
#              TopK places a NaN unpredictably: there its other outputs may differ); a row
#              with +inf has k = 0, tau = -inf and is all +inf, all -inf is all NaN, as TF.
#              Sums and tau in double.  Scratch: sparsemax_scratch_floats(n) per call.
# glu          y[:, j] = a_j * sigmoid(b_j), a = x[:, :h], b = x[:, h:] (Keras splits the last
#              axis in halves); backward da = dy sigmoid(b), db = dy a sigmoid(b) sigmoid(-b)
#              (TF's Mul and SigmoidGrad), in double, rounded once.  NaN and infinities
#              propagate by IEEE arithmetic as in TF (-inf * sigmoid(-inf) = NaN).

from libc.stdlib cimport qsort
from libc.math cimport log
from libc.stdint cimport int32_t

cdef enum SparsemaxMode:
    SPARSEMAX_KERAS_3_15 = 0
    SPARSEMAX_SIMPLEX = 1

SPARSEMAX_MODES = {"keras_3_15": SPARSEMAX_KERAS_3_15, "simplex": SPARSEMAX_SIMPLEX}


# Threads: log_softmax and glu (and their backward) split rows; sparsemax stays serial
# (its sort needs scratch per row, which is not planned per thread yet).

# --- log_softmax ---------------------------------------------------------------------------

cdef enum:
    # The row kernels threads split (rows.. of one call each, _rowact_run)
    _RA_LOG_SOFTMAX = 0
    _RA_LOG_SOFTMAX_BACK = 1
    _RA_GLU = 2
    _RA_GLU_BACK = 3


cdef void _rowact_rows(int kind, float* y, const float* x, const float* aux, Py_ssize_t n,
                       Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    if kind == _RA_LOG_SOFTMAX:
        _log_softmax_rows(y, x, n, r0, r1)
    elif kind == _RA_LOG_SOFTMAX_BACK:
        _log_softmax_backward_rows(y, x, aux, n, r0, r1)
    elif kind == _RA_GLU:
        _glu_rows(y, x, n, r0, r1)
    else:
        _glu_backward_rows(y, x, aux, n, r0, r1)


cdef void _rowact_part(int kind, float* y, const float* x, const float* aux, Py_ssize_t rows,
                       Py_ssize_t n, Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t r0, r1
    chunk_bounds(part, parts, rows, 1, &r0, &r1)
    _rowact_rows(kind, y, x, aux, n, r0, r1)


cdef void _rowact_run(int kind, float* y, const float* x, const float* aux, Py_ssize_t rows,
                      Py_ssize_t n, Py_ssize_t work, int nthreads) noexcept nogil:
    """Rows split across threads (each row computed alone: the same bits at any count)."""
    cdef Py_ssize_t part
    cdef int t = par_threads(work, PAR_MIN_FLOATS // 4, nthreads)    # exp per element
    if t > rows:
        t = <int>rows
    if t <= 1:
        _rowact_rows(kind, y, x, aux, n, 0, rows)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _rowact_part(kind, y, x, aux, rows, n, part, t)


cdef void log_softmax_forward(float* y, const float* x, Py_ssize_t rows, Py_ssize_t n,
                              int nthreads) noexcept nogil:
    """y = log_softmax(x) over each of `rows` rows of n >= 1 floats; OVERWRITES y, which
    may be x (a row is read twice, then written).  Threads split the rows."""
    _rowact_run(_RA_LOG_SOFTMAX, y, x, NULL, rows, n, rows * n, nthreads)


cdef void _log_softmax_rows(float* y, const float* x, Py_ssize_t n, Py_ssize_t r0,
                            Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t r, i
    cdef const float* xr
    cdef float* yr
    cdef float m, v
    cdef double acc, shift
    for r in range(r0, r1):
        xr = x + r * n
        yr = y + r * n
        m = _max_of(xr, n)                               # softmax.pxi
        acc = 0.0
        for i in range(n):
            # Terms below e^-87 count as e^-87 (~1e-38 next to the max's 1); `not <` keeps
            # NaN, which _exp_nonpos turns into a NaN sum.
            v = xr[i] - m
            v = v if not (v < -87) else <float>-87
            acc += _exp_nonpos(v)
        shift = <double>m + log(acc)
        for i in range(n):
            yr[i] = <float>(<double>xr[i] - shift)


cdef void log_softmax_backward(float* dx, const float* dy, const float* y, Py_ssize_t rows,
                               Py_ssize_t n, int nthreads) noexcept nogil:
    """dx = dy - exp(y) * sum(dy) per row, y the forward output; OVERWRITES dx, which may
    be dy or y (each row's sum is taken before it is written).  Threads split the rows."""
    _rowact_run(_RA_LOG_SOFTMAX_BACK, dx, dy, y, rows, n, rows * n, nthreads)


cdef void _log_softmax_backward_rows(float* dx, const float* dy, const float* y, Py_ssize_t n,
                                     Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t r, i
    cdef double s
    for r in range(r0, r1):
        s = 0.0
        for i in range(r * n, r * n + n):
            s += dy[i]
        for i in range(r * n, r * n + n):
            dx[i] = <float>(dy[i] - exp(<double>y[i]) * s)


# --- sparsemax -----------------------------------------------------------------------------

cdef struct _SmKey:
    float v
    int32_t i        # position in the row (rows are at most 2^31 floats)


cdef int _sm_descending(const void* pa, const void* pb) noexcept nogil:
    # Descending, NaN after everything, ties by position: TF's TopK order for non-NaN rows.
    cdef const _SmKey* a = <const _SmKey*>pa
    cdef const _SmKey* b = <const _SmKey*>pb
    cdef bint an = a.v != a.v, bn = b.v != b.v
    if an != bn:
        return 1 if an else -1
    if not an and a.v != b.v:
        return -1 if a.v > b.v else 1
    return -1 if a.i < b.i else (1 if a.i > b.i else 0)


cdef inline Py_ssize_t sparsemax_scratch_floats(Py_ssize_t n) noexcept nogil:
    """Arena scratch one sparsemax call needs: the sorted (value, position) keys and a
    support flag per position, for one row at a time."""
    return 3 * n


cdef double _sparsemax_tau(_SmKey* keys, float* support, const float* x, Py_ssize_t n,
                           int mode, Py_ssize_t* k) noexcept nogil:
    """Sort x's row into keys, set support[m] (0/1 per sorted position) and *k, return tau
    (-inf when k = 0, as TF's (0 - 1) / 0)."""
    cdef Py_ssize_t m
    cdef double c = 0.0, acc = 0.0, z
    for m in range(n):
        keys[m].v = x[m]
        keys[m].i = <int32_t>m
    qsort(keys, n, sizeof(_SmKey), _sm_descending)
    k[0] = 0
    for m in range(n):
        z = keys[m].v
        c += z
        if z - (c - 1.0) / (m + 1) > 0:
            support[m] = 1
            k[0] += 1
            acc += c if mode == SPARSEMAX_KERAS_3_15 else z
        else:
            support[m] = 0
    if k[0] == 0:
        return -INFINITY
    return (acc - 1.0) / k[0]


cdef void sparsemax_forward(float* y, const float* x, Py_ssize_t rows, Py_ssize_t n,
                            int mode, float* scratch) noexcept nogil:
    """y = max(x - tau, 0) per row (file comment); OVERWRITES y, which may be x.
    scratch: sparsemax_scratch_floats(n) floats."""
    cdef _SmKey* keys = <_SmKey*>scratch
    cdef float* support = scratch + 2 * n
    cdef Py_ssize_t r, i, k
    cdef double tau, d
    for r in range(rows):
        tau = _sparsemax_tau(keys, support, x + r * n, n, mode, &k)
        for i in range(r * n, r * n + n):
            d = x[i] - tau
            y[i] = <float>d if (d > 0 or d != d) else 0    # TF's maximum keeps NaN


cdef void sparsemax_backward(float* dx, const float* dy, const float* x, Py_ssize_t rows,
                             Py_ssize_t n, int mode, float* scratch) noexcept nogil:
    """Gradient of sparsemax_forward from its input x (file comment); OVERWRITES dx, which
    may be dy or x (each element is read before it is written, sums come first)."""
    cdef _SmKey* keys = <_SmKey*>scratch
    cdef float* support = scratch + 2 * n
    cdef const float* xr
    cdef const float* dyr
    cdef float* dxr
    cdef Py_ssize_t r, i, m, j, k, count
    cdef double tau, g, w
    for r in range(rows):
        xr = x + r * n
        dyr = dy + r * n
        dxr = dx + r * n
        tau = _sparsemax_tau(keys, support, xr, n, mode, &k)
        g = 0.0
        for i in range(n):
            if xr[i] - tau >= 0:
                g += dyr[i]
        count = 0
        for m in range(n - 1, -1, -1):
            count += <Py_ssize_t>support[m]
            if k == 0:
                w = 0.0
            elif mode == SPARSEMAX_KERAS_3_15:
                w = <double>count / k
            else:
                w = support[m] / k
            j = keys[m].i
            dxr[j] = <float>((dyr[j] if keys[m].v - tau >= 0 else 0.0) - g * w)


# --- glu -----------------------------------------------------------------------------------

cdef void glu_forward(float* y, const float* x, Py_ssize_t rows, Py_ssize_t h,
                      int nthreads) noexcept nogil:
    """y (rows, h) = a * sigmoid(b) of x (rows, 2h) = [a | b]; OVERWRITES y (not x).
    Threads split the rows."""
    _rowact_run(_RA_GLU, y, x, NULL, rows, h, rows * h, nthreads)


cdef void _glu_rows(float* y, const float* x, Py_ssize_t h, Py_ssize_t r0,
                    Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef const float* xr
    for r in range(r0, r1):
        xr = x + 2 * h * r
        for j in range(h):
            y[h * r + j] = <float>(xr[j] * _sigmoid(xr[h + j]))      # activations.pxi


cdef void glu_backward(float* dx, const float* dy, const float* x, Py_ssize_t rows,
                       Py_ssize_t h, int nthreads) noexcept nogil:
    """dx (rows, 2h) = [dy sigmoid(b) | dy a sigmoid(b) sigmoid(-b)] from the forward input x
    (rows, 2h) and dy (rows, h); OVERWRITES dx, which overlaps neither.  Threads split the
    rows."""
    _rowact_run(_RA_GLU_BACK, dx, dy, x, rows, h, 2 * rows * h, nthreads)


cdef void _glu_backward_rows(float* dx, const float* dy, const float* x, Py_ssize_t h,
                             Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef double a, s, t
    for r in range(r0, r1):
        for j in range(h):
            a = x[2 * h * r + j]
            s = _sigmoid(x[2 * h * r + h + j])
            t = _sigmoid(-x[2 * h * r + h + j])     # 1 - s without cancelling for b >> 0
            dx[2 * h * r + j] = <float>(dy[h * r + j] * s)
            dx[2 * h * r + h + j] = <float>(dy[h * r + j] * a * s * t)


# --- checked Python entry points -----------------------------------------------------------

cdef inline bint _same_or_apart(const void* a, Py_ssize_t a_bytes, const void* b,
                                Py_ssize_t b_bytes) noexcept:
    return a == b or not _overlaps(a, a_bytes, b, b_bytes)


cdef inline void _require_nonempty_rows(str name, Py_ssize_t rows, Py_ssize_t n) except *:
    _require(rows > 0 and n > 0, f"{name}: empty input ({rows}, {n})")


def log_softmax(const float[:, ::1] x, float[:, ::1] y, int nthreads=1):
    """y = log_softmax(x) over axis 1 of (rows, n) arrays; y may be x (not a partial overlap)."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    _require_nonempty_rows("log_softmax", rows, n)
    _require(y.shape[0] == rows and y.shape[1] == n,
             f"log_softmax: y is {tuple(y.shape)[:2]}, expected {(rows, n)}")
    _require(_same_or_apart(&y[0, 0], y.nbytes, &x[0, 0], x.nbytes),
             "log_softmax: y partially overlaps x")
    with nogil:
        log_softmax_forward(&y[0, 0], &x[0, 0], rows, n, nthreads)


def log_softmax_grad(const float[:, ::1] dy, const float[:, ::1] y, float[:, ::1] dx,
                     int nthreads=1):
    """dx = dy - exp(y) sum(dy) per row, y the log_softmax output; dx may be dy or y."""
    cdef Py_ssize_t rows = y.shape[0], n = y.shape[1]
    _require_nonempty_rows("log_softmax_grad", rows, n)
    _require(dy.shape[0] == rows and dy.shape[1] == n and dx.shape[0] == rows
             and dx.shape[1] == n, f"log_softmax_grad: dy {tuple(dy.shape)[:2]} and dx "
             f"{tuple(dx.shape)[:2]} must match y {(rows, n)}")
    _require(_same_or_apart(&dx[0, 0], dx.nbytes, &dy[0, 0], dy.nbytes)
             and _same_or_apart(&dx[0, 0], dx.nbytes, &y[0, 0], y.nbytes),
             "log_softmax_grad: dx partially overlaps dy or y")
    with nogil:
        log_softmax_backward(&dx[0, 0], &dy[0, 0], &y[0, 0], rows, n, nthreads)


def sparsemax_scratch_size(Py_ssize_t n):
    """Floats of scratch sparsemax and sparsemax_grad need for rows of n."""
    return sparsemax_scratch_floats(n)


cdef void _check_sparsemax(str name, Py_ssize_t rows, Py_ssize_t n, int mode, float[::1] scratch,
                           const void* out, Py_ssize_t out_bytes) except *:
    _require_nonempty_rows(name, rows, n)
    _require(n < (<Py_ssize_t>1 << 31), f"{name}: rows of {n} floats are too long")
    _require(mode == SPARSEMAX_KERAS_3_15 or mode == SPARSEMAX_SIMPLEX,
             f"{name}: unknown mode {mode}")
    _require(scratch.shape[0] >= sparsemax_scratch_floats(n),
             f"{name}: scratch has {scratch.shape[0]} floats, needs {sparsemax_scratch_floats(n)}")
    _require(not _overlaps(&scratch[0], scratch.nbytes, out, out_bytes),
             f"{name}: scratch overlaps the output")


def sparsemax(const float[:, ::1] x, float[:, ::1] y, float[::1] scratch, int mode=0):
    """y = sparsemax(x) over axis 1 of (rows, n) arrays, mode from SPARSEMAX_MODES; y may
    be x.  scratch: sparsemax_scratch_size(n) floats, apart from x and y."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    _require(y.shape[0] == rows and y.shape[1] == n,
             f"sparsemax: y is {tuple(y.shape)[:2]}, expected {(rows, n)}")
    _check_sparsemax("sparsemax", rows, n, mode, scratch, &y[0, 0] if rows and n else NULL,
                     y.nbytes)
    _require(_same_or_apart(&y[0, 0], y.nbytes, &x[0, 0], x.nbytes)
             and not _overlaps(&scratch[0], scratch.nbytes, &x[0, 0], x.nbytes),
             "sparsemax: y partially overlaps x, or scratch overlaps x")
    with nogil:
        sparsemax_forward(&y[0, 0], &x[0, 0], rows, n, mode, &scratch[0])


def sparsemax_grad(const float[:, ::1] dy, const float[:, ::1] x, float[:, ::1] dx,
                   float[::1] scratch, int mode=0):
    """dx of sparsemax at its input x given dy, (rows, n) arrays; dx may be dy or x."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    _require(dy.shape[0] == rows and dy.shape[1] == n and dx.shape[0] == rows
             and dx.shape[1] == n, f"sparsemax_grad: dy {tuple(dy.shape)[:2]} and dx "
             f"{tuple(dx.shape)[:2]} must match x {(rows, n)}")
    _check_sparsemax("sparsemax_grad", rows, n, mode, scratch,
                     &dx[0, 0] if rows and n else NULL, dx.nbytes)
    _require(_same_or_apart(&dx[0, 0], dx.nbytes, &dy[0, 0], dy.nbytes)
             and _same_or_apart(&dx[0, 0], dx.nbytes, &x[0, 0], x.nbytes)
             and not _overlaps(&scratch[0], scratch.nbytes, &x[0, 0], x.nbytes)
             and not _overlaps(&scratch[0], scratch.nbytes, &dy[0, 0], dy.nbytes),
             "sparsemax_grad: dx partially overlaps dy or x, or scratch overlaps an input")
    with nogil:
        sparsemax_backward(&dx[0, 0], &dy[0, 0], &x[0, 0], rows, n, mode, &scratch[0])


def glu(const float[:, ::1] x, float[:, ::1] y, int nthreads=1):
    """y (rows, h) = x[:, :h] * sigmoid(x[:, h:]) for x (rows, 2h); y apart from x."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    _require_nonempty_rows("glu", rows, n)
    _require(n % 2 == 0, f"glu: the last axis ({n}) must split in halves")
    _require(y.shape[0] == rows and y.shape[1] == n // 2,
             f"glu: y is {tuple(y.shape)[:2]}, expected {(rows, n // 2)}")
    _require(not _overlaps(&y[0, 0], y.nbytes, &x[0, 0], x.nbytes), "glu: y overlaps x")
    with nogil:
        glu_forward(&y[0, 0], &x[0, 0], rows, n // 2, nthreads)


def glu_grad(const float[:, ::1] dy, const float[:, ::1] x, float[:, ::1] dx,
             int nthreads=1):
    """dx (rows, 2h) of glu at x (rows, 2h) given dy (rows, h); dx apart from both."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    _require_nonempty_rows("glu_grad", rows, n)
    _require(n % 2 == 0, f"glu_grad: the last axis of x ({n}) must split in halves")
    _require(dy.shape[0] == rows and dy.shape[1] == n // 2 and dx.shape[0] == rows
             and dx.shape[1] == n, f"glu_grad: dy {tuple(dy.shape)[:2]} and dx "
             f"{tuple(dx.shape)[:2]} do not fit x {(rows, n)}")
    _require(not _overlaps(&dx[0, 0], dx.nbytes, &dy[0, 0], dy.nbytes)
             and not _overlaps(&dx[0, 0], dx.nbytes, &x[0, 0], x.nbytes),
             "glu_grad: dx overlaps dy or x")
    with nogil:
        glu_backward(&dx[0, 0], &dy[0, 0], &x[0, 0], rows, n // 2, nthreads)
