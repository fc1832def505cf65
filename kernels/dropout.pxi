# Inverted dropout (keras.layers.Dropout in training) with a small counter-based generator.
#
# Keras (tf.nn.experimental.stateless_dropout) keeps an element when uniform >= rate and
# scales kept elements by 1 / (1 - rate), taken in double from the Python rate and rounded
# to float32; the mask stored here is that factor or 0, so y = x * mask where kept and the
# backward is dy * mask there, both exactly Keras's arithmetic.  A dropped element is 0 in
# y and dx even when x or dy is NaN or inf: TF selects (where(keep, x * scale, 0), and
# that where's gradient) rather than multiplying by 0.  The random bits cannot match TensorFlow's
# Philox stream, so dropout is the one training op whose values differ from Keras; tests
# of parity run with dropout off.
#
# Generator: splitmix64 (Steele, Lea, Flood 2014), used counter-style: element i of a call
# draws mix(state + (i + 1) * GOLDEN), and the call then advances state by n * GOLDEN, so
# every element is a pure function of (seed, position in the stream) and a run is
# reproducible from the caller's 64-bit seed.  The top 32 bits u of each draw decide:
# keep iff u >= ceil(rate * 2^32), i.e. P(keep) = 1 - rate to within 2^-32.
# Non-goals: noise_shape (broadcast masks), matching TensorFlow's random stream.

from libc.math cimport ceil
from libc.stdint cimport uint64_t

cdef uint64_t _SPLITMIX_GOLDEN = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t _splitmix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef void _dropout_range(float* y, float* mask, const float* x, uint64_t state,
                         uint64_t threshold, float scale, Py_ssize_t lo,
                         Py_ssize_t hi) noexcept nogil:
    """Elements lo..hi of dropout_forward: element i's draw depends on i alone."""
    cdef Py_ssize_t i
    cdef uint64_t u
    cdef float keep
    for i in range(lo, hi):
        u = _splitmix64(state + <uint64_t>(i + 1) * _SPLITMIX_GOLDEN) >> 32
        keep = scale if u >= threshold else 0
        mask[i] = keep
        y[i] = (x[i] if u >= threshold else 0) * keep    # as dropout_backward


cdef void _dropout_backward_range(float* dx, const float* dy, const float* mask,
                                  Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    cdef float m, d
    for i in range(lo, hi):
        # Select, then multiply: a select between a product and 0 has GCC sink the product
        # into the branch and give up vectorising (measured 9x slower).
        m = mask[i]
        d = dy[i]
        dx[i] = (d if m != 0 else 0) * m


cdef void _dropout_part(float* y, float* mask, const float* x, Py_ssize_t n, uint64_t state,
                        uint64_t threshold, float scale, Py_ssize_t part,
                        Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t lo, hi
    chunk_bounds(part, parts, n, 16, &lo, &hi)
    _dropout_range(y, mask, x, state, threshold, scale, lo, hi)


cdef void _dropout_backward_part(float* dx, const float* dy, const float* mask, Py_ssize_t n,
                                 Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t lo, hi
    chunk_bounds(part, parts, n, 16, &lo, &hi)
    _dropout_backward_range(dx, dy, mask, lo, hi)


cdef void dropout_forward(float* y, float* mask, const float* x, Py_ssize_t n, double rate,
                          uint64_t* rng_state, int nthreads) noexcept nogil:
    """mask[i] = 1 / (1 - rate) (float32) where kept, else 0; y = x * mask where kept, else
    0 (NaN x included, as TF's where); OVERWRITES y and mask (y may be x).  0 <= rate < 1.
    rng_state: the splitmix64 counter, advanced by n draws (see the file comment).  A draw
    is a function of its index, so threads split the range and the mask is the same."""
    cdef uint64_t state = rng_state[0]
    cdef uint64_t threshold = <uint64_t>ceil(rate * 4294967296.0)
    cdef float scale = <float>(1.0 / (1.0 - rate))
    cdef Py_ssize_t part
    cdef int t = par_threads(n, PAR_MIN_FLOATS // 2, nthreads)
    if t <= 1:
        _dropout_range(y, mask, x, state, threshold, scale, 0, n)
    else:
        for part in prange(t, nogil=True, num_threads=t, schedule="static"):
            _dropout_part(y, mask, x, n, state, threshold, scale, part, t)
    rng_state[0] = state + <uint64_t>n * _SPLITMIX_GOLDEN


cdef void dropout_backward(float* dx, const float* dy, const float* mask, Py_ssize_t n,
                           int nthreads) noexcept nogil:
    """dx = dy * mask where kept, else 0 (NaN dy included, as TF's where); mask: the
    matching dropout_forward's.  OVERWRITES dx, which may be dy."""
    cdef Py_ssize_t part
    cdef int t = par_threads(n, PAR_MIN_FLOATS, nthreads)
    if t <= 1:
        _dropout_backward_range(dx, dy, mask, 0, n)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _dropout_backward_part(dx, dy, mask, n, part, t)


# --- checked Python entry points ---------------------------------------------------------

def dropout(const float[::1] x, float[::1] y, float[::1] mask, double rate,
            uint64_t[::1] rng_state, int nthreads=1):
    """Inverted dropout: y = x * mask where kept, else 0, mask = 1 / (1 - rate) or 0;
    overwrites y and mask and
    advances rng_state (a uint64 array of one element, the generator's counter)."""
    cdef Py_ssize_t n = x.shape[0]
    _require(0 <= rate < 1, f"dropout: rate {rate} not in [0, 1)")
    _require(y.shape[0] == n and mask.shape[0] == n,
             f"dropout: x has {n} elements, y {y.shape[0]}, mask {mask.shape[0]}")
    _require(rng_state.shape[0] == 1, "dropout: rng_state holds one uint64")
    if n == 0:
        return
    _require(&y[0] == &x[0] or not _overlaps(&y[0], y.nbytes, &x[0], x.nbytes),
             "dropout: y partially overlaps x")
    _require(not _overlaps(&mask[0], mask.nbytes, &x[0], x.nbytes)
             and not _overlaps(&mask[0], mask.nbytes, &y[0], y.nbytes),
             "dropout: mask overlaps x or y")
    with nogil:
        dropout_forward(&y[0], &mask[0], &x[0], n, rate, &rng_state[0], nthreads)


def dropout_grad(const float[::1] dy, const float[::1] mask, float[::1] dx, int nthreads=1):
    """dx = dy * mask where kept, else 0; overwrites dx, which may be dy."""
    cdef Py_ssize_t n = dy.shape[0]
    _require(mask.shape[0] == n and dx.shape[0] == n,
             f"dropout_grad: dy has {n} elements, mask {mask.shape[0]}, dx {dx.shape[0]}")
    if n == 0:
        return
    _require(&dx[0] == &dy[0] or not _overlaps(&dx[0], dx.nbytes, &dy[0], dy.nbytes),
             "dropout_grad: dx partially overlaps dy")
    _require(not _overlaps(&dx[0], dx.nbytes, &mask[0], mask.nbytes),
             "dropout_grad: dx overlaps mask")
    with nogil:
        dropout_backward(&dx[0], &dy[0], &mask[0], n, nthreads)
