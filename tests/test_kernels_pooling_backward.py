"""Pooling backward (max: first maximum in row-major window order; average: valid cells
only; global average; global max: split among tied maxima) against the float64 references
on the forward grid, TensorFlow's recorded gradients on tied inputs, finite differences
of the forward kernels, and bad shapes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import shapes
from edgecore import _kernels as K
from reference.check import assert_close, assert_unchanged, frozen
from reference.finite_diff import directional, rounding_error
from reference.pooling import global_pool_backward, pool2d_backward

CASES = shapes.pool_cases()
GRADS = {"max": lambda x, dy, dx, *g: K.maxpool2d_grad(x, dy, dx, *g),
         "avg": lambda x, dy, dx, *g: K.avgpool2d_grad(dy, dx, *g)}
FORWARD = {"max": K.maxpool2d, "avg": K.avgpool2d}


def _run(kind, case, x, dy):
    dx = np.full(x.shape, np.nan, np.float32)
    GRADS[kind](x, dy, dx, (case.ph, case.pw), (case.sh, case.sw), case.pads)
    return dx


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pool2d_grad_matches_reference(case, kind):
    rng = np.random.default_rng(41)
    (x, dy), copies = frozen(rng.standard_normal((case.n, case.h, case.w, case.c)),
                             rng.standard_normal((case.n,) + case.out_hw + (case.c,)))
    dx = _run(kind, case, x, dy)
    pool, strides = (case.ph, case.pw), (case.sh, case.sw)
    ref = pool2d_backward(x, dy, pool, strides, case.pads, kind)
    # At most ceil(p/s)^2 overlapping windows add into one cell, each one float product.
    mag = pool2d_backward(x, np.abs(dy), pool, strides, case.pads, kind)
    assert_close(dx, ref, mag, rtol=1e-6, atol=0, what=f"{kind}pool_grad {case.id}")
    assert_unchanged([x, dy], copies, f"{kind}pool_grad")


# TensorFlow 2.21's gradients of sum(pool(x)) on a 3x3 input with ties (recorded with
# keras.layers.*Pooling2D and tf.GradientTape): max pooling picks the first maximum in
# row-major order of each window, global max pooling splits among the 5 tied maxima.
TIED = np.array([[1, 3, 3], [3, 2, 0], [3, 1, 3]], np.float32).reshape(1, 3, 3, 1)
TF_TIES = {
    ("max", (2, 2), (1, 1), (0, 0, 0, 0)): [[0, 2, 0], [1, 0, 0], [0, 0, 1]],
    ("max", (3, 3), (1, 1), (1, 1, 1, 1)): [[0, 6, 0], [2, 0, 0], [0, 0, 1]],
    ("avg", (2, 2), (1, 1), (0, 1, 0, 1)): [[0.25, 0.5, 0.75], [0.5, 1, 1.5], [0.75, 1.5, 2.25]],
}


@pytest.mark.parametrize("key", list(TF_TIES), ids=lambda k: f"{k[0]}{k[1][0]}_pads{''.join(map(str, k[3]))}")
def test_pool2d_grad_matches_tensorflow_on_ties(key):
    kind, pool, strides, pads = key
    case = shapes.PoolCase(1, 3, 3, 1, *pool, *strides, "explicit", pads)
    dy = np.ones((1,) + case.out_hw + (1,), np.float32)
    assert np.array_equal(_run(kind, case, TIED, dy)[0, :, :, 0], np.array(TF_TIES[key]))


def test_global_maxpool_grad_splits_ties_like_tensorflow():
    dx = np.empty_like(TIED)
    K.global_maxpool_grad(TIED, np.ones((1, 1), np.float32), dx)
    assert np.array_equal(dx[0, :, :, 0], (TIED[0, :, :, 0] == 3) * np.float32(0.2))


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("n, h, w, c", [(1, 1, 1, 1), (2, 7, 7, 13), (1, 14, 14, 300),
                                        (3, 9, 7, 24)])
def test_global_pool_grad(n, h, w, c, kind):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((n, h, w, c))
    x[..., 0] = 1.0                                    # a channel where every pixel ties
    (x, dy), copies = frozen(x, rng.standard_normal((n, c)))
    dx = np.full(x.shape, np.nan, np.float32)
    if kind == "max":
        K.global_maxpool_grad(x, dy, dx)
    else:
        K.global_avgpool_grad(dy, dx)
    assert_close(dx, global_pool_backward(x, dy, kind), rtol=2.4e-7, atol=0,
                 what=f"global_{kind}pool_grad {(n, h, w, c)}")
    assert_unchanged([x, dy], copies, f"global_{kind}pool_grad")


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", [CASES[4], CASES[22], CASES[-3], CASES[-1]], ids=lambda c: c.id)
def test_pool2d_grad_matches_finite_differences(case, kind):
    """Directional derivative of sum(dy * pool(x)) through the forward kernel.  x is a
    permutation of a 0.01-spaced grid, so a step of 1e-3 never changes a window's argmax
    and both poolings are linear over the stencil."""
    rng = np.random.default_rng(42)
    size = case.n * case.h * case.w * case.c
    x = (rng.permutation(size) * 0.01 - size * 0.005).reshape(case.n, case.h, case.w, case.c)
    x = x.astype(np.float32)
    dy = rng.standard_normal((case.n,) + case.out_hw + (case.c,)).astype(np.float32)
    dx = _run(kind, case, x, dy)

    def loss(xv):
        y = np.empty(dy.shape, np.float32)
        FORWARD[kind](xv, y, (case.ph, case.pw), (case.sh, case.sw), case.pads)
        return float((y * dy.astype(np.float64)).sum())

    v = rng.standard_normal(x.shape)
    fd = directional(loss, x.astype(np.float64), v, h=1e-3)
    mag = float((np.abs(dy) * np.abs(x).max()).sum())
    assert abs(fd - float((dx * v).sum())) <= rounding_error(4 * mag, 1e-3), (fd, (dx * v).sum())


@settings(max_examples=60, deadline=None, derandomize=True)
@given(ph=st.integers(1, 4), pw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       h=st.integers(1, 9), w=st.integers(1, 9), kind=st.sampled_from(["max", "avg"]),
       data=st.data())
def test_pool2d_grad_random_geometry(ph, pw, sh, sw, h, w, kind, data):
    pads = (data.draw(st.integers(0, ph - 1)), data.draw(st.integers(0, ph - 1)),
            data.draw(st.integers(0, pw - 1)), data.draw(st.integers(0, pw - 1)))
    case = shapes.PoolCase(2, h, w, 3, ph, pw, sh, sw, "explicit", pads)
    if min(case.out_hw) <= 0:
        return
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
    dy = rng.standard_normal((2,) + case.out_hw + (3,)).astype(np.float32)
    ref = pool2d_backward(x, dy, (ph, pw), (sh, sw), pads, kind)
    mag = pool2d_backward(x, np.abs(dy), (ph, pw), (sh, sw), pads, kind)
    assert_close(_run(kind, case, x, dy), ref, mag, rtol=1e-6, atol=0, what=f"{kind} {case.id}")


def test_pool_grad_validation():
    x = np.ones((1, 9, 7, 4), np.float32)
    dy = np.ones((1, 4, 3, 4), np.float32)
    dx = np.empty_like(x)
    K.maxpool2d_grad(x, dy, dx, (2, 2))
    K.avgpool2d_grad(dy, dx, (2, 2))
    bad = [
        lambda: K.maxpool2d_grad(x, np.ones((1, 4, 4, 4), np.float32), dx, (2, 2)),
        lambda: K.maxpool2d_grad(x, dy, np.empty((1, 9, 6, 4), np.float32), (2, 2)),
        lambda: K.avgpool2d_grad(dy, np.empty((1, 9, 7, 3), np.float32), (2, 2)),
        lambda: K.avgpool2d_grad(dy, dx, (2, 2), (2, 2), (2, 0, 0, 0)),          # pad >= window
        lambda: K.maxpool2d_grad(x, dy, dx, (2, 2), (0, 2)),
        lambda: K.maxpool2d_grad(x, dy, x.copy().reshape(1, 9, 7, 4)[:, :, :, :], (3, 3)),
        lambda: K.global_avgpool_grad(np.ones((1, 5), np.float32), dx),
        lambda: K.global_maxpool_grad(x, np.ones((2, 4), np.float32), dx),
        lambda: K.global_maxpool_grad(x, np.ones((1, 4), np.float32), np.empty((1, 9, 6, 4), np.float32)),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()
    shared = np.ones((1, 9, 7, 4), np.float32)
    with pytest.raises(K.KernelShapeError):                        # dx is x
        K.maxpool2d_grad(shared, dy, shared, (2, 2))
