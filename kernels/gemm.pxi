# f32 GEMM: C[M, N] = act(A[M, K] @ B[K, N] + bias), B packed once at load.
#
# Packed B ("panels"): N is cut into ceil(N / NR) panels of NR columns; each panel stores
# its K rows of NR floats contiguously, zero padded past N.  The micro-kernel then streams
# one panel linearly while an MR-row tile of A stays in registers.  NR belongs to the
# micro-kernel chosen once per process (see f32_gemm_microkernels.h), so weights are packed
# after that choice and a plan records the NR it was packed for.
#
# Blocking: rows are processed in blocks of `_gemm_block_rows(K)` so one block of A stays
# in L2 while every panel of B passes over it; the activation epilogue (for the ones the
# micro-kernel cannot clamp) runs on the block while it is still in cache.

cdef extern from "f32_gemm_microkernels.h" nogil:
    ctypedef void (*f32_gemm_ukernel_fn)(size_t mr, size_t nc, size_t kc, const float* a,
                                        size_t lda, const float* bp, const float* bias,
                                        float* c, size_t ldc, float lo, float hi) noexcept
    ctypedef struct f32_gemm_config:
        const char* name
        int mr
        int nr
        f32_gemm_ukernel_fn ukernel
    const f32_gemm_config* f32_gemm_configs
    int f32_gemm_config_count
    int f32_gemm_config_supported(int index)

import os as _os

cdef const f32_gemm_config* _gemm = NULL


def available_gemm_isas():
    """Names of the GEMM micro-kernel variants this CPU can run, best first."""
    return [f32_gemm_configs[i].name.decode() for i in range(f32_gemm_config_count)
            if f32_gemm_config_supported(i)]


def set_gemm_isa(name=None):
    """Select the GEMM micro-kernel by ISA name (None: the best this CPU supports).

    Packed weights depend on the variant's NR, so select before loading models; a model
    checks at run time that the NR it was packed for is still current.
    """
    global _gemm
    cdef int i
    for i in range(f32_gemm_config_count):
        if not f32_gemm_config_supported(i):
            continue
        if name is None or f32_gemm_configs[i].name.decode() == name:
            _gemm = &f32_gemm_configs[i]
            return gemm_isa()
    raise ValueError(f"GEMM variant {name!r} is not available on this CPU; "
                     f"available: {available_gemm_isas()}")


def gemm_isa():
    """(name, MR, NR) of the current GEMM micro-kernel."""
    return (_gemm.name.decode(), _gemm.mr, _gemm.nr)


set_gemm_isa(_os.environ.get("EDGECORE_GEMM_ISA") or None)


cdef inline Py_ssize_t gemm_panels(Py_ssize_t n) noexcept nogil:
    return (n + _gemm.nr - 1) // _gemm.nr


cdef inline Py_ssize_t gemm_packed_floats(Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    return gemm_panels(n) * _gemm.nr * k


cdef inline Py_ssize_t gemm_packed_bias_floats(Py_ssize_t n) noexcept nogil:
    return gemm_panels(n) * _gemm.nr


cdef inline Py_ssize_t _gemm_block_rows(Py_ssize_t k) noexcept nogil:
    # ~128 KiB of A per block (half a typical L2), a whole number of MR tiles, at least
    # one tile and at most 512 rows so the activation epilogue stays cache-resident.
    cdef Py_ssize_t mr = _gemm.mr
    cdef Py_ssize_t rows = (32768 // (k if k > 0 else 1)) // mr * mr
    if rows < mr:
        rows = mr
    if rows > 512:
        rows = 512 // mr * mr
    return rows


cdef void f32_gemm_pack_b(float* bp, const float* b_kn, Py_ssize_t ldb, Py_ssize_t k,
                          Py_ssize_t n) noexcept nogil:
    """bp[panel][k][NR] <- b_kn[k, n] (row stride ldb), zero padding past n."""
    cdef Py_ssize_t nr = _gemm.nr
    cdef Py_ssize_t p, kk, j, col
    for p in range(gemm_panels(n)):
        for kk in range(k):
            for j in range(nr):
                col = p * nr + j
                bp[0] = b_kn[kk * ldb + col] if col < n else 0.0
                bp += 1


cdef void f32_gemm_pack_bias(float* biasp, const float* bias_n, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(gemm_packed_bias_floats(n)):
        biasp[j] = bias_n[j] if j < n else 0.0


cdef void f32_gemm_forward(float* c_mn, Py_ssize_t ldc, const float* a_mk, Py_ssize_t lda,
                           const float* bp, const float* biasp, Py_ssize_t m, Py_ssize_t n,
                           Py_ssize_t k, const Activation* act) noexcept nogil:
    """c[m, :n] = act(a[m, :k] @ B + bias); overwrites c.  biasp may be NULL."""
    cdef Py_ssize_t mr = _gemm.mr, nr = _gemm.nr
    cdef Py_ssize_t block = _gemm_block_rows(k)
    cdef Py_ssize_t blk, m0, mb, p, i, t, rows, cols, row
    cdef f32_gemm_ukernel_fn ukernel = _gemm.ukernel
    cdef bint fused = act_is_clamp(act)
    cdef float lo = -INFINITY, hi = INFINITY
    if fused:
        act_clamp_bounds(act, &lo, &hi)
    # Loops count blocks and tiles: Cython compiles range() with a run-time step to
    # Python iteration, which nogil code cannot do.
    for blk in range((m + block - 1) // block):
        m0 = blk * block
        mb = min(block, m - m0)
        for p in range(gemm_panels(n)):
            cols = min(nr, n - p * nr)
            for t in range((mb + mr - 1) // mr):
                i = t * mr
                rows = min(mr, mb - i)
                ukernel(rows, cols, k, a_mk + (m0 + i) * lda, lda, bp + p * nr * k,
                        biasp + p * nr if biasp != NULL else NULL,
                        c_mn + (m0 + i) * ldc + p * nr, ldc, lo, hi)
        if not fused:
            if ldc == n:
                activation_forward(c_mn + m0 * ldc, c_mn + m0 * ldc, mb * n, act)
            else:
                for row in range(m0, m0 + mb):
                    activation_forward(c_mn + row * ldc, c_mn + row * ldc, n, act)


# --- checked Python entry points (tests, benchmarks, weight packing at load) ---------

def gemm_packed_size(Py_ssize_t k, Py_ssize_t n):
    """Floats needed by the packed form of a (k, n) matrix for the current variant."""
    return gemm_packed_floats(k, n)


def gemm_packed_bias_size(Py_ssize_t n):
    return gemm_packed_bias_floats(n)


def gemm_pack_b(const float[:, ::1] b_kn, float[::1] out):
    """Pack b_kn (K, N) into `out` (gemm_packed_size(K, N) floats)."""
    cdef Py_ssize_t k = b_kn.shape[0], n = b_kn.shape[1]
    _require(k > 0 and n > 0, f"gemm_pack_b: empty matrix {k}x{n}")
    _require(out.shape[0] == gemm_packed_floats(k, n),
             f"gemm_pack_b: out has {out.shape[0]} floats, packing needs {gemm_packed_floats(k, n)}")
    with nogil:
        f32_gemm_pack_b(&out[0], &b_kn[0, 0], n, k, n)


def gemm_pack_bias(const float[::1] bias, float[::1] out):
    cdef Py_ssize_t n = bias.shape[0]
    _require(n > 0 and out.shape[0] == gemm_packed_bias_floats(n),
             f"gemm_pack_bias: out has {out.shape[0]} floats, needs {gemm_packed_bias_floats(n)}")
    with nogil:
        f32_gemm_pack_bias(&out[0], &bias[0], n)


def gemm(const float[:, :] a_mk, const float[::1] b_packed, Py_ssize_t n, float[:, :] c_mn,
         bias_packed=None, int act=0, float alpha=0.0, float max_value=INFINITY,
         float threshold=0.0):
    """c = act(a @ B + bias) with B, bias packed by gemm_pack_b / gemm_pack_bias.

    a and c may be row-strided views (inner stride 1), as the planner uses them.
    """
    cdef Activation a_ = _checked_activation(act, alpha, max_value, threshold)
    cdef Py_ssize_t m = a_mk.shape[0], k = a_mk.shape[1]
    cdef const float[::1] biasv
    cdef const float* biasp = NULL
    _require(m > 0 and k > 0 and n > 0, f"gemm: empty problem m={m} k={k} n={n}")
    _require(a_mk.strides[1] == 4 and c_mn.strides[1] == 4, "gemm: rows must be contiguous")
    _require((m == 1 or a_mk.strides[0] >= 4 * k) and (m == 1 or c_mn.strides[0] >= 4 * n),
             "gemm: rows must not overlap")
    _require(c_mn.shape[0] == m and c_mn.shape[1] == n,
             f"gemm: c is {c_mn.shape[0]}x{c_mn.shape[1]}, expected {m}x{n}")
    _require(b_packed.shape[0] == gemm_packed_floats(k, n),
             f"gemm: packed B has {b_packed.shape[0]} floats, expected {gemm_packed_floats(k, n)}"
             f" for k={k} n={n} (packed for another GEMM variant?)")
    # The micro-kernel writes C panel by panel while later panels still read A: an
    # output overlapping an input would be read after it was overwritten.
    _require(not _overlaps(&c_mn[0, 0], (m - 1) * c_mn.strides[0] + 4 * n,
                           &a_mk[0, 0], (m - 1) * a_mk.strides[0] + 4 * k),
             "gemm: c must not overlap a")
    if bias_packed is not None:
        biasv = bias_packed
        _require(biasv.shape[0] == gemm_packed_bias_floats(n), "gemm: packed bias size mismatch")
        biasp = &biasv[0]
    with nogil:
        f32_gemm_forward(&c_mn[0, 0], c_mn.strides[0] // 4, &a_mk[0, 0], a_mk.strides[0] // 4,
                         &b_packed[0], biasp, m, n, k, &a_)
