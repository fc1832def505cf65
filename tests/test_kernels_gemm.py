"""GEMM (packed B, fused activation) against the float64 reference, under every micro-kernel
variant this CPU supports, on XNNPACK-style tile-relative cases (shapes.gemm_cases)."""
import numpy as np
import pytest

import shapes
from edgecore import _kernels as K
from reference.activations import LIPSCHITZ
from reference.check import assert_close, assert_unchanged, frozen
from reference.gemm import gemm as ref_gemm, gemm_magnitude


def _isa_cases():
    previous = K.gemm_isa()[0]
    out = []
    try:
        for isa in K.available_gemm_isas():
            _, mr, nr = K.set_gemm_isa(isa)
            out += [pytest.param(isa, c, id=f"{isa}-{c.id}") for c in shapes.gemm_cases(mr, nr)]
    finally:
        K.set_gemm_isa(previous)
    return out


def _pack(b_kn, bias):
    bp = np.empty(K.gemm_packed_size(*b_kn.shape), np.float32)
    K.gemm_pack_b(b_kn, bp)
    biasp = np.empty(K.gemm_packed_bias_size(b_kn.shape[1]), np.float32)
    K.gemm_pack_bias(bias, biasp)
    bp.setflags(write=False)
    biasp.setflags(write=False)
    return bp, biasp


@pytest.mark.parametrize("gemm_isa, case", _isa_cases(), indirect=["gemm_isa"])
def test_gemm_matches_reference(gemm_isa, case):
    rng = np.random.default_rng(1234)
    m, n, k = case.m, case.n, case.k
    lda, ldc = case.lda or k, case.ldc or n
    a_store = rng.standard_normal((m, lda)).astype(np.float32)
    (a_store, b_kn, bias), copies = frozen(a_store, rng.standard_normal((k, n)),
                                           rng.standard_normal(n))
    a = a_store[:, :k]                       # a row-strided view when lda > k
    bp, biasp = _pack(b_kn, bias)
    c_store = np.full((m, ldc), np.nan, np.float32)
    c = c_store[:, :n]
    K.gemm(a, bp, n, c, bias_packed=biasp, act=K.ACTIVATION_CODES[case.act], **case.act_params)

    ref = ref_gemm(a, b_kn, bias, case.act, **case.act_params)
    mag = gemm_magnitude(a, b_kn, bias) * LIPSCHITZ[case.act]
    assert_close(c, ref, mag, what=f"gemm {gemm_isa} {case.id}")
    if ldc > n:
        assert np.isnan(c_store[:, n:]).all(), "gemm wrote past n into the row padding of c"
    assert_unchanged([a_store, b_kn, bias], copies, "gemm")


def test_gemm_without_bias(gemm_isa):
    rng = np.random.default_rng(7)
    _, mr, nr = gemm_isa
    a = rng.standard_normal((mr + 2, 11)).astype(np.float32)
    b = rng.standard_normal((11, nr + 3)).astype(np.float32)
    bp = np.empty(K.gemm_packed_size(11, nr + 3), np.float32)
    K.gemm_pack_b(b, bp)
    c = np.empty((mr + 2, nr + 3), np.float32)
    K.gemm(a, bp, nr + 3, c)
    assert_close(c, ref_gemm(a, b), gemm_magnitude(a, b), what="gemm no bias")


def test_gemm_validation(gemm_isa):
    a = np.ones((4, 5), np.float32)
    bp = np.empty(K.gemm_packed_size(5, 3), np.float32)
    K.gemm_pack_b(np.ones((5, 3), np.float32), bp)
    with pytest.raises(K.KernelShapeError):
        K.gemm(a, bp, 3, np.empty((4, 4), np.float32))                  # c has wrong n
    with pytest.raises(K.KernelShapeError):
        K.gemm(a, bp, 3, np.empty((3, 3), np.float32))                  # c has wrong m
    with pytest.raises(K.KernelShapeError):
        K.gemm(np.ones((4, 6), np.float32), bp, 3, np.empty((4, 3), np.float32))   # k mismatch
    with pytest.raises(K.KernelShapeError):
        K.gemm(a, bp[:-1], 3, np.empty((4, 3), np.float32))             # truncated packing
    with pytest.raises(K.KernelShapeError):
        K.gemm(a, bp, 3, np.empty((4, 3), np.float32), bias_packed=np.ones(2, np.float32))
    with pytest.raises(K.KernelShapeError):
        K.gemm(a, bp, 3, np.empty((4, 3), np.float32), act=999)
    with pytest.raises(K.KernelShapeError):
        K.gemm_pack_b(np.ones((5, 3), np.float32), np.empty(7, np.float32))


def test_packing_follows_the_variant(gemm_isa):
    """Packed sizes are whole NR panels of the selected variant, zero padded past N.  A
    last panel of at most NR/2 columns is narrow: K rows of NR/2 floats, then zeros."""
    _, mr, nr = gemm_isa
    assert K.gemm_packed_size(3, nr + 1) == 2 * nr * 3
    for n, width in [(nr + 1, nr // 2), (nr + nr // 2, nr // 2), (nr + nr // 2 + 1, nr)]:
        b = np.arange(3 * n, dtype=np.float32).reshape(3, n)
        bp = np.full(K.gemm_packed_size(3, n), np.nan, np.float32)
        K.gemm_pack_b(b, bp)
        assert (bp[:nr * 3].reshape(3, nr) == b[:, :nr]).all()
        last = bp[nr * 3:nr * 3 + width * 3].reshape(3, width)
        cols = n - nr
        assert (last[:, :cols] == b[:, nr:]).all() and (last[:, cols:] == 0).all(), n
        assert (bp[nr * 3 + width * 3:] == 0).all(), n
        bt = np.full_like(bp, np.nan)
        K.gemm_pack_b_transposed(np.ascontiguousarray(b.T), bt)
        np.testing.assert_array_equal(bt, bp)


def test_gemm_rejects_c_overlapping_a():
    # With N > NR the second panel would read rows of a the first panel already wrote.
    rng = np.random.default_rng(0)
    _, mr, nr = K.gemm_isa()
    n = 2 * nr
    a = rng.standard_normal((mr, n)).astype(np.float32)
    bp = np.empty(K.gemm_packed_size(n, n), np.float32)
    K.gemm_pack_b(rng.standard_normal((n, n)).astype(np.float32), bp)
    with pytest.raises(K.KernelShapeError):
        K.gemm(a, bp, n, a)


def test_the_default_micro_kernel_is_the_platforms_vector_one():
    # On aarch64 (a Pi, a phone) the NEON 8x8 tile must be the one chosen, so an aarch64
    # run of this suite tests it; elsewhere the portable 128-bit one is always present.
    import os
    import platform
    names = K.available_gemm_isas()
    if platform.machine().lower() in ("aarch64", "arm64"):
        assert names == ["neon"]
        if not os.environ.get("EDGECORE_GEMM_ISA"):
            assert K.gemm_isa() == ("neon", 8, 8)
    else:
        assert names[-1] == "vec128"
        if not os.environ.get("EDGECORE_GEMM_ISA"):
            assert K.gemm_isa()[0] == names[0]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [77, 777])     # 777: K blocked (slices accumulate onto C)
def test_a_row_gets_the_same_bits_in_every_tile(gemm_isa, threads, k):
    """Leftover rows run on the 1-row and half-MR tiles, full ones on the MR tile: each
    element is the same k loop in all three, so a row computed alone (M = 1), in a short
    tile and in a full one gives identical bits, for the forward and the accumulating
    GEMM, at every thread count."""
    rng = np.random.default_rng(11)
    _, mr, nr = gemm_isa
    m, n = 3 * mr + 1, 2 * nr + 3
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bp, biasp = _pack(b, rng.standard_normal(n).astype(np.float32))
    whole = np.empty((m, n), np.float32)
    K.gemm(a, bp, n, whole, bias_packed=biasp, nthreads=threads)
    for rows in sorted({1, 2, max(mr // 2, 1), mr - 1, mr} - {0}):
        for start in (0, m - rows):
            part = np.empty((rows, n), np.float32)
            K.gemm(np.ascontiguousarray(a[start:start + rows]), bp, n, part,
                   bias_packed=biasp, nthreads=threads)
            np.testing.assert_array_equal(part, whole[start:start + rows],
                                          err_msg=f"rows {start}..{start + rows}")
    acc_whole = np.ones((m, n), np.float32)
    K.gemm_acc(a, bp, n, acc_whole, nthreads=threads)
    acc_one = np.ones((1, n), np.float32)
    K.gemm_acc(np.ascontiguousarray(a[-1:]), bp, n, acc_one, nthreads=threads)
    np.testing.assert_array_equal(acc_one, acc_whole[-1:])
