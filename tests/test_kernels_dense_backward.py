"""Training GEMM support and the Dense backward: accumulate-mode GEMM, transposed packing
and blocked transpose under every GEMM variant on the tile-relative cases of shapes.py;
dense_grad against the float64 reference, against finite differences of the forward GEMM,
with optional outputs, multi-block batches and bad shapes."""
import numpy as np
import pytest

import shapes
from edgecore import _kernels as K
from reference.check import assert_close, assert_unchanged, frozen
from reference.finite_diff import assert_bilinear_grads
from reference.gemm import dense_backward as ref_dense_backward, gemm as ref_gemm, gemm_magnitude


def _isa_cases():
    """(isa, case) for every variant, GEMM cases without an activation (the accumulate
    kernel has no epilogue)."""
    previous = K.gemm_isa()[0]
    out = []
    try:
        for isa in K.available_gemm_isas():
            _, mr, nr = K.set_gemm_isa(isa)
            out += [pytest.param(isa, c, id=f"{isa}-{c.id}") for c in shapes.gemm_cases(mr, nr)
                    if c.act == "linear"]
    finally:
        K.set_gemm_isa(previous)
    return out


@pytest.mark.parametrize("gemm_isa, case", _isa_cases(), indirect=["gemm_isa"])
def test_gemm_acc_matches_reference(gemm_isa, case):
    """c += a @ B: B packed transposed from (N, K) rows, a and c strided where the case says."""
    rng = np.random.default_rng(4321)
    m, n, k = case.m, case.n, case.k
    lda, ldc = case.lda or k, case.ldc or n
    (a_store, b_kn), copies = frozen(rng.standard_normal((m, lda)), rng.standard_normal((k, n)))
    a = a_store[:, :k]
    bp = np.empty(K.gemm_packed_size(k, n), np.float32)
    K.gemm_pack_b_transposed(np.ascontiguousarray(b_kn.T), bp)
    c_store = np.full((m, ldc), np.nan, np.float32)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    c_store[:, :n] = c0
    K.gemm_acc(a, bp, n, c_store[:, :n])
    ref = c0 + ref_gemm(a, b_kn)
    assert_close(c_store[:, :n], ref, gemm_magnitude(a, b_kn) + np.abs(c0),
                 what=f"gemm_acc {gemm_isa} {case.id}")
    if ldc > n:
        assert np.isnan(c_store[:, n:]).all(), "gemm_acc wrote past n into the row padding"
    assert_unchanged([a_store, b_kn], copies, "gemm_acc")


@pytest.mark.parametrize("k, n, ld", [(1, 1, 1), (3, 5, 5), (70, 9, 75), (129, 33, 129),
                                      (8, 100, 8)])
def test_pack_b_transposed_equals_packing_the_transpose(gemm_isa, k, n, ld):
    """Bit-identical to gemm_pack_b of src.T, from a row-strided src (n, k) view."""
    src_store = np.random.default_rng(1).standard_normal((n, ld)).astype(np.float32)
    src = src_store[:, :k]
    got = np.full(K.gemm_packed_size(k, n), np.nan, np.float32)
    K.gemm_pack_b_transposed(src, got)
    want = np.empty_like(got)
    K.gemm_pack_b(np.ascontiguousarray(src.T), want)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("rows, cols, ld", [(1, 1, 1), (31, 33, 33), (32, 64, 70),
                                            (65, 7, 9), (100, 129, 129)])
def test_transpose2d(rows, cols, ld):
    src_store = np.random.default_rng(2).standard_normal((rows, ld)).astype(np.float32)
    src = src_store[:, :cols]
    dst = np.full((cols, rows), np.nan, np.float32)
    K.transpose2d(src, dst)
    assert np.array_equal(dst, src.T)


def test_gemm_training_helpers_validation(gemm_isa):
    a = np.ones((4, 5), np.float32)
    bp = np.empty(K.gemm_packed_size(5, 3), np.float32)
    bad = [
        lambda: K.gemm_acc(a, bp, 3, np.empty((4, 4), np.float32)),
        lambda: K.gemm_acc(a, bp[:-1], 3, np.empty((4, 3), np.float32)),
        lambda: K.gemm_acc(a, np.empty(K.gemm_packed_size(5, 5), np.float32), 5, a),
        lambda: K.gemm_pack_b_transposed(np.ones((3, 5), np.float32), np.empty(7, np.float32)),
        lambda: K.gemm_pack_b_transposed(np.ones((0, 5), np.float32), np.empty(0, np.float32)),
        lambda: K.transpose2d(a, np.empty((4, 5), np.float32)),
        lambda: K.transpose2d(a, a.reshape(5, 4)),                        # overlaps
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


# --- Dense backward ----------------------------------------------------------------------

# (m, k, n): batch tails, K and N off every tile, one-row batches, a batch spanning several
# row blocks of the weight gradient (k = 3000 makes blocks of ~168 rows), the MobileNetV2
# head; N below and above one panel (the two dw paths), and kernels larger than the batch's
# activations (dx^T = w @ dy^T; with m = 4 only where 2m >= NR, i.e. vec128).
DENSE_SHAPES = [(1, 1, 1), (3, 7, 5), (32, 1280, 10), (17, 33, 65), (5, 100, 1),
                (700, 3000, 3), (64, 24, 130), (32, 300, 200), (4, 300, 200), (45, 129, 77)]


GUARD = 256     # floats after each scratch buffer that must stay untouched


def _dense_inputs(m, k, n, seed):
    rng = np.random.default_rng(seed)
    return frozen(rng.standard_normal((m, k)), rng.standard_normal((k, n)),
                  rng.standard_normal((m, n)))


def _dense_grad(x, w, dy, want=("dx", "dw", "db")):
    m, k = x.shape
    n = w.shape[1]
    outs = {"dx": np.full((m, k), np.nan, np.float32) if "dx" in want else None,
            "dw": np.full((k, n), np.nan, np.float32) if "dw" in want else None,
            "db": np.full(n, np.nan, np.float32) if "db" in want else None}
    size = K.dense_grad_scratch_size(m, k, n)
    store = np.full(size + GUARD, np.nan, np.float32)
    K.dense_grad(x, w, dy, outs["dx"], outs["dw"], outs["db"], store[:size])
    assert np.isnan(store[size:]).all(), "dense_grad wrote past its scratch size"
    return outs


@pytest.mark.parametrize("m, k, n", DENSE_SHAPES, ids=[f"m{m}_k{k}_n{n}" for m, k, n in DENSE_SHAPES])
def test_dense_grad_matches_reference(gemm_isa, m, k, n):
    (x, w, dy), copies = _dense_inputs(m, k, n, m + k + n)
    got = _dense_grad(x, w, dy)
    refs = ref_dense_backward(x, w, dy)
    mags = ref_dense_backward(x, w, dy, magnitude=True)
    for name, ref, mag in zip(("dx", "dw", "db"), refs, mags):
        assert_close(got[name], ref, mag, what=f"dense {name} {gemm_isa[0]} m{m} k{k} n{n}")
    assert_unchanged([x, w, dy], copies, "dense_grad")


@pytest.mark.parametrize("want", [("dw",), ("dx",), ("db",), ("dw", "db"), ("dx", "db")])
def test_dense_grad_optional_outputs(want):
    (x, w, dy), _ = _dense_inputs(9, 20, 11, 3)
    got = _dense_grad(x, w, dy, want)
    refs = dict(zip(("dx", "dw", "db"), ref_dense_backward(x, w, dy)))
    mags = dict(zip(("dx", "dw", "db"), ref_dense_backward(x, w, dy, magnitude=True)))
    for name in ("dx", "dw", "db"):
        if name in want:
            assert_close(got[name], refs[name], mags[name], what=f"dense {name} alone")
        else:
            assert got[name] is None


@pytest.mark.parametrize("m, k, n", [(4, 6, 3), (33, 17, 9)])
def test_dense_grad_matches_finite_differences(m, k, n):
    """<grad, v> against the directional derivative of sum(dy * (x @ w)) computed with the
    forward GEMM kernel; linear in each input, so a large step leaves only rounding."""
    (x, w, dy), _ = _dense_inputs(m, k, n, 11)
    got = _dense_grad(x, w, dy)
    rng = np.random.default_rng(12)
    dy64 = dy.astype(np.float64)

    def loss_of(xv, wv):
        bp = np.empty(K.gemm_packed_size(k, n), np.float32)
        K.gemm_pack_b(np.ascontiguousarray(wv), bp)
        y = np.empty((m, n), np.float32)
        K.gemm(np.ascontiguousarray(xv), bp, n, y)
        return float((y * dy64).sum())

    mag = float((np.abs(x) @ np.abs(w) * np.abs(dy)).sum())
    assert_bilinear_grads(loss_of, x, w, got["dx"], got["dw"], mag, rng)


def test_dense_grad_validation():
    (x, w, dy), _ = _dense_inputs(4, 5, 3, 0)
    scratch = np.empty(K.dense_grad_scratch_size(4, 5, 3), np.float32)
    dx, dw, db = np.empty((4, 5), np.float32), np.empty((5, 3), np.float32), np.empty(3, np.float32)
    K.dense_grad(x, w, dy, dx, dw, db, scratch)
    shared = np.empty(20 + scratch.size, np.float32)
    bad = [
        lambda: K.dense_grad(x, w, dy, np.empty((4, 4), np.float32), dw, db, scratch),
        lambda: K.dense_grad(x, w, dy, dx, np.empty((3, 5), np.float32), db, scratch),
        lambda: K.dense_grad(x, w, dy, dx, dw, np.empty(4, np.float32), scratch),
        lambda: K.dense_grad(x, w, dy[:3], dx, dw, db, scratch),
        lambda: K.dense_grad(x, w[:4], dy, dx, dw, db, scratch),
        lambda: K.dense_grad(x, w, dy, dx, dw, db, scratch[:-1]),
        lambda: K.dense_grad(x, w, dy, dx, dw, db, np.empty(0, np.float32)),
        lambda: K.dense_grad(x, w, dy, np.empty((4, 5), np.float64), dw, db, scratch),
        lambda: K.dense_grad(x, w, dy, np.empty((5, 4), np.float32).T, dw, db, scratch),
        lambda: K.dense_grad(x, w, dy, dx, dw, db, dw.reshape(-1)),                 # scratch is dw
        lambda: K.dense_grad(x, w, dy, shared[:20].reshape(4, 5), dw, db, shared[10:]),
        lambda: K.dense_grad(x, w, dy, dx, dw, dw[0], scratch),                     # db inside dw
    ]
    for i, call in enumerate(bad):
        with pytest.raises(K.KernelShapeError):
            call()
