# Threads: how kernels split work (OpenMP through Cython's prange), and what the build has.
#
# The convention every parallel core follows (shared with dwconv2d.pxi and activations.pxi):
#   * it takes `int nthreads` as its LAST parameter, the plan's thread count (a model's
#     num_threads, never a process-wide setting: two models in two Python threads each
#     pass their own);
#   * with nthreads <= 1 it runs its serial loop and enters no OpenMP region (a model with
#     num_threads=1 starts no thread);
#   * otherwise it splits its work into parts and runs them in
#     prange(parts, nogil=True, num_threads=...), each part written by one thread, with
#     scratch, if any, at scratch + ec_thread_id() * per-thread floats (the planner sized
#     it for nthreads threads, so ids stay below it);
#   * a part computes every output element it owns exactly as the serial loop does, so the
#     result is bit for bit the same at every thread count.  Reductions are split over
#     their outputs (a channel's sum over all rows stays in one thread, in row order),
#     never over the summed axis.
# Small work stays serial (a parallel region costs a few microseconds): par_threads gives
# the number of threads worth waking for it, which never changes a result.

from cython.parallel cimport prange
from libc.string cimport memcpy, memset

cdef extern from "ec_threads.h" nogil:
    int ec_thread_id() noexcept
    int ec_in_parallel() noexcept
    const long ec_openmp_version
    const char* ec_openmp_link
    const char* ec_compiler

cdef enum:
    # Elementwise and copy kernels: at least this many floats per thread (64 KiB; a
    # parallel region's fork and join cost about as much as streaming that once).
    PAR_MIN_FLOATS = 16384


# Divides every minimum above: 1 in use; tests raise it so that small, awkward shapes take
# the parallel paths too (_set_parallel_grain).  A thread count never changes a result,
# so neither does this.
cdef Py_ssize_t _grain_divisor = 1


def _set_parallel_grain(Py_ssize_t divisor):
    """Testing: divide the work a thread must get by `divisor` (1: as shipped); returns
    the previous divisor."""
    global _grain_divisor
    previous = _grain_divisor
    _grain_divisor = divisor if divisor > 1 else 1
    return previous


cdef inline int par_threads(Py_ssize_t work, Py_ssize_t min_per_thread,
                            int nthreads) noexcept nogil:
    """Threads worth using for `work` units when each should get at least min_per_thread:
    1 (serial) up to nthreads."""
    cdef Py_ssize_t t
    min_per_thread = min_per_thread // _grain_divisor
    if min_per_thread < 1:
        min_per_thread = 1
    if nthreads <= 1 or work < 2 * min_per_thread:
        return 1
    t = work // min_per_thread
    return nthreads if t >= nthreads else <int>t


cdef inline void chunk_bounds(Py_ssize_t i, Py_ssize_t parts, Py_ssize_t total,
                              Py_ssize_t align, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) of part i of `parts` nearly equal parts of [0, total), inner boundaries on
    multiples of align (the last part ends at total; a part may be empty)."""
    lo[0] = (total * i // parts) // align * align
    hi[0] = total if i == parts - 1 else (total * (i + 1) // parts) // align * align
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef void _copy_part(float* y, const float* x, Py_ssize_t n, Py_ssize_t part,
                     Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t lo, hi
    chunk_bounds(part, parts, n, 16, &lo, &hi)
    if hi > lo:
        memcpy(y + lo, x + lo, (hi - lo) * sizeof(float))


cdef void par_copy(float* y, const float* x, Py_ssize_t n, int nthreads) noexcept nogil:
    """y[:n] = x[:n] (no overlap), split across threads when large."""
    cdef int t = par_threads(n, PAR_MIN_FLOATS, nthreads)
    cdef Py_ssize_t part
    if t <= 1:
        memcpy(y, x, n * sizeof(float))
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _copy_part(y, x, n, part, t)


cdef void _zero_part(float* y, Py_ssize_t n, Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t lo, hi
    chunk_bounds(part, parts, n, 16, &lo, &hi)
    if hi > lo:
        memset(y + lo, 0, (hi - lo) * sizeof(float))


cdef void par_zero(float* y, Py_ssize_t n, int nthreads) noexcept nogil:
    """y[:n] = 0, split across threads when large."""
    cdef int t = par_threads(n, PAR_MIN_FLOATS, nthreads)
    cdef Py_ssize_t part
    if t <= 1:
        memset(y, 0, n * sizeof(float))
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _zero_part(y, n, part, t)


def openmp_info():
    """(OpenMP version as yyyymm or 0 without it, the link flags the build used, the
    compiler that built the kernels)."""
    return (ec_openmp_version, ec_openmp_link.decode(), ec_compiler.decode().strip())
