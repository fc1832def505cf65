"""Softmax over the middle axis of (outer, n, inner): last-axis fast path and strided
axes, in place, extreme logits, validation."""
import numpy as np
import pytest

from edgecore import _kernels as K
from reference.check import assert_close, assert_unchanged, frozen
from reference.softmax import softmax as ref_softmax

SHAPES = [(1, 1, 1), (1, 1000, 1), (4, 10, 1), (3, 17, 1), (2, 5, 7), (1, 3, 64),
          (6, 1, 3), (2, 33, 13)]


def _tol(x):
    # expf(x - max) in float32: x - max rounds with relative error eps32, an absolute error
    # eps32 * |x - max| in the exponent, i.e. a relative error of that size in each term.
    spread = np.abs(x - x.max(axis=1, keepdims=True)).astype(np.float64)
    return 2e-7 * (1.0 + spread)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_softmax_matches_reference(shape):
    rng = np.random.default_rng(11)
    (x,), copies = frozen(rng.standard_normal(shape) * 4)
    y = np.full(shape, np.nan, np.float32)
    K.softmax(x, y)
    ref = ref_softmax(x)
    assert_close(y, ref, ref * _tol(x) * 4, rtol=1.0, atol=1e-9, what=f"softmax {shape}")
    assert_unchanged([x], copies, "softmax")


@pytest.mark.parametrize("shape", [(4, 10, 1), (2, 5, 7)], ids=lambda s: "x".join(map(str, s)))
def test_softmax_in_place(shape):
    rng = np.random.default_rng(12)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    ref = ref_softmax(x)
    K.softmax(x, x)
    assert_close(x, ref, ref * 1e-5, rtol=1.0, atol=1e-9, what="softmax in place")


@pytest.mark.parametrize("inner", [1, 3])
def test_softmax_extreme_logits(inner):
    """Subtracting the max keeps exp finite (exp(89) overflows float32): logits of +-1e4
    with the max first, last and in the middle, and a row of equal values."""
    rows = [[1e4, 0.0, -1e4, 1e4 - 1], [0.0, -5.0, -1e4, 200.0], [-1e4, 150.0, 0.0, 1.0],
            [3.0, 3.0, 3.0, 3.0]]
    x = np.repeat(np.array(rows, np.float32)[:, :, None], inner, axis=2)
    if inner > 1:
        x[:, :, -1] *= -1             # a different max position in one strided lane
    y = np.empty_like(x)
    K.softmax(x, y)
    assert np.isfinite(y).all()
    assert_close(y, ref_softmax(x), rtol=1e-6, atol=1e-12, what="extreme logits")


def test_softmax_validation():
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(K.KernelShapeError):
        K.softmax(x, np.empty((2, 3, 5), np.float32))
    with pytest.raises(K.KernelShapeError):
        K.softmax(np.ones((2, 0, 4), np.float32), np.empty((2, 0, 4), np.float32))
    buf = np.ones(30, np.float32)
    with pytest.raises(K.KernelShapeError):           # partial overlap is not in place
        K.softmax(buf[:24].reshape(2, 3, 4), buf[4:28].reshape(2, 3, 4))
