# Softmax over one axis of a tensor viewed as (outer, n, inner).
#
# y = exp(x - max) / sum(exp(x - max)) along the middle axis, as Keras computes it (the
# max is subtracted so exp never overflows).  inner == 1 (softmax over the last axis, the
# classifier head) is the fast path: contiguous passes over each row (max, clamp, exp, sum,
# scale).  Other axes take up to _SM_LANES adjacent inner positions at once, so every loop
# still runs over contiguous memory.  exp is _exp_nonpos, a branch-free polynomial GCC
# vectorises (glibc's expf is a call per element); sums are accumulated in double.
# y may alias x: each pass reads x[i] before it writes y[i], later passes read only y.
# softmax_backward: dx = y * (dy - sum(dy * y)) along the same axis, TF's SoftmaxGrad
# ((dy - sum) * y, the sum in double here), over the same two paths.
# NaN: a NaN or +inf logit, or a slice of -inf only, makes its whole slice NaN (its term,
# hence the sum, is NaN), and a NaN y or dy the whole slice of dx, as TF's Eigen kernels
# compute them (TF 2.21 with TF_ENABLE_ONEDNN_OPTS=0, and on aarch64).  The x86 oneDNN
# softmax TF uses by default gives NaN at the NaN logits and 0 elsewhere in the slice
# instead; we follow the portable kernel.  The -88 clamp keeps a NaN (`v < -88` is false).
# Non-goals: masking, log_softmax (add beside this when a loss needs it).

from libc.stdint cimport int32_t, uint32_t

cdef enum:
    _SM_LANES = 64      # inner positions per block of the strided path (stack arrays)


cdef union _F32Bits:
    float f
    int32_t i


cdef inline float _exp_nonpos(float x) noexcept nogil:
    """e^x for -88 <= x <= 0 (callers clamp), within ~1 ulp above FLT_MIN, and exactly 0
    below about -87.7 (as TF's float exp, which flushes there): Cephes expf's range reduction
    and polynomial as straight-line float arithmetic with no call and no branch, so loops
    of it vectorise.  glibc's expf is a call per element (measured 3.4 ns each on the
    x86-64 runner, 3.6x slower than NumPy's SIMD exp over a 32x1000 softmax).  A NaN x
    gives NaN: r and p are NaN whatever bits `scale` gets."""
    cdef _F32Bits t, scale
    cdef float n, r, p
    # Adding 1.5 * 2^23 rounds x*log2(e) to the nearest integer n, which then sits in the
    # low mantissa bits of t (float has no vectorisable round() on baseline SSE2).
    t.f = x * <float>1.44269504088896341 + <float>12582912.0
    n = t.f - <float>12582912.0
    r = (x - n * <float>0.693359375) - n * <float>-2.12194440e-4     # ln 2 in two parts
    p = <float>1.9875691500e-4
    p = p * r + <float>1.3981999507e-3
    p = p * r + <float>8.3334519073e-3
    p = p * r + <float>4.1665795894e-2
    p = p * r + <float>1.6666665459e-1
    p = p * r + <float>5.0000001201e-1
    # 2^n from its exponent bits; n >= -127 because x >= -88: 2^n is a normal float, or
    # for n = -127 the all-zero bits, 0.0, so e^x < ~FLT_MIN / 2 comes out as exactly 0.
    # The shift is unsigned: for a NaN x the bits overflow (a signed shift would be UB).
    scale.i = <int32_t>(<uint32_t>(t.i - 0x4B400000 + 127) << 23)
    return (p * r * r + r + <float>1.0) * scale.f


cdef inline float _max_of(const float* x, Py_ssize_t n) noexcept nogil:
    """max(x[:n]), n >= 1, with 8 independent lanes so the loop vectorises."""
    cdef float lane[8]
    cdef float m, v
    cdef Py_ssize_t q, j, i
    if n < 8:
        m = x[0]
        for i in range(1, n):
            m = x[i] if x[i] > m else m
        return m
    for j in range(8):
        lane[j] = x[j]
    for q in range(1, n // 8):
        for j in range(8):
            v = x[8 * q + j]
            lane[j] = v if v > lane[j] else lane[j]
    m = lane[0]
    for j in range(1, 8):
        m = lane[j] if lane[j] > m else m
    for i in range(n // 8 * 8, n):
        m = x[i] if x[i] > m else m
    return m


cdef void _softmax_row(float* y, const float* x, Py_ssize_t n) noexcept nogil:
    """Softmax of the contiguous x[:n] into y[:n] (y may be x)."""
    cdef float m = _max_of(x, n), v, inv
    cdef Py_ssize_t i
    # Clamp and exponentiate in separate loops: with the clamp select feeding arithmetic in
    # one loop, GCC sinks the arithmetic into the branches and gives up vectorising.
    # Terms below ~e^-87.7 (under FLT_MIN, after a max-subtraction) come out as exactly 0,
    # as in TF, whose float exp flushes them; so does a -inf logit among finite ones.
    for i in range(n):
        v = x[i] - m
        y[i] = -88 if v < -88 else v
    for i in range(n):
        y[i] = _exp_nonpos(y[i])
    inv = <float>(1.0 / _sum4(y, n, 0.0, False))      # _sum4: normalization.pxi
    for i in range(n):
        y[i] *= inv


cdef void _softmax_lanes(float* y, const float* x, Py_ssize_t n, Py_ssize_t inner,
                         Py_ssize_t lanes) noexcept nogil:
    """Softmax along the stride-`inner` axis for `lanes` <= _SM_LANES adjacent positions at
    once: every loop runs over the contiguous lanes, so it vectorises and stays in cache."""
    cdef float m[_SM_LANES]
    cdef double s[_SM_LANES]
    cdef float inv[_SM_LANES]
    cdef Py_ssize_t i, j
    cdef float v
    cdef float* yr
    cdef const float* xr
    for j in range(lanes):
        m[j] = x[j]
        s[j] = 0.0
    for i in range(1, n):
        xr = x + i * inner
        for j in range(lanes):
            m[j] = xr[j] if xr[j] > m[j] else m[j]
    for i in range(n):
        xr = x + i * inner
        yr = y + i * inner
        for j in range(lanes):
            v = xr[j] - m[j]
            yr[j] = -88 if v < -88 else v
        for j in range(lanes):
            yr[j] = _exp_nonpos(yr[j])
        for j in range(lanes):
            s[j] += yr[j]
    for j in range(lanes):
        inv[j] = <float>(1.0 / s[j])
    for i in range(n):
        yr = y + i * inner
        for j in range(lanes):
            yr[j] *= inv[j]


cdef inline Py_ssize_t _sm_units(Py_ssize_t outer, Py_ssize_t inner) noexcept nogil:
    # Work units: rows (inner == 1), else (outer, block of _SM_LANES lanes) pairs.
    return outer if inner == 1 else outer * ((inner + _SM_LANES - 1) // _SM_LANES)


cdef void _softmax_units(float* y, const float* x, Py_ssize_t outer, Py_ssize_t n,
                         Py_ssize_t inner, Py_ssize_t u0, Py_ssize_t u1,
                         bint backward, const float* yb) noexcept nogil:
    """Units u0..u1 of softmax_forward (y = softmax(x)) or, with backward, of
    softmax_backward (y = dx, x = dy, yb = the forward output)."""
    cdef Py_ssize_t u, o, j0, blocks = (inner + _SM_LANES - 1) // _SM_LANES, base
    for u in range(u0, u1):
        if inner == 1:
            if backward:
                _softmax_backward_row(y + u * n, x + u * n, yb + u * n, n)
            else:
                _softmax_row(y + u * n, x + u * n, n)
            continue
        o = u // blocks
        j0 = (u - o * blocks) * _SM_LANES
        base = o * n * inner + j0
        if backward:
            _softmax_backward_lanes(y + base, x + base, yb + base, n, inner,
                                    min(<Py_ssize_t>_SM_LANES, inner - j0))
        else:
            _softmax_lanes(y + base, x + base, n, inner, min(<Py_ssize_t>_SM_LANES, inner - j0))


cdef void _softmax_part(float* y, const float* x, Py_ssize_t outer, Py_ssize_t n,
                        Py_ssize_t inner, bint backward, const float* yb, Py_ssize_t part,
                        Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t u0, u1
    chunk_bounds(part, parts, _sm_units(outer, inner), 1, &u0, &u1)
    _softmax_units(y, x, outer, n, inner, u0, u1, backward, yb)


cdef void _softmax_run(float* y, const float* x, Py_ssize_t outer, Py_ssize_t n,
                       Py_ssize_t inner, bint backward, const float* yb,
                       int nthreads) noexcept nogil:
    # exp costs ~20 flops an element: a thread is worth it from a quarter of the copies' size.
    cdef Py_ssize_t units = _sm_units(outer, inner), part
    cdef int t = par_threads(outer * n * inner, PAR_MIN_FLOATS // 4, nthreads)
    if t > units:
        t = <int>units
    if t <= 1:
        _softmax_units(y, x, outer, n, inner, 0, units, backward, yb)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _softmax_part(y, x, outer, n, inner, backward, yb, part, t)


cdef void softmax_forward(float* y, const float* x, Py_ssize_t outer, Py_ssize_t n,
                          Py_ssize_t inner, int nthreads) noexcept nogil:
    """y = softmax(x) over the middle axis of the (outer, n, inner) view; overwrites y.

    y may be x.  n >= 1.  Needs no scratch (the strided path uses stack arrays).  Threads
    split the rows (or blocks of lanes); each slice is computed alone, so the same bits.
    """
    _softmax_run(y, x, outer, n, inner, False, NULL, nthreads)


cdef void _softmax_backward_row(float* dx, const float* dy, const float* y,
                                Py_ssize_t n) noexcept nogil:
    cdef double acc = 0.0
    cdef float s
    cdef Py_ssize_t i
    for i in range(n):
        acc += <double>dy[i] * y[i]
    s = <float>acc
    for i in range(n):
        dx[i] = (dy[i] - s) * y[i]


cdef void _softmax_backward_lanes(float* dx, const float* dy, const float* y, Py_ssize_t n,
                                  Py_ssize_t inner, Py_ssize_t lanes) noexcept nogil:
    cdef double acc[_SM_LANES]
    cdef float s[_SM_LANES]
    cdef Py_ssize_t i, j, o
    for j in range(lanes):
        acc[j] = 0.0
    for i in range(n):
        o = i * inner
        for j in range(lanes):
            acc[j] += <double>dy[o + j] * y[o + j]
    for j in range(lanes):
        s[j] = <float>acc[j]
    for i in range(n):
        o = i * inner
        for j in range(lanes):
            dx[o + j] = (dy[o + j] - s[j]) * y[o + j]


cdef void softmax_backward(float* dx, const float* dy, const float* y, Py_ssize_t outer,
                           Py_ssize_t n, Py_ssize_t inner, int nthreads) noexcept nogil:
    """Gradient of softmax_forward over the middle axis of (outer, n, inner), from its
    output y: dx = (dy - sum(dy * y)) * y.  OVERWRITES dx, which may be dy or y (each
    slice's sum is taken before any of it is written).  Threads as the forward."""
    _softmax_run(dx, dy, outer, n, inner, True, y, nthreads)


# --- checked Python entry point ---------------------------------------------------------

def softmax(const float[:, :, ::1] x, float[:, :, ::1] y, int nthreads=1):
    """y = softmax(x) over axis 1 of the (outer, n, inner) arrays; overwrites y.

    Reshape an N-d tensor to (prod(shape[:axis]), shape[axis], prod(shape[axis+1:])) first.
    y may be the same array as x (in place), but must not partially overlap it.
    """
    cdef Py_ssize_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2]
    _require(outer > 0 and n > 0 and inner > 0, f"softmax: empty input {tuple(x.shape)[:3]}")
    _require((y.shape[0], y.shape[1], y.shape[2]) == (outer, n, inner),
             f"softmax: y is {tuple(y.shape)[:3]}, expected {(outer, n, inner)}")
    _require(&y[0, 0, 0] == &x[0, 0, 0]
             or not _overlap(&y[0, 0, 0], y.nbytes, &x[0, 0, 0], x.nbytes),
             "softmax: y partially overlaps x")
    with nogil:
        softmax_forward(&y[0, 0, 0], &x[0, 0, 0], outer, n, inner, nthreads)


def softmax_grad(const float[:, :, ::1] dy, const float[:, :, ::1] y, float[:, :, ::1] dx,
                 int nthreads=1):
    """dx = (dy - sum(dy * y)) * y over axis 1 of (outer, n, inner) arrays, y the softmax
    output; overwrites dx, which may be dy or y itself (not a partial overlap)."""
    cdef Py_ssize_t outer = y.shape[0], n = y.shape[1], inner = y.shape[2]
    _require(outer > 0 and n > 0 and inner > 0, f"softmax_grad: empty input {tuple(y.shape)[:3]}")
    _require((dy.shape[0], dy.shape[1], dy.shape[2]) == (outer, n, inner)
             and (dx.shape[0], dx.shape[1], dx.shape[2]) == (outer, n, inner),
             f"softmax_grad: dy {tuple(dy.shape)[:3]} and dx {tuple(dx.shape)[:3]} must match y "
             f"{(outer, n, inner)}")
    _require(&dx[0, 0, 0] == &dy[0, 0, 0]
             or not _overlap(&dx[0, 0, 0], dx.nbytes, &dy[0, 0, 0], dy.nbytes),
             "softmax_grad: dx partially overlaps dy")
    _require(&dx[0, 0, 0] == &y[0, 0, 0]
             or not _overlap(&dx[0, 0, 0], dx.nbytes, &y[0, 0, 0], y.nbytes),
             "softmax_grad: dx partially overlaps y")
    with nogil:
        softmax_backward(&dx[0, 0, 0], &dy[0, 0, 0], &y[0, 0, 0], outer, n, inner, nthreads)
