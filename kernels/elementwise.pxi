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
# Non-goals: integer dtypes, negative strides, rank > 6.

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


cdef inline float _binop(int op, float a, float b) noexcept nogil:
    # Ternaries for max/min/prelu, as in the vector loops below, so every path agrees.
    if op == BIN_ADD:
        return a + b
    elif op == BIN_SUB:
        return a - b
    elif op == BIN_MUL:
        return a * b
    elif op == BIN_DIV:
        return a / b
    elif op == BIN_MAX:
        return a if a > b else b
    elif op == BIN_MIN:
        return a if a < b else b
    return (a if a > 0 else 0) + b * (a if a < 0 else 0)


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
        for i in range(n): y[i] = a[i] if a[i] > b[i] else b[i]
    elif op == BIN_MIN:
        for i in range(n): y[i] = a[i] if a[i] < b[i] else b[i]
    else:
        for i in range(n): y[i] = (a[i] if a[i] > 0 else 0) + b[i] * (a[i] if a[i] < 0 else 0)


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
        for i in range(n): y[i] = a[i] if a[i] > s else s
    elif op == BIN_MIN:
        for i in range(n): y[i] = a[i] if a[i] < s else s
    else:
        for i in range(n): y[i] = (a[i] if a[i] > 0 else 0) + s * (a[i] if a[i] < 0 else 0)


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
    """Write the collapsed shape and strides (outermost first) and return its rank >= 1."""
    cdef Py_ssize_t rd[_MAX_RANK]
    cdef Py_ssize_t ra[_MAX_RANK]
    cdef Py_ssize_t rb[_MAX_RANK]
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


cdef void binary_forward(float* y, const float* a, const float* b, int op, int rank,
                         const Py_ssize_t* shape, const Py_ssize_t* a_strides,
                         const Py_ssize_t* b_strides) noexcept nogil:
    """y = a op b with broadcasting; overwrites y (contiguous, `shape`, rank 1..6).

    a and b are read at element offsets sum(index[i] * strides[i]) (stride 0 on broadcast
    axes).  y may be a or b only where that operand is contiguous with y's shape.
    """
    cdef Py_ssize_t dims[_MAX_RANK]
    cdef Py_ssize_t sa[_MAX_RANK]
    cdef Py_ssize_t sb[_MAX_RANK]
    cdef Py_ssize_t idx[_MAX_RANK]
    cdef int r = _collapse_axes(rank, shape, a_strides, b_strides, dims, sa, sb)
    cdef Py_ssize_t inner = dims[r - 1], rows = 1, row, ao = 0, bo = 0
    cdef int k
    for k in range(r - 1):
        rows *= dims[k]
        idx[k] = 0
    for row in range(rows):
        _binary_row(y + row * inner, a + ao, sa[r - 1], b + bo, sb[r - 1], inner, op)
        k = r - 2       # odometer over the outer axes
        while k >= 0:
            idx[k] += 1
            ao += sa[k]
            bo += sb[k]
            if idx[k] < dims[k]:
                break
            ao -= sa[k] * dims[k]
            bo -= sb[k] * dims[k]
            idx[k] = 0
            k -= 1


cdef void scale_forward(float* y, const float* x, Py_ssize_t n, float scale) noexcept nogil:
    """y[i] = x[i] * scale; overwrites y, which may be x."""
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = x[i] * scale


cdef void channel_affine_forward(float* y, const float* x, Py_ssize_t rows, Py_ssize_t c,
                                 const float* scale, const float* shift) noexcept nogil:
    """y[r, j] = x[r, j] * scale[j] + shift[j] over (rows, c); overwrites y, which may be x."""
    cdef Py_ssize_t r, j
    cdef float* yr
    cdef const float* xr
    for r in range(rows):
        yr = y + r * c
        xr = x + r * c
        for j in range(c):
            yr[j] = xr[j] * scale[j] + shift[j]


cdef void channel_affine_backward(float* dx, const float* dy, Py_ssize_t rows, Py_ssize_t c,
                                  const float* scale) noexcept nogil:
    """dx[r, j] = dy[r, j] * scale[j] over (rows, c): the input gradient of
    channel_affine_forward (scale and shift frozen).  OVERWRITES dx, which may be dy."""
    cdef Py_ssize_t r, j
    cdef float* dxr
    cdef const float* dyr
    for r in range(rows):
        dxr = dx + r * c
        dyr = dy + r * c
        for j in range(c):
            dxr[j] = dyr[j] * scale[j]


cdef void prelu_forward(float* y, const float* x, const float* alpha, Py_ssize_t n,
                        Py_ssize_t per_sample, int rank, const Py_ssize_t* sample_shape,
                        const Py_ssize_t* alpha_strides) noexcept nogil:
    """Keras PReLU: y = max(x, 0) + alpha * min(x, 0); overwrites y, which may be x.

    x, y: n samples of per_sample = prod(sample_shape) floats (rank <= 6 axes after the
    batch); alpha is read through alpha_strides over the sample axes (0 on shared axes)
    and is the same for every sample.
    """
    cdef Py_ssize_t xs[_MAX_RANK]
    cdef Py_ssize_t bi, step = 1
    cdef int i
    for i in range(rank - 1, -1, -1):
        xs[i] = step
        step *= sample_shape[i]
    for bi in range(n):
        binary_forward(y + bi * per_sample, x + bi * per_sample, alpha, BIN_PRELU, rank,
                       sample_shape, xs, alpha_strides)


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
           b_strides):
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
        binary_forward(&y[0], &a[0], &b[0], op, rank, c_shape, c_sa, c_sb)


def scale(const float[::1] x, float[::1] y, float s):
    """y = x * s; overwrites y, which may be x."""
    _require(x.shape[0] == y.shape[0] and x.shape[0] > 0,
             f"scale: x has {x.shape[0]} elements, y {y.shape[0]}")
    _require(&y[0] == &x[0] or not _overlap(&y[0], y.nbytes, &x[0], x.nbytes),
             "scale: y partially overlaps x")
    with nogil:
        scale_forward(&y[0], &x[0], x.shape[0], s)


def channel_affine(const float[:, ::1] x, const float[::1] scale, const float[::1] shift,
                   float[:, ::1] y):
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
        channel_affine_forward(&y[0, 0], &x[0, 0], rows, c, &scale[0], &shift[0])


def channel_affine_grad(const float[:, ::1] dy, const float[::1] scale, float[:, ::1] dx):
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
        channel_affine_backward(&dx[0, 0], &dy[0, 0], rows, c, &scale[0])


def prelu(const float[::1] x, const float[::1] alpha, float[::1] y, sample_shape,
          alpha_strides):
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
                      c_shape, c_sa)
