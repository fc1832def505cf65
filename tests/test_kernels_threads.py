"""Every parallel kernel at 1, 2, 3 and 4 threads: against its float64 reference, and bit
for bit against its own 1-thread result (every kernel splits its outputs, never a sum,
so the thread count changes no bit: kernels/threads.pxi).

The work a thread must get before a kernel wakes it is lowered for these tests
(_set_parallel_grain), so that the awkward shapes (odd sizes, tails, M and N off the
tile, one row, more threads than rows or channels) take the parallel paths too; without
that most of them would stay serial, being small."""
import numpy as np
import pytest

import shapes
from edgecore import _kernels as K
from reference import normalization as ref_norm
from reference import optimizers as ref_opt
from reference.check import assert_close
from reference.conv2d import conv2d as ref_conv2d, conv2d_backward as ref_conv2d_backward
from reference.elementwise import (binary as ref_binary, binary_backward as ref_binary_backward,
                                   binary_magnitude, channel_affine as ref_channel_affine,
                                   prelu as ref_prelu, prelu_backward as ref_prelu_backward)
from reference.gemm import dense_backward as ref_dense_backward, gemm as ref_gemm, gemm_magnitude
from reference.layout import (upsample_bilinear as ref_bilinear,
                              upsample_nearest as ref_nearest,
                              upsample_nearest_backward as ref_nearest_backward,
                              window_copy as ref_window_copy)
from reference.pooling import (global_pool, global_pool_backward, pool2d,
                               pool2d_backward)
from reference.dropout import dropout_mask
from reference.rowact import (glu as ref_glu, glu_backward as ref_glu_backward,
                              log_softmax as ref_log_softmax,
                              log_softmax_backward as ref_log_softmax_backward)
from reference.softmax import softmax as ref_softmax, softmax_backward as ref_softmax_backward

THREADS = (1, 2, 3, 4)


@pytest.fixture(autouse=True)
def small_work_runs_in_parallel():
    previous = K._set_parallel_grain(1 << 30)
    yield
    K._set_parallel_grain(previous)


def across_threads(run, what):
    """run(nthreads) -> tuple of arrays; returns the 1-thread result after checking that
    2, 3 and 4 threads give the same bits."""
    first, single = None, False
    for t in THREADS:
        got = run(t)
        single = not isinstance(got, tuple)
        got = (got,) if single else got
        if first is None:
            first = got
            continue
        for i, (a, b) in enumerate(zip(first, got)):
            if a is None:
                continue
            a32, b32 = np.ascontiguousarray(a), np.ascontiguousarray(b)
            diff = np.flatnonzero(a32.view(np.uint32) != b32.view(np.uint32))
            assert diff.size == 0, (f"{what}: output {i} at {t} threads differs from 1 thread "
                                    f"at {diff.size} of {a32.size} elements (first flat index "
                                    f"{diff[0]}: {a32.flat[diff[0]]!r} vs {b32.flat[diff[0]]!r})")
    return first[0] if single else first


def _rng(seed):
    return np.random.default_rng(seed)


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# --- GEMM -----------------------------------------------------------------------------

GEMM_SHAPES = [(1, 1, 1), (1, 37, 45), (7, 5, 3), (13, 77, 45), (4, 300, 1000), (333, 77, 45),
               (50, 96, 200), (1, 1280, 1000)]


@pytest.mark.parametrize("act, params", [("linear", {}), ("relu", {"max_value": 6.0}),
                                         ("gelu", {})], ids=["linear", "relu6", "gelu"])
@pytest.mark.parametrize("m, k, n", GEMM_SHAPES, ids=lambda v: str(v))
def test_gemm(m, k, n, act, params):
    rng = _rng(m * 7 + k + n)
    a, b, bias = _f32(rng, m, k), _f32(rng, k, n), _f32(rng, n)
    bp = np.empty(K.gemm_packed_size(k, n), np.float32)
    K.gemm_pack_b(b, bp)
    biasp = np.empty(K.gemm_packed_bias_size(n), np.float32)
    K.gemm_pack_bias(bias, biasp)

    def run(t):
        packed = np.empty_like(bp)
        K.gemm_pack_b(b, packed, nthreads=t)
        assert np.array_equal(packed, bp), "gemm_pack_b differs across threads"
        c = np.full((m, n), np.nan, np.float32)
        K.gemm(a, bp, n, c, biasp, K.ACTIVATION_CODES[act], nthreads=t, **params)
        return c

    c = across_threads(run, f"gemm {m}x{k}x{n} {act}")
    mag = gemm_magnitude(a, b, bias)
    assert_close(c, ref_gemm(a, b, bias, act, **params), mag, rtol=2e-5, atol=1e-5,
                 what=f"gemm {m}x{k}x{n} {act}")


@pytest.mark.parametrize("m, k, n", [(1, 9, 7), (29, 33, 70), (200, 64, 40)],
                         ids=lambda v: str(v))
def test_gemm_acc_and_strided_rows(m, k, n):
    rng = _rng(3)
    a_big, b, c0 = _f32(rng, m, k + 5), _f32(rng, k, n), _f32(rng, m, n + 3)
    a = a_big[:, 2:2 + k]                       # row-strided view
    bp = np.empty(K.gemm_packed_size(k, n), np.float32)
    K.gemm_pack_b(b, bp)

    def run(t):
        c = c0.copy()
        K.gemm_acc(a, bp, n, c[:, 1:1 + n], nthreads=t)
        return c

    c = across_threads(run, "gemm_acc")
    ref, mag = c0.astype(np.float64), np.abs(c0.astype(np.float64))
    ref[:, 1:1 + n] += a.astype(np.float64) @ b
    mag[:, 1:1 + n] += np.abs(a.astype(np.float64)) @ np.abs(b)
    assert_close(c, ref, mag, rtol=2e-5, what="gemm_acc")


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 70), (100, 33), (257, 129)])
def test_transpose_and_transposed_packing(rows, cols):
    src = _f32(_rng(4), rows, cols)

    def run(t):
        dst = np.empty((cols, rows), np.float32)
        K.transpose2d(src, dst, nthreads=t)
        packed = np.empty(K.gemm_packed_size(cols, rows), np.float32)
        K.gemm_pack_b_transposed(src, packed, nthreads=t)
        return dst, packed

    dst, packed = across_threads(run, "transpose")
    assert np.array_equal(dst, src.T)
    expected = np.empty_like(packed)
    K.gemm_pack_b(np.ascontiguousarray(src.T), expected)
    assert np.array_equal(packed, expected)


# --- Conv2D -----------------------------------------------------------------------------

CONV_CASES = [c for i, c in enumerate(shapes.conv_cases()) if i % 9 == 0] + \
    shapes.grouped_conv_cases()[:4] + \
    [shapes._case(1, (7, 6), 64, 40, (3, 3, 1, 1, 1, 1, "same")),   # K = 576: whole im2col,
     shapes._case(2, (9, 9), 70, 33, (3, 3, 2, 2, 1, 1, "valid"))]  # threaded K-blocked GEMM


def _conv_inputs(case, seed):
    rng = _rng(seed)
    return (_f32(rng, case.n, case.h, case.w, case.cin),
            _f32(rng, case.kh, case.kw, case.cin // case.groups, case.cout), _f32(rng, case.cout))


@pytest.mark.parametrize("case", CONV_CASES, ids=[c.id for c in CONV_CASES])
def test_conv2d(case):
    x, w, bias = _conv_inputs(case, 11)
    wsize, bsize = K.conv2d_packed_sizes(case.kh, case.kw, case.cin // case.groups, case.cout,
                                         case.groups)
    wp, bp = np.empty(wsize, np.float32), np.empty(bsize, np.float32)
    K.conv2d_pack_weights(w, case.groups, wp)
    K.conv2d_pack_bias(bias, case.groups, bp)
    geom = dict(case.geometry, groups=case.groups)

    def run(t):
        size = K.conv2d_scratch_size(x.shape, w.shape, **geom, nthreads=t)
        store = np.full(size + 64, np.nan, np.float32)
        y = np.full((case.n,) + case.out_hw + (case.cout,), np.nan, np.float32)
        K.conv2d(x, w.shape, wp, y, store[:size], bias_packed=bp, act=K.ACTIVATION_CODES["elu"],
                 alpha=1.0, nthreads=t, **geom)
        assert np.isnan(store[size:]).all(), "conv2d wrote past the scratch it asked for"
        return y

    y = across_threads(run, f"conv2d {case.id}")
    mag = ref_conv2d(x, w, bias, magnitude=True, **geom)
    assert_close(y, ref_conv2d(x, w, bias, act="elu", alpha=1.0, **geom), mag, rtol=2e-5,
                 what=f"conv2d {case.id}")


def test_conv2d_scratch_grows_with_threads_only_as_far_as_blocks_go():
    x_shape, w_shape = (1, 112, 112, 3), (3, 3, 3, 32)
    one = K.conv2d_scratch_size(x_shape, w_shape, pads=(1, 1, 1, 1))
    four = K.conv2d_scratch_size(x_shape, w_shape, pads=(1, 1, 1, 1), nthreads=4)
    assert one < four <= 4 * one
    # One output row: one block (of MR rows with threads), one thread's scratch.
    tiny = (1, 1, 3, 3), (1, 3, 3, 4)
    assert K.conv2d_scratch_size(*tiny, nthreads=4) == K.gemm_isa()[1] * 9
    # K past the GEMM's blocking (3x3 over 64 channels, K = 576), 5x5 output: with threads
    # the whole im2col matrix (25 rows) is built once and the GEMM threaded (conv2d.pxi,
    # _conv2d_whole); one thread, one block of 25 rows rounded to MR.
    big_k = (1, 5, 5, 64), (3, 3, 64, 8)
    mr = K.gemm_isa()[1]
    assert K.conv2d_scratch_size(*big_k, pads=(1, 1, 1, 1), nthreads=4) == 25 * 576
    assert K.conv2d_scratch_size(*big_k, pads=(1, 1, 1, 1), nthreads=1) == (25 + mr - 1) // mr * mr * 576
    assert K.conv2d_scratch_size((1, 8, 8, 16), (1, 1, 16, 8), nthreads=4) == 0  # pointwise


@pytest.mark.parametrize("case", CONV_CASES, ids=[c.id for c in CONV_CASES])
def test_conv2d_backward(case):
    x, w, _ = _conv_inputs(case, 12)
    dy = _f32(_rng(13), case.n, *case.out_hw, case.cout)

    def run(t):
        size = K.conv2d_grad_scratch_size(x.shape, w.shape, groups=case.groups, **case.geometry)
        outs = (np.empty(x.shape, np.float32), np.empty(w.shape, np.float32),
                np.empty(case.cout, np.float32))
        K.conv2d_grad(x, w, dy, *outs, np.empty(max(size, 1), np.float32), groups=case.groups,
                      nthreads=t, **case.geometry)
        return outs

    got = across_threads(run, f"conv2d_grad {case.id}")
    refs = ref_conv2d_backward(x, w, dy, groups=case.groups, **case.geometry)
    mags = ref_conv2d_backward(x, w, dy, groups=case.groups, magnitude=True, **case.geometry)
    for name, g, r, m in zip(("dx", "dw", "db"), got, refs, mags):
        assert_close(g, r, m, rtol=2e-5, what=f"conv2d_grad {case.id} {name}")


@pytest.mark.parametrize("m, k, n", [(1, 20, 7), (17, 9, 33), (32, 1280, 10), (40, 300, 200),
                                     (3, 700, 500), (600, 24, 40)], ids=lambda v: str(v))
def test_dense_backward(m, k, n):
    rng = _rng(m + k + n)
    x, w, dy = _f32(rng, m, k), _f32(rng, k, n), _f32(rng, m, n)

    def run(t):
        outs = (np.empty((m, k), np.float32), np.empty((k, n), np.float32),
                np.empty(n, np.float32))
        K.dense_grad(x, w, dy, *outs, np.empty(K.dense_grad_scratch_size(m, k, n), np.float32),
                     nthreads=t)
        return outs

    got = across_threads(run, f"dense_grad {m}x{k}x{n}")
    refs, mags = ref_dense_backward(x, w, dy), ref_dense_backward(x, w, dy, magnitude=True)
    for name, g, r, mg in zip(("dx", "dw", "db"), got, refs, mags):
        assert_close(g, r, mg, rtol=2e-5, what=f"dense_grad {m}x{k}x{n} {name}")


# --- pooling ------------------------------------------------------------------------------

POOL_CASES = [c for i, c in enumerate(shapes.pool_cases()) if i % 5 == 0]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[c.id for c in POOL_CASES])
def test_pool2d_forward_and_backward(case, kind):
    rng = _rng(21)
    x = _f32(rng, case.n, case.h, case.w, case.c)
    dy = _f32(rng, case.n, *case.out_hw, case.c)
    pool, strides = (case.ph, case.pw), (case.sh, case.sw)
    forward = K.maxpool2d if kind == "max" else K.avgpool2d

    def run(t):
        y = np.empty((case.n,) + case.out_hw + (case.c,), np.float32)
        forward(x, y, pool, strides, case.pads, nthreads=t)
        dx = np.empty_like(x)
        if kind == "max":
            K.maxpool2d_grad(x, dy, dx, pool, strides, case.pads, nthreads=t)
        else:
            K.avgpool2d_grad(dy, dx, pool, strides, case.pads, nthreads=t)
        return y, dx

    y, dx = across_threads(run, f"{kind}pool {case.id}")
    ref = pool2d(x, pool, strides, case.pads, kind)
    mag = pool2d(np.abs(x), pool, strides, case.pads, "avg") if kind == "avg" else None
    assert_close(y, ref, mag, rtol=1e-6, atol=1e-7, what=f"{kind}pool {case.id}")
    dref = pool2d_backward(x, dy, pool, strides, case.pads, kind)
    assert_close(dx, dref, None, rtol=1e-5, atol=1e-5, what=f"{kind}pool grad {case.id}")


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("n, h, w, c", [(1, 1, 1, 1), (3, 7, 5, 13), (1, 7, 7, 1280),
                                        (2, 9, 9, 300)])
def test_global_pool(n, h, w, c, kind):
    rng = _rng(22)
    x, dy = _f32(rng, n, h, w, c), _f32(rng, n, c)
    forward = K.global_maxpool if kind == "max" else K.global_avgpool

    def run(t):
        y = np.empty((n, c), np.float32)
        forward(x, y, nthreads=t)
        dx = np.empty_like(x)
        if kind == "max":
            K.global_maxpool_grad(x, dy, dx, nthreads=t)
        else:
            K.global_avgpool_grad(dy, dx, nthreads=t)
        return y, dx

    y, dx = across_threads(run, f"global {kind} {(n, h, w, c)}")
    assert_close(y, global_pool(x, kind), global_pool(np.abs(x), "avg"), rtol=1e-6,
                 what=f"global {kind}")
    assert_close(dx, global_pool_backward(x, dy, kind), None, rtol=1e-6, atol=1e-7,
                 what=f"global {kind} grad")


# --- elementwise ----------------------------------------------------------------------------

BINARY_CASES = [((2, 5, 7, 13), (2, 5, 7, 13)), ((2, 9, 9, 40), (2, 1, 1, 40)),
                ((1, 1, 1, 1), (1, 1, 1, 1)), ((3, 17), (1, 1)), ((4, 1, 33), (1, 6, 33)),
                ((1, 300, 3), (1, 300, 1))]


def _strides(arr, shape):
    return [s // 4 for s in np.broadcast_to(arr, shape).strides]


@pytest.mark.parametrize("op", ["add", "multiply", "divide", "maximum"])
@pytest.mark.parametrize("sa, sb", BINARY_CASES, ids=lambda v: str(v))
def test_binary_forward_and_backward(sa, sb, op):
    rng = _rng(31)
    a, b = _f32(rng, *sa), _f32(rng, *sb) + (3.0 if op == "divide" else 0.0)
    shape = np.broadcast_shapes(sa, sb)
    dy = _f32(rng, *shape)
    code = K.BINARY_OPS[op]

    def run(t):
        y = np.empty(shape, np.float32)
        K.binary(a.ravel(), b.ravel(), y.ravel(), code, shape, _strides(a, shape),
                 _strides(b, shape), nthreads=t)
        da, db = np.empty(a.size, np.float32), np.empty(b.size, np.float32)
        K.binary_grad(a.ravel(), b.ravel(), dy.ravel(), da, db, code, shape,
                      _strides(a, shape), _strides(b, shape), nthreads=t)
        return y, da, db

    y, da, db = across_threads(run, f"binary {op} {sa} {sb}")
    assert_close(y, ref_binary(a, b, op), binary_magnitude(a, b, op), rtol=1e-6,
                 what=f"binary {op}")
    (rda, rdb), (mda, mdb) = (ref_binary_backward(a, b, dy, op),
                              ref_binary_backward(a, b, dy, op, magnitude=True))
    assert_close(da.reshape(sa), rda, mda, rtol=1e-5, what=f"binary {op} da")
    assert_close(db.reshape(sb), rdb, mdb, rtol=1e-5, what=f"binary {op} db")


@pytest.mark.parametrize("rows, c", [(1, 1), (7, 13), (500, 3), (33, 96)])
def test_scale_and_channel_affine(rows, c):
    rng = _rng(32)
    x, scale, shift = _f32(rng, rows, c), _f32(rng, c), _f32(rng, c)

    def run(t):
        y, dx, s = (np.empty((rows, c), np.float32) for _ in range(3))
        K.channel_affine(x, scale, shift, y, nthreads=t)
        K.channel_affine_grad(x, scale, dx, nthreads=t)
        K.scale(x.ravel(), s.ravel(), 0.3, nthreads=t)
        return y, dx, s

    y, dx, s = across_threads(run, "channel_affine")
    assert_close(y, ref_channel_affine(x, scale, shift), rtol=1e-6, atol=1e-6,
                 what="channel_affine")
    assert np.array_equal(dx, x * scale) and np.array_equal(s, x * np.float32(0.3))


@pytest.mark.parametrize("n, sample, alpha_shape", [(1, (5, 7, 3), (1, 1, 3)),
                                                   (3, (9, 11, 16), (9, 11, 16)),
                                                   (2, (40,), (40,))])
def test_prelu(n, sample, alpha_shape):
    rng = _rng(33)
    x, alpha = _f32(rng, n, *sample), _f32(rng, *alpha_shape)
    dy = _f32(rng, n, *sample)
    strides = _strides(alpha, sample)

    def run(t):
        y, dx, dalpha = np.empty(x.size, np.float32), np.empty(x.size, np.float32), \
            np.empty(alpha.size, np.float32)
        K.prelu(x.ravel(), alpha.ravel(), y, sample, strides, nthreads=t)
        K.prelu_grad(x.ravel(), alpha.ravel(), dy.ravel(), dx, dalpha, sample, strides,
                     nthreads=t)
        return y, dx, dalpha

    y, dx, dalpha = across_threads(run, f"prelu {n} {sample}")
    assert_close(y.reshape(x.shape), ref_prelu(x, alpha), rtol=1e-6, atol=1e-7, what="prelu")
    (rdx, rda), (mdx, mda) = (ref_prelu_backward(x, alpha, dy),
                              ref_prelu_backward(x, alpha, dy, magnitude=True))
    assert_close(dx.reshape(x.shape), rdx, mdx, rtol=1e-6, what="prelu dx")
    assert_close(dalpha.reshape(alpha.shape), rda, mda, rtol=1e-5, what="prelu dalpha")


# --- rows: softmax, layer norm ---------------------------------------------------------

@pytest.mark.parametrize("outer, n, inner", [(1, 1, 1), (1, 1000, 1), (37, 10, 1),
                                             (3, 5, 70), (2, 7, 129)])
def test_softmax(outer, n, inner):
    rng = _rng(41)
    x, dy = 3 * _f32(rng, outer, n, inner), _f32(rng, outer, n, inner)

    def run(t):
        y, dx = np.empty_like(x), np.empty_like(x)
        K.softmax(x, y, nthreads=t)
        K.softmax_grad(dy, y, dx, nthreads=t)
        return y, dx

    y, dx = across_threads(run, f"softmax {(outer, n, inner)}")
    assert_close(y, ref_softmax(x), rtol=1e-5, atol=1e-7, what="softmax")
    assert_close(dx, ref_softmax_backward(dy, y), np.abs(dy) * y * 2 + 1e-6, rtol=1e-5,
                 what="softmax grad")


@pytest.mark.parametrize("rows, cols", [(1, 1), (1, 300), (37, 10), (600, 33), (5, 700)])
def test_layernorm(rows, cols):
    rng = _rng(42)
    x, dy, gamma, beta = _f32(rng, rows, cols), _f32(rng, rows, cols), _f32(rng, cols), \
        _f32(rng, cols)

    def run(t):
        y, dx_only, dx, dgamma, dbeta = (np.empty((rows, cols), np.float32),
                                         np.empty((rows, cols), np.float32),
                                         np.empty((rows, cols), np.float32),
                                         np.empty(cols, np.float32), np.empty(cols, np.float32))
        K.layernorm(x, y, gamma, beta, nthreads=t)
        K.layernorm_grad(x, dy, gamma, dx_only, None, None, nthreads=t)
        K.layernorm_grad(x, dy, gamma, dx, dgamma, dbeta, nthreads=t)
        return y, dx_only, dx, dgamma, dbeta

    y, dx_only, dx, dgamma, dbeta = across_threads(run, f"layernorm {rows}x{cols}")
    assert_close(y, ref_norm.layernorm(x, gamma, beta), rtol=1e-5, atol=1e-5, what="layernorm")
    refs = ref_norm.layernorm_backward(x, dy, gamma)
    mags = ref_norm.layernorm_backward(x, dy, gamma, magnitude=True)
    assert np.array_equal(dx_only, dx)
    for name, g, r, m in zip(("dx", "dgamma", "dbeta"), (dx, dgamma, dbeta), refs, mags):
        assert_close(g, r, m, rtol=1e-5, atol=1e-6, what=f"layernorm grad {name}")


@pytest.mark.parametrize("rows, n", [(1, 1), (1, 1000), (37, 10), (9, 130)])
def test_log_softmax_and_glu(rows, n):
    rng = _rng(43)
    x, dy = 3 * _f32(rng, rows, 2 * n), _f32(rng, rows, 2 * n)

    def run(t):
        y, dx = np.empty_like(x), np.empty_like(x)
        K.log_softmax(x, y, nthreads=t)
        K.log_softmax_grad(dy, y, dx, nthreads=t)
        g, dg = np.empty((rows, n), np.float32), np.empty_like(x)
        K.glu(x, g, nthreads=t)
        K.glu_grad(dy[:, :n].copy(), x, dg, nthreads=t)
        return y, dx, g, dg

    y, dx, g, dg = across_threads(run, f"log_softmax/glu {rows}x{n}")
    assert_close(y, ref_log_softmax(x), rtol=1e-6, atol=1e-5, what="log_softmax")
    assert_close(dx, ref_log_softmax_backward(dy, y), rtol=1e-5, atol=1e-5,
                 what="log_softmax grad")
    assert_close(g, ref_glu(x), rtol=1e-6, atol=1e-7, what="glu")
    assert_close(dg, ref_glu_backward(dy[:, :n], x), rtol=1e-6, atol=1e-7, what="glu grad")


@pytest.mark.parametrize("n", [1, 33, 5000])
def test_dropout(n):
    rng = _rng(44)
    x, dy = _f32(rng, n), _f32(rng, n)

    def run(t):
        y, mask, dx = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32)
        state = np.array([12345], np.uint64)
        K.dropout(x, y, mask, 0.3, state, nthreads=t)
        K.dropout_grad(dy, mask, dx, nthreads=t)
        return y, mask, dx, state.view(np.float32)

    y, mask, dx, state = across_threads(run, f"dropout {n}")
    want, new_state = dropout_mask(n, 0.3, 12345)
    assert np.array_equal(mask, want) and int(state.view(np.uint64)[0]) == new_state
    assert np.array_equal(y, x * want) and np.array_equal(dx, dy * want)


# --- batch normalization ------------------------------------------------------------------

@pytest.mark.parametrize("rows, c", [(1, 1), (7, 13), (300, 40), (33, 600), (2, 257)])
def test_batchnorm(rows, c):
    rng = _rng(51)
    x, dy, gamma, beta = _f32(rng, rows, c), _f32(rng, rows, c), _f32(rng, c), _f32(rng, c)
    moving0 = np.concatenate([_f32(rng, c), np.abs(_f32(rng, c)) + 0.5])

    def run(t):
        y_inf, y, saved, moving = (np.empty((rows, c), np.float32),
                                   np.empty((rows, c), np.float32),
                                   np.empty(2 * c, np.float32), moving0.copy())
        K.batchnorm_inference(x, moving0, gamma, beta, y_inf, nthreads=t)
        K.batchnorm_train(x, moving, gamma, beta, y, saved, momentum=0.9, bessel=True,
                          nthreads=t)
        grads = [np.empty((rows, c), np.float32), np.empty(c, np.float32),
                 np.empty(c, np.float32)]
        K.batchnorm_train_grad(x, dy, saved, gamma, *grads, nthreads=t)
        igrads = [np.empty((rows, c), np.float32), np.empty(c, np.float32),
                  np.empty(c, np.float32)]
        K.batchnorm_inference_grad(x, dy, moving0, gamma, *igrads, nthreads=t)
        return (y_inf, y, saved, moving, *grads, *igrads)

    out = across_threads(run, f"batchnorm {rows}x{c}")
    y_inf, y, saved, moving = out[:4]
    assert_close(y_inf, ref_norm.batchnorm_inference(x, moving0, gamma, beta), rtol=1e-5,
                 atol=1e-5, what="batchnorm inference")
    ref_y, _, _ = ref_norm.batchnorm_train(x, gamma, beta)
    assert_close(y, ref_y, rtol=1e-4, atol=1e-4, what="batchnorm train")
    assert_close(moving, ref_norm.moving_update(moving0, x, 0.9, True), rtol=1e-5, atol=1e-6,
                 what="moving statistics")
    refs = ref_norm.batchnorm_train_backward(x, dy, gamma)
    mags = ref_norm.batchnorm_train_backward(x, dy, gamma, magnitude=True)
    for name, g, r, m in zip(("dx", "dgamma", "dbeta"), out[4:7], refs, mags):
        assert_close(g, r, m, rtol=2e-5, atol=1e-5, what=f"batchnorm train grad {name}")
    for name, g, r in zip(("dx", "dgamma", "dbeta"), out[7:],
                          ref_norm.batchnorm_inference_backward(x, dy, moving0, gamma)):
        assert_close(g, r, None, rtol=1e-4, atol=1e-4, what=f"batchnorm inference grad {name}")


# --- layout -------------------------------------------------------------------------------

@pytest.mark.parametrize("n, h, w, c", [(1, 1, 1, 1), (2, 5, 7, 3), (1, 17, 9, 40)])
def test_layout_copies(n, h, w, c):
    rng = _rng(61)
    x = _f32(rng, n, h, w, c)
    dy_up = _f32(rng, n, 2 * h, 3 * w, c)

    def run(t):
        padded = np.empty((n, h + 3, w + 1, c), np.float32)
        K.window_copy(x, padded, 2, 1, nthreads=t)
        cropped = np.empty((n, max(h - 1, 1), max(w - 2, 1), c), np.float32)
        K.window_copy(x, cropped, -1 if h > 1 else 0, -1 if w > 2 else 0, nthreads=t)
        cat = np.zeros((n * h * w, c + 5), np.float32)
        K.concat(x.ravel(), cat.ravel(), n * h * w, 2, nthreads=t)
        back = np.empty(x.size, np.float32)
        K.concat_grad(cat.ravel(), back, n * h * w, 2, nthreads=t)
        up = np.empty((n, 2 * h, 3 * w, c), np.float32)
        K.upsample_nearest(x, up, 2, 3, nthreads=t)
        dup = np.empty_like(x)
        K.upsample_nearest_grad(dy_up, dup, 2, 3, nthreads=t)
        bil = np.empty((n, 2 * h + 1, 3 * w, c), np.float32)
        K.upsample_bilinear(x, bil, nthreads=t)
        return padded, cropped, cat, back, up, dup, bil

    padded, cropped, cat, back, up, dup, bil = across_threads(run, f"layout {(n, h, w, c)}")
    assert np.array_equal(padded, ref_window_copy(x, h + 3, w + 1, 2, 1))
    assert np.array_equal(cropped, ref_window_copy(x, cropped.shape[1], cropped.shape[2],
                                                   -1 if h > 1 else 0, -1 if w > 2 else 0))
    assert np.array_equal(cat[:, 2:2 + c], x.reshape(-1, c)) and np.array_equal(back, x.ravel())
    assert np.array_equal(up, ref_nearest(x, 2, 3))
    assert_close(dup, ref_nearest_backward(dy_up, 2, 3),
                 ref_nearest_backward(dy_up, 2, 3, magnitude=True), rtol=1e-6, what="nearest grad")
    assert_close(bil, ref_bilinear(x, 2 * h + 1, 3 * w), rtol=1e-5, atol=1e-5, what="bilinear")


# --- optimizers -----------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 17, 1000, 4099])
def test_optimizer_updates(n):
    rng = _rng(71)
    w0, g = _f32(rng, n), _f32(rng, n)

    def run(t):
        out = []
        w, m = w0.copy(), np.zeros(n, np.float32)
        for _ in range(2):
            K.sgd_step(w, g, 0.1, m, 0.9, True, nthreads=t)
        out += [w, m]
        w, m, v = w0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        K.weight_decay_step(w, 0.01, 0.004, nthreads=t)
        K.adam_step(w, m, v, g, K.adam_step_size(0.01, 0.9, 0.999, 1), nthreads=t)
        out += [w, m, v]
        w, v, mom = w0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        K.rmsprop_step(w, v, g, 0.01, momentum=0.5, momentums=mom, nthreads=t)
        out += [w, v, mom]
        return tuple(out)

    out = across_threads(run, f"optimizers n={n}")
    state = {"m": np.zeros(n, np.float32)}
    w = w0
    for _ in range(2):
        w = ref_opt.sgd(w, g, state, 0.1, 0.9, True)
    assert np.array_equal(out[0], w) and np.array_equal(out[1], state["m"])
    state = {"m": np.zeros(n, np.float32), "v": np.zeros(n, np.float32)}
    w = ref_opt.adam(ref_opt.weight_decay(w0, 0.01, 0.004), g, state, 0.01, 1)
    assert np.array_equal(out[2], w) and np.array_equal(out[3], state["m"])
    state = {"v": np.zeros(n, np.float32), "mom": np.zeros(n, np.float32)}
    w = ref_opt.rmsprop(w0, g, state, 0.01, momentum=0.5)
    assert np.array_equal(out[5], w) and np.array_equal(out[7], state["mom"])
