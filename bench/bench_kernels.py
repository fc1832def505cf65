"""Kernel benchmarks: each pytest-benchmark group times one of our kernels and the plain
NumPy (or NumPy + OpenBLAS) implementation of the same operation on the same shapes, taken
from MobileNetV2 and other real networks.  Every pair is checked for agreement before it
is timed; bench/conftest.py ends the session with each group's medians and
reference / edgecore ratios.

Run (single-threaded BLAS so the GEMM comparison is per core, as our kernels are):
    OPENBLAS_NUM_THREADS=1 pytest bench/bench_kernels.py --benchmark-only
"""
import os
import sys

import numpy as np
import pytest

# tests/ for the references; never the repository root, whose edgecore/ is the uncompiled
# source tree (pytest then imported it instead of the installed package).
_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import shapes  # noqa: E402
from edgecore import _kernels as K  # noqa: E402
from reference.check import assert_close  # noqa: E402
from reference.conv2d import conv2d_backward_fast  # noqa: E402
from reference.dwconv2d import dwconv2d as np_dwconv2d  # noqa: E402
from reference.gemm import dense_backward  # noqa: E402
from reference.pooling import pool2d_fast  # noqa: E402
from reference.softmax import softmax as np_softmax  # noqa: E402

RELU6 = K.ACTIVATION_CODES["relu"]


def _time(benchmark, group, impl, fn):
    """Time fn under bench/conftest.py's conventions (it prints the per-group ratios)."""
    benchmark.group = group
    benchmark.extra_info["impl"] = impl
    benchmark(fn)


# --- DepthwiseConv2D + ReLU6, MobileNetV2 (h, c, stride), 3x3 'same' ----------------------

DW_SHAPES = [(112, 32, 1), (112, 96, 2), (56, 144, 1), (56, 144, 2), (28, 192, 1),
             (14, 576, 1), (7, 960, 1)]


@pytest.mark.parametrize("impl", ["edgecore", "numpy"])
@pytest.mark.parametrize("h, c, s", DW_SHAPES, ids=[f"{h}x{h}x{c}_s{s}" for h, c, s in DW_SHAPES])
def test_dwconv2d(benchmark, h, c, s, impl):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, h, h, c)).astype(np.float32)
    w = rng.standard_normal((3, 3, c, 1)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    pads = shapes.same_pads(h, h, 3, 3, s, s)
    oh = -(-h // s)
    y = np.empty((1, oh, oh, c), np.float32)
    geom = dict(strides=(s, s), dilation=(1, 1), pads=pads)

    def ours():
        K.dwconv2d(x, w, y, bias=b, act=RELU6, max_value=6.0, **geom)

    def numpy():
        return np.clip(np_dwconv2d(x, w, b, dtype=np.float32, **geom), 0, 6)

    ours()
    assert_close(y, np.clip(np_dwconv2d(x, w, b, **geom), 0, 6),
                 np_dwconv2d(x, w, b, magnitude=True, **geom), what="bench dwconv2d")
    _time(benchmark, f"dwconv2d 3x3 relu6 {h}x{h}x{c} s{s}", impl, ours if impl == "edgecore" else numpy)


# --- Pooling -------------------------------------------------------------------------------

POOLS = [  # (kind, h, c, pool, stride, padding)
    ("max", 112, 64, 2, 2, "valid"),       # VGG-style
    ("max", 112, 64, 3, 2, "same"),        # ResNet stem
    ("avg", 28, 256, 2, 2, "valid"),       # DenseNet transition
    ("avg", 56, 24, 3, 1, "same"),         # Inception branch
]


@pytest.mark.parametrize("impl", ["edgecore", "numpy"])
@pytest.mark.parametrize("kind, h, c, p, s, padding", POOLS,
                         ids=[f"{k}{p}x{p}s{s}_{h}x{h}x{c}_{pd}" for k, h, c, p, s, pd in POOLS])
def test_pool2d(benchmark, kind, h, c, p, s, padding, impl):
    x = np.random.default_rng(1).standard_normal((1, h, h, c)).astype(np.float32)
    pads = shapes.same_pads(h, h, p, p, s, s) if padding == "same" else (0, 0, 0, 0)
    oh = shapes.out_size(h, p, s, 1, pads[0], pads[1])
    y = np.empty((1, oh, oh, c), np.float32)
    fn = K.maxpool2d if kind == "max" else K.avgpool2d

    def ours():
        fn(x, y, (p, p), (s, s), pads)

    def numpy():
        return pool2d_fast(x, (p, p), (s, s), pads, kind)

    ours()
    assert_close(y, numpy(), rtol=1e-6, atol=1e-6, what="bench pool2d")
    _time(benchmark, f"{kind}pool {p}x{p} s{s} {padding} {h}x{h}x{c}", impl,
          ours if impl == "edgecore" else numpy)


GLOBAL_POOLS = [(7, 1280), (56, 24), (14, 576)]


@pytest.mark.parametrize("impl", ["edgecore", "numpy"])
@pytest.mark.parametrize("h, c", GLOBAL_POOLS, ids=[f"{h}x{h}x{c}" for h, c in GLOBAL_POOLS])
def test_global_avgpool(benchmark, h, c, impl):
    x = np.random.default_rng(2).standard_normal((1, h, h, c)).astype(np.float32)
    y = np.empty((1, c), np.float32)

    def ours():
        K.global_avgpool(x, y)

    def numpy():
        return x.mean(axis=(1, 2))

    ours()
    assert_close(y, x.astype(np.float64).mean(axis=(1, 2)), rtol=1e-6, atol=1e-7, what="bench gap")
    _time(benchmark, f"global_avgpool {h}x{h}x{c}", impl, ours if impl == "edgecore" else numpy)


# --- Softmax --------------------------------------------------------------------------------

SOFTMAXES = [(1, 1000, 1), (32, 1000, 1), (56 * 56, 21, 1), (1, 21, 56 * 56)]


@pytest.mark.parametrize("impl", ["edgecore", "numpy"])
@pytest.mark.parametrize("shape", SOFTMAXES, ids=lambda s: "x".join(map(str, s)))
def test_softmax(benchmark, shape, impl):
    x = (np.random.default_rng(3).standard_normal(shape) * 3).astype(np.float32)
    y = np.empty_like(x)

    def ours():
        K.softmax(x, y)

    def numpy():
        return np_softmax(x, axis=1, dtype=np.float32)

    ours()
    assert_close(y, np_softmax(x), rtol=1e-5, atol=1e-9, what="bench softmax")
    _time(benchmark, f"softmax (outer, n, inner)={shape}", impl, ours if impl == "edgecore" else numpy)


# --- GEMM: MobileNetV2 1x1 convolutions as (M = H*W, K = Cin, N = Cout) ---------------------

GEMMS = [(112, 32, 16), (112, 16, 96), (56, 24, 144), (56, 144, 24), (28, 32, 192),
         (28, 192, 32), (14, 384, 64), (14, 576, 96), (7, 960, 160), (7, 160, 960),
         (7, 320, 1280)]


@pytest.mark.parametrize("impl", ["edgecore", "numpy"])
@pytest.mark.parametrize("hw, k, n", GEMMS, ids=[f"{h}x{h}_{k}to{n}" for h, k, n in GEMMS])
def test_gemm_pointwise(benchmark, hw, k, n, impl):
    rng = np.random.default_rng(4)
    m = hw * hw
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    bp = np.empty(K.gemm_packed_size(k, n), np.float32)
    K.gemm_pack_b(b, bp)
    biasp = np.empty(K.gemm_packed_bias_size(n), np.float32)
    K.gemm_pack_bias(bias, biasp)
    c = np.empty((m, n), np.float32)
    c_ref = np.empty((m, n), np.float32)

    def ours():
        K.gemm(a, bp, n, c, bias_packed=biasp)

    def numpy():
        np.matmul(a, b, out=c_ref)
        np.add(c_ref, bias, out=c_ref)

    ours()
    ref = a.astype(np.float64) @ b + bias
    assert_close(c, ref, np.abs(a).astype(np.float64) @ np.abs(b) + np.abs(bias), what="bench gemm")
    isa = K.gemm_isa()[0]
    _time(benchmark, f"gemm[{isa}] {hw}x{hw} {k}->{n} (m={m})", impl,
          ours if impl == "edgecore" else numpy)


# --- Standalone activation (OP_ACTIVATION), ReLU6 over a MobileNetV2 expansion output ------

@pytest.mark.parametrize("impl", ["edgecore", "numpy"])
def test_activation_relu6(benchmark, impl):
    x = np.random.default_rng(5).standard_normal(56 * 56 * 144).astype(np.float32)
    y = np.empty_like(x)
    y_ref = np.empty_like(x)

    def ours():
        K.activation(x, y, RELU6, 0.0, 6.0)

    def numpy():
        np.clip(x, 0, 6, out=y_ref)

    ours()
    assert np.array_equal(y, np.clip(x, 0, 6))
    _time(benchmark, "activation relu6 56x56x144", impl, ours if impl == "edgecore" else numpy)


# --- Training: Dense and Conv2D backward on MobileNetV2-head shapes, batch 32 ---------------
# Our GEMM-based backward (weights in their plain Keras layout, transposed / packed into
# scratch every call) against NumPy + OpenBLAS doing x.T @ dy, dy @ w.T and dy.sum(0).

DENSE_BACKWARD = [(32, 1280, 10), (32, 1280, 1000)]


@pytest.mark.parametrize("impl", ["edgecore", "numpy"])
@pytest.mark.parametrize("m, k, n", DENSE_BACKWARD, ids=[f"{m}x{k}to{n}" for m, k, n in DENSE_BACKWARD])
def test_dense_backward(benchmark, m, k, n, impl):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    dx, dw, db = np.empty((m, k), np.float32), np.empty((k, n), np.float32), np.empty(n, np.float32)
    scratch = np.empty(K.dense_grad_scratch_size(m, k, n), np.float32)
    dx_ref, dw_ref, db_ref = np.empty_like(dx), np.empty_like(dw), np.empty_like(db)

    def ours():
        K.dense_grad(x, w, dy, dx, dw, db, scratch)

    def numpy():
        np.matmul(x.T, dy, out=dw_ref)
        np.matmul(dy, w.T, out=dx_ref)
        np.sum(dy, axis=0, out=db_ref)

    ours()
    for got, ref, mag in zip((dx, dw, db), dense_backward(x, w, dy), dense_backward(x, w, dy, True)):
        assert_close(got, ref, mag, what="bench dense_backward")
    _time(benchmark, f"dense_backward[{K.gemm_isa()[0]}] {m}x{k} -> {n}", impl,
          ours if impl == "edgecore" else numpy)


CONV_BACKWARD = [  # (n, hw, cin, cout, k): the MobileNetV2 head 1x1, and a 3x3 'same' head
    (32, 7, 320, 1280, 1), (32, 7, 160, 160, 3)]


@pytest.mark.parametrize("impl", ["edgecore", "numpy"])
@pytest.mark.parametrize("n, hw, cin, cout, k", CONV_BACKWARD,
                         ids=[f"{n}x{h}x{h}x{ci}_{k}x{k}to{co}" for n, h, ci, co, k in CONV_BACKWARD])
def test_conv2d_backward(benchmark, n, hw, cin, cout, k, impl):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, hw, hw, cin)).astype(np.float32)
    w = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
    dy = rng.standard_normal((n, hw, hw, cout)).astype(np.float32)
    geom = dict(strides=(1, 1), dilation=(1, 1), pads=shapes.same_pads(hw, hw, k, k, 1, 1))
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty(cout, np.float32)
    scratch = np.empty(K.conv2d_grad_scratch_size(x.shape, w.shape, **geom), np.float32)

    def ours():
        K.conv2d_grad(x, w, dy, dx, dw, db, scratch, **geom)

    def numpy():
        return conv2d_backward_fast(x, w, dy, **geom)

    ours()
    for got, ref in zip((dx, dw, db), numpy()):     # both float32: agree to ~1e-5 of the scale
        assert_close(got, ref, rtol=1e-4, atol=1e-5 * float(np.abs(ref).max()),
                     what="bench conv2d_backward")
    _time(benchmark, f"conv2d_backward[{K.gemm_isa()[0]}] {n}x{hw}x{hw}x{cin} {k}x{k} -> {cout}",
          impl, ours if impl == "edgecore" else numpy)
