"""Depthwise micro-kernels (f32_dwconv_microkernels.h) on every variant this CPU runs,
against the float64 reference: channel counts that leave a tail for every vector width
(16, 8, 4 and the one-lane tile), 1x1 images, odd sizes, stride 2, dilation, same and
valid, depth multiplier 2 (the scalar path), the fused relu / relu6 clamp and activations
run after; at 1, 2, 3 and 4 threads, which must give the same bits as 1 thread.

The work a thread must get before the kernel wakes it is lowered here
(_set_parallel_grain), so the small shapes take the parallel path too."""
import os
import subprocess
import sys

import numpy as np
import pytest

import shapes
from edgecore import _kernels as K
from reference.activations import LIPSCHITZ
from reference.check import assert_close
from reference.dwconv2d import dwconv2d as ref_dwconv2d

ISAS = K.available_dwconv_isas()
THREADS = (1, 2, 3, 4)
CHANNELS = [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33]

# (kh, kw, sh, sw, dh, dw, padding): the specialised 3x3 / 5x5 stride 1 / 2 tiles, and the
# general tile (dilation, 7x7, mixed strides).
ROWS = [(3, 3, 1, 1, 1, 1, "same"), (3, 3, 2, 2, 1, 1, "same"), (3, 3, 1, 1, 1, 1, "valid"),
        (3, 3, 2, 2, 1, 1, "valid"), (5, 5, 1, 1, 1, 1, "same"), (5, 5, 2, 2, 1, 1, "same"),
        (5, 5, 2, 2, 1, 1, "valid"), (3, 3, 1, 1, 2, 2, "same"), (5, 5, 1, 1, 2, 3, "valid"),
        (7, 7, 1, 1, 1, 1, "same"), (3, 3, 2, 1, 1, 1, "same"), (3, 3, 1, 2, 1, 1, "valid")]
SIZES = [(1, 1), (5, 3), (9, 7), (12, 13)]


def _cases():
    cases, i = [], 0
    for row in ROWS:
        for hw in SIZES:
            for _ in range(2):
                cases.append(shapes._case(1, hw, CHANNELS[i % len(CHANNELS)], 1, row))
                i += 1
    # Depth multiplier 2, batches, and one case per channel count on the common 3x3 tiles.
    for c in CHANNELS:
        cases.append(shapes._case(2, (7, 6), c, 1, ROWS[c % 2]))
    cases += [shapes._case(1, (9, 7), c, 2, row) for c in (3, 17) for row in ROWS[:2]]
    return [c for c in cases if c is not None]


CASES = _cases()


@pytest.fixture(autouse=True)
def small_work_runs_in_parallel():
    previous = K._set_parallel_grain(1 << 30)
    yield
    K._set_parallel_grain(previous)


@pytest.fixture(params=ISAS)
def isa(request):
    previous = K.dwconv_isa()[0]
    K.set_dwconv_isa(request.param)
    yield request.param
    K.set_dwconv_isa(previous)


def _inputs(case, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.n, case.h, case.w, case.cin)).astype(np.float32)
    w = rng.standard_normal((case.kh, case.kw, case.cin, case.cout)).astype(np.float32)
    b = rng.standard_normal(case.cin * case.cout).astype(np.float32)
    return x, w, b


def _across_threads(case, x, w, b, act, params):
    first = None
    for t in THREADS:
        y = np.full((case.n,) + case.out_hw + (case.cin * case.cout,), np.nan, np.float32)
        K.dwconv2d(x, w, y, bias=b, act=K.ACTIVATION_CODES[act], nthreads=t, **case.geometry,
                   **params)
        if first is None:
            first = y
            continue
        diff = np.flatnonzero(first.view(np.uint32) != y.view(np.uint32))
        assert diff.size == 0, (f"{case.id}: {t} threads differ from 1 thread at {diff.size} "
                                f"of {y.size} elements")
    return first


ACTS = [("linear", {}), ("relu", {}), ("relu", {"max_value": 6.0}), ("swish", {})]


@pytest.mark.parametrize("act, params", ACTS,
                         ids=[a + "".join(f"_{k}{v}" for k, v in p.items()) for a, p in ACTS])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_dwconv2d_variant(isa, case, act, params):
    x, w, b = _inputs(case, 7)
    y = _across_threads(case, x, w, b, act, params)
    ref = ref_dwconv2d(x, w, b, act=act, **case.geometry, **params)
    mag = ref_dwconv2d(x, w, b, magnitude=True, **case.geometry) * LIPSCHITZ[act]
    assert_close(y, ref, mag, what=f"dwconv2d {isa} {act} {case.id}")


def test_dwconv2d_relu_keeps_nan(isa):
    """The fused clamp keeps NaN as TensorFlow's Relu / Relu6 do."""
    case = shapes._case(1, (6, 6), 19, 1, ROWS[0])
    x, w, b = _inputs(case, 8)
    x[0, 2, 3, :] = np.nan
    y = _across_threads(case, x, w, b, "relu", {"max_value": 6.0})
    ref = ref_dwconv2d(x, w, b, act="relu", max_value=6.0, **case.geometry)
    assert np.array_equal(np.isnan(y), np.isnan(ref))
    assert (y[~np.isnan(y)] >= 0).all() and (y[~np.isnan(y)] <= 6).all()


def test_dwconv2d_isa_variants_agree_within_rounding():
    """Every variant computes the same sum in the same order; they differ only by fused or
    separate multiply-adds, so within a few ulp of the sum of magnitudes."""
    case = shapes._case(1, (15, 14), 37, 1, ROWS[5])
    x, w, b = _inputs(case, 9)
    previous = K.dwconv_isa()[0]
    outs = {}
    try:
        for name in ISAS:
            K.set_dwconv_isa(name)
            outs[name] = _across_threads(case, x, w, b, "linear", {})
    finally:
        K.set_dwconv_isa(previous)
    mag = ref_dwconv2d(x, w, b, magnitude=True, **case.geometry)
    for name, y in outs.items():
        assert_close(y, outs[ISAS[0]].astype(np.float64), mag, what=f"{name} vs {ISAS[0]}")


def test_dwconv2d_isa_env_switch():
    """EDGECORE_DWCONV_ISA forces a variant at import, as EDGECORE_GEMM_ISA does for the
    GEMM; an unknown name is a clear error."""
    code = "from edgecore import _kernels as K; print(K.dwconv_isa()[0])"
    for name in ISAS:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, EDGECORE_DWCONV_ISA=name), check=True)
        assert out.stdout.strip() == name
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, EDGECORE_DWCONV_ISA="sse9"))
    assert bad.returncode != 0 and "sse9" in bad.stderr


def test_dwconv2d_best_variant_by_default():
    import edgecore as ec
    if "EDGECORE_DWCONV_ISA" in os.environ:
        pytest.skip("EDGECORE_DWCONV_ISA forces a variant")
    assert K.dwconv_isa()[0] == ISAS[0] == ec.build_info()["dwconv_isa"]
    assert ISAS[-1] in ("vec128", "neon")
