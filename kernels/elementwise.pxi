# Broadcasting binary ops (Keras merge layers, squeeze-excite, constants), scale,
# per-channel affine (folded BatchNorm that could not be folded into a conv) and PReLU.
#
# Inputs are read through element strides, 0 on broadcast axes, so no operand is ever
# materialised at the output's shape.  binary_forward first collapses the shape: size-1
# axes are dropped and an axis merges into the next inner one when every operand steps
# through both as one (e.g. (N,H,W,C) * (N,1,1,C) becomes (N, H*W, C) with strides
# (HWC, C, 1) and (C, 0, 1)); the innermost remaining axis is then one "row" call and the
# outer axes an odometer.  Rows whose strides are (1, 1), (1, 0) or (0, 1) run one loop per
# op, because GCC does not vectorise a loop with an op switch inside (checked with
# -fopt-info-vec: "control flow in loop"); any other stride pattern takes a scalar loop.
# Aliasing: y may be a or b only where that operand is contiguous with y's shape, so every
# element is read before the same element is written (Add of 3+ inputs accumulates in place).
# Backward beside channel_affine_forward: channel_affine_backward (frozen scale and shift,
# the input gradient only); BatchNormalization with trainable gamma / beta is in
# normalization.pxi.
# binary_backward / prelu_backward give each operand's gradient in its own compact shape,
# i.e. summed over its broadcast axes, with TensorFlow's per-element formulas (divide's
# db = dy * ((-a / b) / b); maximum's gradient goes to a where a >= b, minimum's where
# a <= b, else to b).  Each per-element term is a float product, as TF's; the sums over
# broadcast positions run in double (blocks of _GRAD_CB columns on the stack, as
# f32_column_sums does), so a squeeze-excite db of N*H*W terms loses nothing to a float
# running sum.  The backward needs each operand's strides to be its compact broadcast
# strides (0 on broadcast axes, C order elsewhere), which is what the planner writes.
# NaN, as TF 2.21: maximum and minimum return NaN when either operand is NaN (TF's
# Maximum / Minimum propagate it; a plain `a > b ? a : b` would drop a NaN a), PReLU keeps
# a NaN x (Keras: relu(x) - alpha * relu(-x)); the rest propagate it by arithmetic.
# Threads: the forwards split the output's flat range (binary_forward walks any range of
# it, part rows included) or its rows; the backward splits the positions of the output
# gradient (and blocks of its columns), each summing over its broadcast positions alone:
# the same bits at any thread count.
# Non-goals: integer dtypes, negative strides, rank > 6.

from libc.string cimport memcpy

cdef enum BinaryOp:
    BIN_ADD = 0
    BIN_SUB = 1
    BIN_MUL = 2
    BIN_DIV = 3
    BIN_MAX = 4
    BIN_MIN = 5
    BIN_PRELU = 6   # max(a, 0) + b * min(a, 0): prelu_forward's rule, not a Keras merge op

BINARY_OPS = {"add": BIN_ADD, "subtract": BIN_SUB, "multiply": BIN_MUL, "divide": BIN_DIV,
              "maximum": BIN_MAX, "minimum": BIN_MIN}

cdef enum:
    _MAX_RANK = 6
    _GRAD_AXES = 7      # prelu_backward adds the batch axis to a rank-6 sample
    _GRAD_CB = 256      # gradient columns per double accumulator block (2 KiB)


cdef inline float _binop(int op, float a, float b) noexcept nogil:
    # Ternaries for max/min/prelu, as in the vector loops below, so every path agrees:
    # `| (a != a)` makes a NaN a win (a NaN b already does), prelu's order keeps a NaN a;
    # `|`, not `or`: Cython's short-circuit `or` is a branch GCC does not vectorise.
    if op == BIN_ADD:
        return a + b
    elif op == BIN_SUB:
        return a - b
    elif op == BIN_MUL:
        return a * b
    elif op == BIN_DIV:
        return a / b
    elif op == BIN_MAX:
        return a if (a > b) | (a != a) else b
    elif op == BIN_MIN:
        return a if (a < b) | (a != a) else b
    return (0 if a < 0 else a) + b * (0 if a > 0 else a)


cdef void _binary_row_vv(float* y, const float* a, const float* b, Py_ssize_t n,
                         int op) noexcept nogil:
    """y[i] = a[i] op b[i]."""
    cdef Py_ssize_t i
    if op == BIN_ADD:
        for i in range(n): y[i] = a[i] + b[i]
    elif op == BIN_SUB:
        for i in range(n): y[i] = a[i] - b[i]
    elif op == BIN_MUL:
        for i in range(n): y[i] = a[i] * b[i]
    elif op == BIN_DIV:
        for i in range(n): y[i] = a[i] / b[i]
    elif op == BIN_MAX:
        for i in range(n): y[i] = a[i] if (a[i] > b[i]) | (a[i] != a[i]) else b[i]
    elif op == BIN_MIN:
        for i in range(n): y[i] = a[i] if (a[i] < b[i]) | (a[i] != a[i]) else b[i]
    else:
        for i in range(n): y[i] = (0 if a[i] < 0 else a[i]) + b[i] * (0 if a[i] > 0 else a[i])


cdef void _binary_row_vs(float* y, const float* a, float s, Py_ssize_t n,
                         int op) noexcept nogil:
    """y[i] = a[i] op s."""
    cdef Py_ssize_t i
    if op == BIN_ADD:
        for i in range(n): y[i] = a[i] + s
    elif op == BIN_SUB:
        for i in range(n): y[i] = a[i] - s
    elif op == BIN_MUL:
        for i in range(n): y[i] = a[i] * s
    elif op == BIN_DIV:
        for i in range(n): y[i] = a[i] / s
    elif op == BIN_MAX:
        for i in range(n): y[i] = a[i] if (a[i] > s) | (a[i] != a[i]) else s
    elif op == BIN_MIN:
        for i in range(n): y[i] = a[i] if (a[i] < s) | (a[i] != a[i]) else s
    else:
        for i in range(n): y[i] = (0 if a[i] < 0 else a[i]) + s * (0 if a[i] > 0 else a[i])


cdef void _binary_row(float* y, const float* a, Py_ssize_t sa, const float* b, Py_ssize_t sb,
                      Py_ssize_t n, int op) noexcept nogil:
    """y[i] = a[i*sa] op b[i*sb] for i < n."""
    cdef Py_ssize_t i
    cdef float s
    if sa == 1 and sb == 1:
        _binary_row_vv(y, a, b, n, op)
    elif sa == 1 and sb == 0:
        _binary_row_vs(y, a, b[0], n, op)
    elif sa == 0 and sb == 1 and op == BIN_SUB:
        s = a[0]
        for i in range(n): y[i] = s - b[i]
    elif sa == 0 and sb == 1 and op == BIN_DIV:
        s = a[0]
        for i in range(n): y[i] = s / b[i]
    elif sa == 0 and sb == 1 and op != BIN_PRELU:
        _binary_row_vs(y, b, a[0], n, op)       # add, mul, max, min commute
    else:
        for i in range(n):
            y[i] = _binop(op, a[i * sa], b[i * sb])


cdef int _collapse_axes(int rank, const Py_ssize_t* shape, const Py_ssize_t* a_strides,
                        const Py_ssize_t* b_strides, Py_ssize_t* dims, Py_ssize_t* sa,
                        Py_ssize_t* sb) noexcept nogil:
    """Write the collapsed shape and strides (outermost first) and return its rank >= 1
    (rank <= _GRAD_AXES)."""
    cdef Py_ssize_t rd[_GRAD_AXES]
    cdef Py_ssize_t ra[_GRAD_AXES]
    cdef Py_ssize_t rb[_GRAD_AXES]
    cdef int r = 0, i
    # Walk inner to outer; axis i joins the axis just inside it when both operands step
    # through the pair as through one axis (y is contiguous, so it always does).
    for i in range(rank - 1, -1, -1):
        if shape[i] == 1:
            continue
        if r > 0 and a_strides[i] == ra[r - 1] * rd[r - 1] and b_strides[i] == rb[r - 1] * rd[r - 1]:
            rd[r - 1] *= shape[i]
        else:
            rd[r] = shape[i]
            ra[r] = a_strides[i]
            rb[r] = b_strides[i]
            r += 1
    if r == 0:          # every axis has size 1: one element
        rd[0] = 1
        ra[0] = 0
        rb[0] = 0
        r = 1
    for i in range(r):
        dims[i] = rd[r - 1 - i]
        sa[i] = ra[r - 1 - i]
        sb[i] = rb[r - 1 - i]
    return r


cdef struct _Bin:
    # binary_forward's collapsed geometry (rank r, outermost first).
    int r
    int op
    Py_ssize_t dims[_GRAD_AXES]
    Py_ssize_t sa[_GRAD_AXES]
    Py_ssize_t sb[_GRAD_AXES]


cdef void _binary_range(float* y, const float* a, const float* b, const _Bin* g,
                        Py_ssize_t e0, Py_ssize_t e1) noexcept nogil:
    """Output elements e0..e1 (flat, C order) of binary_forward: the row holding e0 from
    its column on, whole rows, then the head of the last one."""
    cdef Py_ssize_t idx[_GRAD_AXES]
    cdef int r = g.r, k
    cdef Py_ssize_t inner = g.dims[r - 1], ia = g.sa[r - 1], ib = g.sb[r - 1]
    cdef Py_ssize_t row = e0 // inner, col = e0 - row * inner, rest = row, ao = 0, bo = 0
    cdef Py_ssize_t e = e0, cnt
    for k in range(r - 2, -1, -1):
        idx[k] = rest % g.dims[k]
        rest //= g.dims[k]
        ao += idx[k] * g.sa[k]
        bo += idx[k] * g.sb[k]
    while e < e1:
        cnt = min(inner - col, e1 - e)
        _binary_row(y + e, a + ao + col * ia, ia, b + bo + col * ib, ib, cnt, g.op)
        e += cnt
        col = 0
        k = r - 2       # odometer over the outer axes
        while k >= 0:
            idx[k] += 1
            ao += g.sa[k]
            bo += g.sb[k]
            if idx[k] < g.dims[k]:
                break
            ao -= g.sa[k] * g.dims[k]
            bo -= g.sb[k] * g.dims[k]
            idx[k] = 0
            k -= 1


cdef void _binary_part(float* y, const float* a, const float* b, const _Bin* g,
                       Py_ssize_t total, Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t e0, e1
    chunk_bounds(part, parts, total, 16, &e0, &e1)
    if e1 > e0:
        _binary_range(y, a, b, g, e0, e1)


cdef void binary_forward(float* y, const float* a, const float* b, int op, int rank,
                         const Py_ssize_t* shape, const Py_ssize_t* a_strides,
                         const Py_ssize_t* b_strides, int nthreads) noexcept nogil:
    """y = a op b with broadcasting; overwrites y (contiguous, `shape`, rank 1..7: 7 for
    prelu_forward's batch axis).

    a and b are read at element offsets sum(index[i] * strides[i]) (stride 0 on broadcast
    axes).  y may be a or b only where that operand is contiguous with y's shape (each
    element is read before it is written, by the thread that writes it).  Threads take
    contiguous ranges of y.
    """
    cdef _Bin g
    cdef Py_ssize_t total = 1, part
    cdef int k, t
    g.r = _collapse_axes(rank, shape, a_strides, b_strides, g.dims, g.sa, g.sb)
    g.op = op
    for k in range(g.r):
        total *= g.dims[k]
    t = par_threads(total, PAR_MIN_FLOATS, nthreads)
    if t <= 1:
        _binary_range(y, a, b, &g, 0, total)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _binary_part(y, a, b, &g, total, part, t)


cdef enum:
    _AFFINE_GROUP_ROWS = 16   # narrow channel_affine: rows per vectorised run


cdef void _affine_rows(float* y, const float* x, Py_ssize_t c, const float* scale,
                       const float* shift, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0..r1 of y = x * scale (+ shift unless NULL) over (rows, c); scale_forward
    is c = 1 with rows = elements, scale and shift read at index 0."""
    cdef Py_ssize_t r, j
    cdef float* yr
    cdef const float* xr
    cdef float s
    if c == 1 and shift == NULL:
        s = scale[0]
        for r in range(r0, r1):
            y[r] = x[r] * s
        return
    if c < _AFFINE_GROUP_ROWS and r1 - r0 >= 2 * _AFFINE_GROUP_ROWS:
        _affine_rows_narrow(y, x, c, scale, shift, r0, r1)
        return
    for r in range(r0, r1):
        yr = y + r * c
        xr = x + r * c
        if shift == NULL:
            for j in range(c):
                yr[j] = xr[j] * scale[j]
        else:
            for j in range(c):
                yr[j] = xr[j] * scale[j] + shift[j]


cdef void _affine_rows_narrow(float* y, const float* x, Py_ssize_t c, const float* scale,
                              const float* shift, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """_affine_rows for c < _AFFINE_GROUP_ROWS (an RGB input's Rescaling/Normalization: c =
    3): groups of _AFFINE_GROUP_ROWS rows are one run of 16c floats against scale and shift
    repeated 16 times, a loop the compiler vectorises; the per-row loop of 3 ran at ~1 ns
    an element (MobileNetV2's input, 0.13 ms).  Same multiply and add per element."""
    cdef float pat_s[_AFFINE_GROUP_ROWS * _AFFINE_GROUP_ROWS]
    cdef float pat_h[_AFFINE_GROUP_ROWS * _AFFINE_GROUP_ROWS]
    cdef Py_ssize_t run = _AFFINE_GROUP_ROWS * c, i, j, g, g0, g1
    for i in range(run):
        pat_s[i] = scale[i % c]
        pat_h[i] = shift[i % c] if shift != NULL else 0.0
    g0 = (r0 + _AFFINE_GROUP_ROWS - 1) // _AFFINE_GROUP_ROWS
    g1 = r1 // _AFFINE_GROUP_ROWS
    _affine_rows(y, x, c, scale, shift, r0, g0 * _AFFINE_GROUP_ROWS)
    for g in range(g0, g1):
        if shift == NULL:
            for j in range(run):
                y[g * run + j] = x[g * run + j] * pat_s[j]
        else:
            for j in range(run):
                y[g * run + j] = x[g * run + j] * pat_s[j] + pat_h[j]
    _affine_rows(y, x, c, scale, shift, g1 * _AFFINE_GROUP_ROWS, r1)


cdef void _affine_part(float* y, const float* x, Py_ssize_t rows, Py_ssize_t c,
                       const float* scale, const float* shift, Py_ssize_t part,
                       Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t r0, r1
    chunk_bounds(part, parts, rows, 16 if c == 1 else 1, &r0, &r1)
    if r1 > r0:
        _affine_rows(y, x, c, scale, shift, r0, r1)


cdef void _affine(float* y, const float* x, Py_ssize_t rows, Py_ssize_t c, const float* scale,
                  const float* shift, int nthreads) noexcept nogil:
    cdef Py_ssize_t part
    cdef int t = par_threads(rows * c, PAR_MIN_FLOATS, nthreads)
    if t > rows:
        t = <int>rows
    if t <= 1:
        _affine_rows(y, x, c, scale, shift, 0, rows)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _affine_part(y, x, rows, c, scale, shift, part, t)


cdef void scale_forward(float* y, const float* x, Py_ssize_t n, float scale,
                        int nthreads) noexcept nogil:
    """y[i] = x[i] * scale; overwrites y, which may be x.  Threads split the range."""
    _affine(y, x, n, 1, &scale, NULL, nthreads)


cdef void channel_affine_forward(float* y, const float* x, Py_ssize_t rows, Py_ssize_t c,
                                 const float* scale, const float* shift,
                                 int nthreads) noexcept nogil:
    """y[r, j] = x[r, j] * scale[j] + shift[j] over (rows, c); overwrites y, which may be x.
    Threads split the rows."""
    _affine(y, x, rows, c, scale, shift, nthreads)


cdef void channel_affine_backward(float* dx, const float* dy, Py_ssize_t rows, Py_ssize_t c,
                                  const float* scale, int nthreads) noexcept nogil:
    """dx[r, j] = dy[r, j] * scale[j] over (rows, c): the input gradient of
    channel_affine_forward (scale and shift frozen).  OVERWRITES dx, which may be dy."""
    _affine(dx, dy, rows, c, scale, NULL, nthreads)


cdef void prelu_forward(float* y, const float* x, const float* alpha, Py_ssize_t n,
                        Py_ssize_t per_sample, int rank, const Py_ssize_t* sample_shape,
                        const Py_ssize_t* alpha_strides, int nthreads) noexcept nogil:
    """Keras PReLU: y = max(x, 0) + alpha * min(x, 0); overwrites y, which may be x.

    x, y: n samples of per_sample = prod(sample_shape) floats (rank <= 6 axes after the
    batch); alpha is read through alpha_strides over the sample axes (0 on shared axes)
    and is the same for every sample: one binary_forward over (n, *sample_shape), alpha
    broadcast along the batch axis.
    """
    cdef Py_ssize_t shape[_GRAD_AXES]
    cdef Py_ssize_t xs[_GRAD_AXES]
    cdef Py_ssize_t als[_GRAD_AXES]
    cdef Py_ssize_t step = 1
    cdef int i
    shape[0] = n
    als[0] = 0
    for i in range(rank):
        shape[i + 1] = sample_shape[i]
        als[i + 1] = alpha_strides[i]
    for i in range(rank, -1, -1):
        xs[i] = step
        step *= shape[i]
    binary_forward(y, x, alpha, BIN_PRELU, rank + 1, shape, xs, als, nthreads)


# --- backward ---------------------------------------------------------------------------

cdef void _binary_grad_row(float* out, const float* dy, const float* a, Py_ssize_t sa,
                           const float* b, Py_ssize_t sb, Py_ssize_t n, int op,
                           int which) noexcept nogil:
    """out[i] = dL/da (which == 0) or dL/db (which == 1) at element i of a row of
    y = a op b, dy contiguous, in TensorFlow's formulas.  One branch-free loop per (op,
    operand): with a per-element op switch GCC vectorised nothing and the selects
    mispredicted (PReLU's backward of a 16x56x56x144 batch: 82 ms, now 7 ms; a
    squeeze-excite multiply 23 ms, now 6 ms); GCC's loop versioning for unit strides (-O3)
    vectorises the sa, sb == 1 rows."""
    cdef Py_ssize_t i
    cdef float g, av, bv
    cdef bint to_a
    if op == BIN_ADD or (op == BIN_SUB and which == 0):
        memcpy(out, dy, n * sizeof(float))
    elif op == BIN_SUB:
        for i in range(n): out[i] = -dy[i]
    elif op == BIN_MUL and which == 0:
        for i in range(n): out[i] = dy[i] * b[i * sb]
    elif op == BIN_MUL:
        for i in range(n): out[i] = dy[i] * a[i * sa]
    elif op == BIN_DIV and which == 0:
        for i in range(n): out[i] = dy[i] / b[i * sb]
    elif op == BIN_DIV:     # TF's _RealDivGrad order
        for i in range(n): out[i] = dy[i] * ((-a[i * sa] / b[i * sb]) / b[i * sb])
    # The selects below load every operand first: GCC if-converts (vectorises) a select
    # only when both arms are already loaded.
    elif op == BIN_MAX or op == BIN_MIN:
        for i in range(n):
            g = dy[i]
            av = a[i * sa]
            bv = b[i * sb]
            to_a = av >= bv if op == BIN_MAX else av <= bv
            out[i] = (g if to_a else 0) if which == 0 else (0 if to_a else g)
    # PReLU as Keras writes it, relu(a) - b * relu(-a), through TF's ReluGrad: dy times a
    # mask (a NaN dy stays NaN at a == 0, TF's dy*0 + (b*dy)*0), and relu(-a) = NaN for
    # a NaN a.
    elif which == 0:
        for i in range(n):
            av = a[i * sa]
            bv = b[i * sb]
            out[i] = dy[i] * (bv if av < 0 else (<float>1 if av > 0 else <float>0))
    else:
        for i in range(n):
            av = a[i * sa]
            out[i] = dy[i] * (<float>0 if av >= 0 else av)


cdef struct _Walk:
    # An odometer over some axes of the collapsed output, carrying the element offsets of
    # dy (contiguous), a and b at the current position.
    int r
    Py_ssize_t dims[_GRAD_AXES]
    Py_ssize_t sy[_GRAD_AXES]
    Py_ssize_t sa[_GRAD_AXES]
    Py_ssize_t sb[_GRAD_AXES]
    Py_ssize_t idx[_GRAD_AXES]
    Py_ssize_t oy, oa, ob


cdef inline bint _walk_next(_Walk* w) noexcept nogil:
    """Step to the next position (last axis fastest); False after the last one, with the
    offsets back at 0.  A walk over no axes has one position."""
    cdef int k = w.r - 1
    while k >= 0:
        w.idx[k] += 1
        w.oy += w.sy[k]
        w.oa += w.sa[k]
        w.ob += w.sb[k]
        if w.idx[k] < w.dims[k]:
            return True
        w.oy -= w.sy[k] * w.dims[k]
        w.oa -= w.sa[k] * w.dims[k]
        w.ob -= w.sb[k] * w.dims[k]
        w.idx[k] = 0
        k -= 1
    return False


cdef void _walk_split(const _Walk* full, int which, _Walk* kept, _Walk* red) noexcept nogil:
    """Split the outer axes of `full` (all but the innermost) into those the operand
    steps through (kept) and those it is broadcast along (red, summed over)."""
    cdef _Walk* to
    cdef int k, i
    kept.r = red.r = 0
    kept.oy = kept.oa = kept.ob = red.oy = red.oa = red.ob = 0
    for k in range(full.r - 1):
        to = kept if (full.sa[k] if which == 0 else full.sb[k]) != 0 else red
        i = to.r
        to.dims[i] = full.dims[k]
        to.sy[i] = full.sy[k]
        to.sa[i] = full.sa[k]
        to.sb[i] = full.sb[k]
        to.idx[i] = 0
        to.r += 1


cdef inline void _walk_seek(_Walk* w, Py_ssize_t pos) noexcept nogil:
    """Put the walk at its pos-th position (last axis fastest), as _walk_next reaches it."""
    cdef int k
    w.oy = w.oa = w.ob = 0
    for k in range(w.r - 1, -1, -1):
        w.idx[k] = pos % w.dims[k]
        pos //= w.dims[k]
        w.oy += w.idx[k] * w.sy[k]
        w.oa += w.idx[k] * w.sa[k]
        w.ob += w.idx[k] * w.sb[k]


cdef void _grad_columns(float* dx_row, const float* dy, const float* a, Py_ssize_t ia,
                        const float* b, Py_ssize_t ib, Py_ssize_t n, int op, int which,
                        _Walk* red, Py_ssize_t blk0, Py_ssize_t blk1) noexcept nogil:
    """dx_row[j] (j < n, the operand's innermost axis; blocks blk0..blk1 of _GRAD_CB
    columns) = sum over the positions of `red` of the gradient at column j; dy/a/b point
    at the row of red's first position."""
    cdef double acc[_GRAD_CB]
    cdef float g[_GRAD_CB]
    cdef Py_ssize_t blk, c0, nc, j
    for blk in range(blk0, blk1):
        c0 = blk * _GRAD_CB
        nc = min(<Py_ssize_t>_GRAD_CB, n - c0)
        if red.r == 0:          # nothing to sum: write the float terms directly
            _binary_grad_row(dx_row + c0, dy + c0, a + c0 * ia, ia, b + c0 * ib, ib, nc,
                             op, which)
            continue
        for j in range(nc):
            acc[j] = 0.0
        while True:
            _binary_grad_row(g, dy + red.oy + c0, a + red.oa + c0 * ia, ia,
                             b + red.ob + c0 * ib, ib, nc, op, which)
            for j in range(nc):
                acc[j] += g[j]
            if not _walk_next(red):
                break
        for j in range(nc):
            dx_row[c0 + j] = <float>acc[j]


cdef float _grad_total(const float* dy, const float* a, Py_ssize_t ia, const float* b,
                       Py_ssize_t ib, Py_ssize_t n, int op, int which,
                       _Walk* red) noexcept nogil:
    """Sum of the gradient over whole rows of n (the operand is broadcast along the
    innermost axis) at every position of `red`, in double lanes of _GRAD_CB."""
    cdef double acc[_GRAD_CB]
    cdef float g[_GRAD_CB]
    cdef double total = 0.0
    cdef Py_ssize_t blk, c0, nc, j, width = min(<Py_ssize_t>_GRAD_CB, n)
    for j in range(width):
        acc[j] = 0.0
    while True:
        for blk in range((n + _GRAD_CB - 1) // _GRAD_CB):
            c0 = blk * _GRAD_CB
            nc = min(<Py_ssize_t>_GRAD_CB, n - c0)
            _binary_grad_row(g, dy + red.oy + c0, a + red.oa + c0 * ia, ia,
                             b + red.ob + c0 * ib, ib, nc, op, which)
            for j in range(nc):
                acc[j] += g[j]
        if not _walk_next(red):
            break
    for j in range(width):
        total += acc[j]
    return <float>total


cdef struct _GradJob:
    # One operand's gradient: units are (kept position, block of _GRAD_CB columns).
    float* dx
    const float* dy
    const float* a
    const float* b
    int op, which
    Py_ssize_t n, ia, ib, col_blocks, units
    bint inner_kept
    _Walk kept
    _Walk red


cdef void _grad_unit(const _GradJob* jb, Py_ssize_t unit) noexcept nogil:
    """Unit `unit`: a kept position's dx (one element, or one block of its columns),
    summed over every broadcast position in order; the walks are copied, so units are
    independent."""
    cdef _Walk kept = jb.kept
    cdef _Walk red = jb.red
    cdef Py_ssize_t pos = unit // jb.col_blocks, blk = unit - pos * jb.col_blocks, ox
    _walk_seek(&kept, pos)
    ox = kept.oa if jb.which == 0 else kept.ob
    if jb.inner_kept:
        _grad_columns(jb.dx + ox, jb.dy + kept.oy, jb.a + kept.oa, jb.ia, jb.b + kept.ob, jb.ib,
                      jb.n, jb.op, jb.which, &red, blk, blk + 1)
    else:
        jb.dx[ox] = _grad_total(jb.dy + kept.oy, jb.a + kept.oa, jb.ia, jb.b + kept.ob, jb.ib,
                                jb.n, jb.op, jb.which, &red)


cdef void _grad_units(const _GradJob* jb, Py_ssize_t u0, Py_ssize_t u1) noexcept nogil:
    cdef Py_ssize_t u
    for u in range(u0, u1):
        _grad_unit(jb, u)


cdef void _grad_part(const _GradJob* jb, Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t u0, u1
    chunk_bounds(part, parts, jb.units, 1, &u0, &u1)
    _grad_units(jb, u0, u1)


cdef void _binary_grad_operand(float* dx, int which, const float* dy, const float* a,
                               const float* b, int op, const _Walk* full,
                               int nthreads) noexcept nogil:
    """One operand's gradient in its compact shape; overwrites dx.  Every element of dx is
    one position of the kept outer axes (times the innermost axis unless that is
    broadcast), written once, by one thread: threads take ranges of units."""
    cdef _GradJob jb
    cdef int r = full.r, k, t
    cdef Py_ssize_t total = 1, part
    jb.dx, jb.dy, jb.a, jb.b, jb.op, jb.which = dx, dy, a, b, op, which
    jb.n, jb.ia, jb.ib = full.dims[r - 1], full.sa[r - 1], full.sb[r - 1]
    jb.inner_kept = (jb.ia if which == 0 else jb.ib) != 0
    _walk_split(full, which, &jb.kept, &jb.red)
    jb.col_blocks = (jb.n + _GRAD_CB - 1) // _GRAD_CB if jb.inner_kept else 1
    jb.units = jb.col_blocks
    for k in range(jb.kept.r):
        jb.units *= jb.kept.dims[k]
    for k in range(r):
        total *= full.dims[k]
    t = par_threads(total, PAR_MIN_FLOATS, nthreads)
    if t > jb.units:
        t = <int>jb.units
    if t <= 1:
        _grad_units(&jb, 0, jb.units)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _grad_part(&jb, part, t)


cdef void binary_backward(float* da, float* db, const float* dy, const float* a,
                          const float* b, int op, int rank, const Py_ssize_t* shape,
                          const Py_ssize_t* a_strides, const Py_ssize_t* b_strides,
                          int nthreads) noexcept nogil:
    """Gradients of y = a op b (binary_forward's geometry) given dy (contiguous, `shape`):
    da and db in a's and b's compact shapes, summed over their broadcast axes (in double).
    OVERWRITES da and db; either may be NULL (not needed).  a_strides / b_strides must be
    the operands' compact broadcast strides.  rank <= _GRAD_AXES (7: prelu_backward adds
    the batch axis).  No output may overlap an input or the other output."""
    cdef _Walk full
    cdef Py_ssize_t step = 1
    cdef int k
    full.r = _collapse_axes(rank, shape, a_strides, b_strides, full.dims, full.sa, full.sb)
    for k in range(full.r - 1, -1, -1):
        full.sy[k] = step
        full.idx[k] = 0
        step *= full.dims[k]
    full.oy = full.oa = full.ob = 0
    if da != NULL:
        _binary_grad_operand(da, 0, dy, a, b, op, &full, nthreads)
    if db != NULL:
        _binary_grad_operand(db, 1, dy, a, b, op, &full, nthreads)


cdef void prelu_backward(float* dx, float* dalpha, const float* dy, const float* x,
                         const float* alpha, Py_ssize_t n, Py_ssize_t per_sample, int rank,
                         const Py_ssize_t* sample_shape, const Py_ssize_t* alpha_strides,
                         int nthreads) noexcept nogil:
    """Gradients of Keras PReLU (prelu_forward's geometry) given dy: dx = dy where x > 0,
    alpha * dy where x < 0, 0 where x == 0 (TF's relu gradient); dalpha = sum over the
    batch and the shared axes of dy * min(x, 0), in double.  OVERWRITES dx and dalpha;
    either may be NULL.  alpha_strides must be compact; no output may overlap an input."""
    cdef Py_ssize_t shape[_GRAD_AXES]
    cdef Py_ssize_t xs[_GRAD_AXES]
    cdef Py_ssize_t als[_GRAD_AXES]
    cdef int i
    shape[0] = n                # the batch axis, along which alpha is shared
    xs[0] = per_sample
    als[0] = 0
    for i in range(rank):
        shape[i + 1] = sample_shape[i]
        als[i + 1] = alpha_strides[i]
    for i in range(rank, 0, -1):
        xs[i] = 1 if i == rank else xs[i + 1] * shape[i + 1]
    binary_backward(dx, dalpha, dy, x, alpha, BIN_PRELU, rank + 1, shape, xs, als, nthreads)


# --- checked Python entry points --------------------------------------------------------

cdef Py_ssize_t _check_strided_operand(const float[::1] buf, tuple shape, tuple strides,
                                       str what) except -1:
    """Validate strides against shape and the buffer; return the highest offset read."""
    cdef Py_ssize_t last = 0, i
    _require(len(strides) == len(shape), f"binary: {what} has {len(strides)} strides for rank {len(shape)}")
    for i in range(len(shape)):
        _require(strides[i] >= 0, f"binary: {what} stride {strides[i]} is negative")
        last += (shape[i] - 1) * strides[i]
    _require(last < buf.shape[0],
             f"binary: {what} strides {strides} reach element {last}, buffer has {buf.shape[0]}")
    return last


cdef bint _same_or_disjoint(float[::1] y, const float[::1] src, tuple shape,
                            tuple strides, Py_ssize_t last) except *:
    """y may be src itself when src is contiguous with y's shape; else they must not overlap."""
    cdef tuple contiguous = tuple(_contiguous_strides(shape))
    if &y[0] == &src[0] and strides == contiguous:
        return True
    return not _overlap(&y[0], y.shape[0] * 4, &src[0], (last + 1) * 4)


def _contiguous_strides(shape):
    out, step = [], 1
    for d in reversed(shape):
        out.append(step)
        step *= d
    return out[::-1]


def binary(const float[::1] a, const float[::1] b, float[::1] y, int op, shape, a_strides,
           b_strides, int nthreads=1):
    """y = a op b with broadcasting (BINARY_OPS codes); overwrites y.

    y is contiguous of `shape` (rank 1..6); a and b are flat buffers read through element
    strides (0 on broadcast axes), e.g. numpy strides // 4 of np.broadcast_to(arr, shape).
    """
    cdef Py_ssize_t c_shape[_MAX_RANK]
    cdef Py_ssize_t c_sa[_MAX_RANK]
    cdef Py_ssize_t c_sb[_MAX_RANK]
    cdef Py_ssize_t total = 1, la, lb
    cdef int rank = len(shape), i
    shape, a_strides, b_strides = tuple(shape), tuple(a_strides), tuple(b_strides)
    _require(0 <= op <= BIN_MIN, f"binary: unknown op {op}")
    _require(1 <= rank <= _MAX_RANK, f"binary: rank {rank} not in 1..{_MAX_RANK}")
    for i in range(rank):
        _require(shape[i] >= 1, f"binary: empty shape {shape}")
        total *= shape[i]
    _require(y.shape[0] == total, f"binary: y has {y.shape[0]} elements, shape {shape} needs {total}")
    la = _check_strided_operand(a, shape, a_strides, "a")
    lb = _check_strided_operand(b, shape, b_strides, "b")
    _require(_same_or_disjoint(y, a, shape, a_strides, la), "binary: y overlaps a broadcast a")
    _require(_same_or_disjoint(y, b, shape, b_strides, lb), "binary: y overlaps a broadcast b")
    for i in range(rank):
        c_shape[i], c_sa[i], c_sb[i] = shape[i], a_strides[i], b_strides[i]
    with nogil:
        binary_forward(&y[0], &a[0], &b[0], op, rank, c_shape, c_sa, c_sb, nthreads)


def scale(const float[::1] x, float[::1] y, float s, int nthreads=1):
    """y = x * s; overwrites y, which may be x."""
    _require(x.shape[0] == y.shape[0] and x.shape[0] > 0,
             f"scale: x has {x.shape[0]} elements, y {y.shape[0]}")
    _require(&y[0] == &x[0] or not _overlap(&y[0], y.nbytes, &x[0], x.nbytes),
             "scale: y partially overlaps x")
    with nogil:
        scale_forward(&y[0], &x[0], x.shape[0], s, nthreads)


def channel_affine(const float[:, ::1] x, const float[::1] scale, const float[::1] shift,
                   float[:, ::1] y, int nthreads=1):
    """y[r, c] = x[r, c] * scale[c] + shift[c] for x viewed as (rows, C); overwrites y,
    which may be x."""
    cdef Py_ssize_t rows = x.shape[0], c = x.shape[1]
    _require(rows > 0 and c > 0, f"channel_affine: empty input {tuple(x.shape)[:2]}")
    _require(scale.shape[0] == c and shift.shape[0] == c,
             f"channel_affine: scale/shift have {scale.shape[0]}/{shift.shape[0]} values, C = {c}")
    _require(y.shape[0] == rows and y.shape[1] == c,
             f"channel_affine: y is {tuple(y.shape)[:2]}, expected {(rows, c)}")
    _require(&y[0, 0] == &x[0, 0] or not _overlap(&y[0, 0], y.nbytes, &x[0, 0], x.nbytes),
             "channel_affine: y partially overlaps x")
    with nogil:
        channel_affine_forward(&y[0, 0], &x[0, 0], rows, c, &scale[0], &shift[0], nthreads)


def channel_affine_grad(const float[:, ::1] dy, const float[::1] scale, float[:, ::1] dx,
                        int nthreads=1):
    """dx[r, c] = dy[r, c] * scale[c] (input gradient of channel_affine); overwrites dx,
    which may be dy."""
    cdef Py_ssize_t rows = dy.shape[0], c = dy.shape[1]
    _require(rows > 0 and c > 0, f"channel_affine_grad: empty input {tuple(dy.shape)[:2]}")
    _require(scale.shape[0] == c, f"channel_affine_grad: scale has {scale.shape[0]} values, C = {c}")
    _require(dx.shape[0] == rows and dx.shape[1] == c,
             f"channel_affine_grad: dx is {tuple(dx.shape)[:2]}, expected {(rows, c)}")
    _require(&dx[0, 0] == &dy[0, 0] or not _overlap(&dx[0, 0], dx.nbytes, &dy[0, 0], dy.nbytes),
             "channel_affine_grad: dx partially overlaps dy")
    _require(not _overlap(&dx[0, 0], dx.nbytes, &scale[0], scale.nbytes),
             "channel_affine_grad: dx overlaps scale")
    with nogil:
        channel_affine_backward(&dx[0, 0], &dy[0, 0], rows, c, &scale[0], nthreads)


def prelu(const float[::1] x, const float[::1] alpha, float[::1] y, sample_shape,
          alpha_strides, int nthreads=1):
    """Keras PReLU over x = n samples of `sample_shape` (flat); alpha read through
    alpha_strides (0 on shared axes).  Overwrites y, which may be x."""
    cdef Py_ssize_t c_shape[_MAX_RANK]
    cdef Py_ssize_t c_sa[_MAX_RANK]
    cdef Py_ssize_t per_sample = 1, last = 0
    cdef int rank = len(sample_shape), i
    sample_shape, alpha_strides = tuple(sample_shape), tuple(alpha_strides)
    _require(1 <= rank <= _MAX_RANK and len(alpha_strides) == rank,
             f"prelu: sample rank {rank} (1..{_MAX_RANK}) with {len(alpha_strides)} alpha strides")
    for i in range(rank):
        _require(sample_shape[i] >= 1 and alpha_strides[i] >= 0,
                 f"prelu: bad sample shape {sample_shape} or alpha strides {alpha_strides}")
        per_sample *= sample_shape[i]
        last += (sample_shape[i] - 1) * alpha_strides[i]
        c_shape[i], c_sa[i] = sample_shape[i], alpha_strides[i]
    _require(x.shape[0] > 0 and x.shape[0] % per_sample == 0,
             f"prelu: x has {x.shape[0]} elements, not a whole number of {sample_shape} samples")
    _require(y.shape[0] == x.shape[0], f"prelu: y has {y.shape[0]} elements, x {x.shape[0]}")
    _require(last < alpha.shape[0],
             f"prelu: alpha strides {alpha_strides} reach element {last}, alpha has {alpha.shape[0]}")
    _require(&y[0] == &x[0] or not _overlap(&y[0], y.nbytes, &x[0], x.nbytes),
             "prelu: y partially overlaps x")
    _require(not _overlap(&y[0], y.nbytes, &alpha[0], alpha.nbytes), "prelu: y overlaps alpha")
    with nogil:
        prelu_forward(&y[0], &x[0], &alpha[0], x.shape[0] // per_sample, per_sample, rank,
                      c_shape, c_sa, nthreads)


cdef Py_ssize_t _compact_size(tuple shape, tuple strides, str what) except -1:
    """Elements of an operand read through `strides` over `shape`, which must be its
    compact broadcast strides: 0 on broadcast axes, C order over the others (any stride
    on a size-1 axis)."""
    cdef Py_ssize_t size = 1, i
    _require(len(strides) == len(shape), f"{what} has {len(strides)} strides for rank {len(shape)}")
    for i in range(len(shape) - 1, -1, -1):
        if shape[i] == 1 or strides[i] == 0:
            continue
        _require(strides[i] == size,
                 f"{what} strides {strides} are not compact broadcast strides over {shape}")
        size *= shape[i]
    return size


cdef Py_ssize_t _grad_shape(tuple shape, Py_ssize_t* c_shape, str name) except -1:
    """Copy a rank 1..6 shape of sizes >= 1 into c_shape; return its element count."""
    cdef Py_ssize_t total = 1, i
    _require(1 <= len(shape) <= _MAX_RANK, f"{name}: rank {len(shape)} not in 1..{_MAX_RANK}")
    for i in range(len(shape)):
        _require(shape[i] >= 1, f"{name}: empty shape {shape}")
        c_shape[i] = shape[i]
        total *= shape[i]
    return total


def binary_grad(const float[::1] a, const float[::1] b, const float[::1] dy, da, db, int op,
                shape, a_strides, b_strides, int nthreads=1):
    """Gradients of binary(a, b, y, op, shape, a_strides, b_strides) given dy (contiguous,
    `shape`): da (len(a),) and db (len(b),), each summed over its operand's broadcast axes;
    overwrites each given output (flat float32, or None when not needed).  a and b are
    compact: the strides must be their compact broadcast strides (numpy strides // 4 of
    np.broadcast_to(arr, shape) for a C-contiguous arr)."""
    cdef Py_ssize_t c_shape[_MAX_RANK]
    cdef Py_ssize_t c_sa[_MAX_RANK]
    cdef Py_ssize_t c_sb[_MAX_RANK]
    cdef Py_ssize_t total, na, nb, i
    cdef int rank = len(shape)
    cdef _Span outs[2]
    cdef _Span ins[3]
    cdef float* dap
    cdef float* dbp
    shape, a_strides, b_strides = tuple(shape), tuple(a_strides), tuple(b_strides)
    _require(0 <= op <= BIN_MIN, f"binary_grad: unknown op {op}")
    total = _grad_shape(shape, c_shape, "binary_grad")
    na = _compact_size(shape, a_strides, "binary_grad: a")
    nb = _compact_size(shape, b_strides, "binary_grad: b")
    _require(dy.shape[0] == total,
             f"binary_grad: dy has {dy.shape[0]} elements, shape {shape} needs {total}")
    _require(a.shape[0] == na and b.shape[0] == nb,
             f"binary_grad: a has {a.shape[0]} and b {b.shape[0]} elements, expected {na} and {nb}")
    dap = _optional_out(da, (na,), "binary_grad: da", &outs[0])
    dbp = _optional_out(db, (nb,), "binary_grad: db", &outs[1])
    ins[0] = _span(&a[0], a.nbytes)
    ins[1] = _span(&b[0], b.nbytes)
    ins[2] = _span(&dy[0], dy.nbytes)
    _require_disjoint(outs, 2, ("da", "db"), ins, 3, ("a", "b", "dy"), "binary_grad")
    for i in range(rank):
        c_sa[i] = a_strides[i]
        c_sb[i] = b_strides[i]
    with nogil:
        binary_backward(dap, dbp, &dy[0], &a[0], &b[0], op, rank, c_shape, c_sa, c_sb, nthreads)


def prelu_grad(const float[::1] x, const float[::1] alpha, const float[::1] dy, dx, dalpha,
               sample_shape, alpha_strides, int nthreads=1):
    """Gradients of prelu(x, alpha, y, sample_shape, alpha_strides) given dy: dx (len(x),)
    and dalpha (len(alpha),), summed over the batch and the shared axes; overwrites each
    given output (flat float32, or None).  alpha_strides must be alpha's compact broadcast
    strides over sample_shape."""
    cdef Py_ssize_t c_shape[_MAX_RANK]
    cdef Py_ssize_t c_sa[_MAX_RANK]
    cdef Py_ssize_t per_sample, n_alpha, i
    cdef int rank = len(sample_shape)
    cdef _Span outs[2]
    cdef _Span ins[3]
    cdef float* dxp
    cdef float* dap
    sample_shape, alpha_strides = tuple(sample_shape), tuple(alpha_strides)
    per_sample = _grad_shape(sample_shape, c_shape, "prelu_grad")
    n_alpha = _compact_size(sample_shape, alpha_strides, "prelu_grad: alpha")
    _require(x.shape[0] > 0 and x.shape[0] % per_sample == 0,
             f"prelu_grad: x has {x.shape[0]} elements, not whole {sample_shape} samples")
    _require(dy.shape[0] == x.shape[0],
             f"prelu_grad: dy has {dy.shape[0]} elements, x {x.shape[0]}")
    _require(alpha.shape[0] == n_alpha,
             f"prelu_grad: alpha has {alpha.shape[0]} elements, expected {n_alpha}")
    dxp = _optional_out(dx, (x.shape[0],), "prelu_grad: dx", &outs[0])
    dap = _optional_out(dalpha, (n_alpha,), "prelu_grad: dalpha", &outs[1])
    ins[0] = _span(&x[0], x.nbytes)
    ins[1] = _span(&alpha[0], alpha.nbytes)
    ins[2] = _span(&dy[0], dy.nbytes)
    _require_disjoint(outs, 2, ("dx", "dalpha"), ins, 3, ("x", "alpha", "dy"), "prelu_grad")
    for i in range(rank):
        c_sa[i] = alpha_strides[i]
    with nogil:
        prelu_backward(dxp, dap, &dy[0], &x[0], &alpha[0], x.shape[0] // per_sample,
                       per_sample, rank, c_shape, c_sa, nthreads)
