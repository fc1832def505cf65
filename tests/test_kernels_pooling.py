"""Max / average pooling (Keras 'same' semantics: padding ignored by max, not counted by
average) and global pooling, against explicit-window float64 references."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import shapes
from edgecore import _kernels as K
from reference.check import assert_close, assert_unchanged, frozen
from reference.pooling import global_pool, pool2d, pool2d_fast

CASES = shapes.pool_cases()
KINDS = {"max": K.maxpool2d, "avg": K.avgpool2d}


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pool2d_matches_reference(case, kind):
    rng = np.random.default_rng(31)
    (x,), copies = frozen(rng.standard_normal((case.n, case.h, case.w, case.c)))
    y = np.full((case.n,) + case.out_hw + (case.c,), np.nan, np.float32)
    KINDS[kind](x, y, (case.ph, case.pw), (case.sh, case.sw), case.pads)
    ref = pool2d(x, (case.ph, case.pw), (case.sh, case.sw), case.pads, kind)
    if kind == "max":
        assert np.array_equal(y, ref.astype(np.float32)), f"maxpool {case.id} is not exact"
    else:
        # A mean of at most 25 float32 values, summed in float32: a few ulp of the sum of |x|.
        mag = pool2d(np.abs(x), (case.ph, case.pw), (case.sh, case.sw), case.pads, "avg")
        assert_close(y, ref, mag, rtol=1e-6, atol=1e-7, what=f"avgpool {case.id}")
    assert_unchanged([x], copies, f"{kind}pool")


def test_same_average_excludes_padding():
    """The corner of a 3x3 'same' average over ones is 1, not 4/9 (count_include_pad)."""
    x = np.ones((1, 4, 4, 2), np.float32)
    y = np.empty((1, 4, 4, 2), np.float32)
    K.avgpool2d(x, y, (3, 3), (1, 1), (1, 1, 1, 1))
    assert (y == 1).all()


def test_max_ignores_padding_for_negative_inputs():
    x = -np.ones((1, 3, 3, 1), np.float32)
    y = np.empty((1, 3, 3, 1), np.float32)
    K.maxpool2d(x, y, (3, 3), (1, 1), (1, 1, 1, 1))
    assert (y == -1).all()


def test_default_strides_are_pool_size():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    y = np.empty((1, 2, 2, 1), np.float32)
    K.maxpool2d(x, y, (2, 2))
    assert y.ravel().tolist() == [5, 7, 13, 15]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("n, h, w, c", [(1, 1, 1, 1), (2, 7, 7, 13), (1, 14, 14, 576),
                                        (1, 56, 56, 24), (3, 9, 7, 300)])
def test_global_pool(n, h, w, c, kind):
    rng = np.random.default_rng(5)
    # A large common offset makes float32 running sums drift; the kernel must not.
    (x,), copies = frozen(rng.standard_normal((n, h, w, c)) + 100.0)
    y = np.full((n, c), np.nan, np.float32)
    (K.global_maxpool if kind == "max" else K.global_avgpool)(x, y)
    ref = global_pool(x, kind)
    if kind == "max":
        assert np.array_equal(y, ref.astype(np.float32))
    else:
        # Runs of 8 pixels summed in float, runs added in double: at most ~8 roundings of
        # a partial sum plus the final one.  A plain float32 running sum drifts ~10x
        # further on 56x56 (checked: test_float32_running_sum_would_fail).
        assert_close(y, ref, rtol=4e-7, atol=0, what=f"global_avgpool {(n, h, w, c)}")
    assert_unchanged([x], copies, "global pool")


def test_float32_running_sum_would_fail():
    """The global-average tolerance above is tight enough to reject naive accumulation."""
    x = (np.random.default_rng(5).standard_normal((1, 56, 56, 24)) + 100.0).astype(np.float32)
    naive = np.cumsum(x.reshape(-1, 24), axis=0, dtype=np.float32)[-1] / np.float32(56 * 56)
    with pytest.raises(AssertionError):
        assert_close(naive, x.astype(np.float64).mean(axis=(1, 2))[0], rtol=4e-7, atol=0)


def test_numpy_pool_used_by_the_benchmark_is_right():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 18, 17, 5)).astype(np.float32)
    pads = shapes.same_pads(18, 17, 3, 3, 2, 2)
    for kind in ("max", "avg"):
        assert_close(pool2d_fast(x, (3, 3), (2, 2), pads, kind),
                     pool2d(x, (3, 3), (2, 2), pads, kind), what=f"pool2d_fast {kind}")


def test_pool_validation():
    x = np.ones((1, 9, 7, 4), np.float32)
    ok = np.empty((1, 4, 3, 4), np.float32)
    K.maxpool2d(x, ok, (2, 2))
    bad = [
        lambda: K.maxpool2d(x, np.empty((1, 4, 3, 5), np.float32), (2, 2)),
        lambda: K.avgpool2d(x, np.empty((1, 5, 3, 4), np.float32), (2, 2)),
        lambda: K.maxpool2d(x, ok, (2, 2), (0, 2)),
        lambda: K.maxpool2d(x, ok, (0, 2)),
        lambda: K.avgpool2d(x, ok, (2, 2), (2, 2), (2, 0, 0, 0)),        # pad >= window
        lambda: K.avgpool2d(x, ok, (2, 2), (2, 2), (-1, 0, 0, 0)),
        lambda: K.maxpool2d(x, ok, (10, 2)),                             # window > image
        lambda: K.maxpool2d(x, ok, (2, 2), (2, 2), (0, 0, 0)),
        lambda: K.global_avgpool(x, np.empty((1, 5), np.float32)),
        lambda: K.global_maxpool(x, np.empty((2, 4), np.float32)),
        lambda: K.global_avgpool(np.ones((1, 0, 7, 4), np.float32), np.empty((1, 4), np.float32)),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


@st.composite
def _pool_geometries(draw):
    ph, pw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    # Any pads below the window size (the kernels' contract; Keras 'same' is a subset).
    pads = (draw(st.integers(0, ph - 1)), draw(st.integers(0, ph - 1)),
            draw(st.integers(0, pw - 1)), draw(st.integers(0, pw - 1)))
    case = shapes.PoolCase(draw(st.integers(1, 2)), h, w, draw(st.sampled_from([1, 3, 16, 17])),
                           ph, pw, sh, sw, "explicit", pads)
    assume(min(case.out_hw) > 0)
    return case


@settings(max_examples=150, deadline=None, derandomize=True)
@given(case=_pool_geometries(), kind=st.sampled_from(["max", "avg"]))
def test_pool2d_random_geometry(case, kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.n, case.h, case.w, case.c)).astype(np.float32)
    y = np.full((case.n,) + case.out_hw + (case.c,), np.nan, np.float32)
    KINDS[kind](x, y, (case.ph, case.pw), (case.sh, case.sw), case.pads)
    ref = pool2d(x, (case.ph, case.pw), (case.sh, case.sw), case.pads, kind)
    mag = pool2d(np.abs(x), (case.ph, case.pw), (case.sh, case.sw), case.pads, "avg")
    assert_close(y, ref, mag, rtol=1e-6, atol=0, what=f"{kind}pool {case.id}")
