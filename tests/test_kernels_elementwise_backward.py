"""Softmax, channel-affine / inference-mode BatchNormalization (forward and backward, from
the layer's moving statistics and epsilon),
Concatenate and dropout backward: float64 references, finite differences of the forward
kernels, optional outputs, in-place use, the dropout generator's exact stream and
statistics, and bad shapes."""
import numpy as np
import pytest

from edgecore import _kernels as K
from reference.check import assert_close, assert_unchanged, frozen
from reference.dropout import dropout_mask
from reference.finite_diff import directional, rounding_error
from reference.normalization import batchnorm_inference, batchnorm_inference_backward
from reference.softmax import softmax_backward

SOFTMAX_SHAPES = [(1, 1, 1), (3, 10, 1), (32, 1000, 1), (2, 7, 5), (1, 21, 130), (4, 3, 64)]


def _softmax_case(shape, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    y = np.empty_like(x)
    K.softmax(x, y)
    return x, y, rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_softmax_grad_matches_reference(shape):
    x, y, dy = _softmax_case(shape, 1)
    (y, dy), copies = frozen(y, dy)
    dx = np.full(shape, np.nan, np.float32)
    K.softmax_grad(dy, y, dx)
    mag = np.abs(y) * (np.abs(dy) + (np.abs(dy) * y).sum(axis=1, keepdims=True))
    assert_close(dx, softmax_backward(dy, y), mag, rtol=1e-6, atol=1e-30, what=f"softmax_grad {shape}")
    assert_unchanged([y, dy], copies, "softmax_grad")
    buf = y.copy()
    K.softmax_grad(dy, buf, buf)                                      # dx may be y itself
    assert np.array_equal(buf, dx)
    buf = dy.copy()
    K.softmax_grad(buf, y, buf)                                       # or dy itself
    assert np.array_equal(buf, dx)


@pytest.mark.parametrize("shape", [(2, 6, 1), (1, 5, 3)], ids=lambda s: "x".join(map(str, s)))
def test_softmax_grad_matches_finite_differences(shape):
    x, y, dy = _softmax_case(shape, 2)
    dx = np.empty_like(x)
    K.softmax_grad(dy, y, dx)
    dy64 = dy.astype(np.float64)

    def loss(xv):
        out = np.empty_like(xv)
        K.softmax(xv, out)
        return float((out * dy64).sum())

    v = np.random.default_rng(3).standard_normal(shape)
    fd = directional(loss, x.astype(np.float64), v, h=1e-2)
    assert abs(fd - float((dx * v).sum())) <= rounding_error(np.abs(dy).sum(), 1e-2) + 1e-5


EPSILON = 1e-3


def _bn_case(rows, c, seed):
    """x, dy, moving = [moving_mean, moving_variance], gamma (float64, frozen by the caller)."""
    rng = np.random.default_rng(seed)
    moving = np.concatenate([rng.standard_normal(c), rng.standard_normal(c) ** 2 + 0.01])
    return (rng.standard_normal((rows, c)) * 2 + 1, rng.standard_normal((rows, c)), moving,
            rng.standard_normal(c))


def _inv_std(moving):
    c = moving.size // 2
    return 1.0 / np.sqrt(moving[c:].astype(np.float64) + np.float32(EPSILON))


@pytest.mark.parametrize("rows, c", [(1, 1), (7, 3), (32 * 49, 320), (5, 300), (64, 257)])
@pytest.mark.parametrize("scale", [True, False], ids=["gamma", "no_gamma"])
def test_batchnorm_inference_grad_matches_reference(rows, c, scale):
    (x, dy, moving, gamma), copies = frozen(*_bn_case(rows, c, rows + c))
    gamma = gamma if scale else None
    dx, dg, db = (np.full(s, np.nan, np.float32) for s in ((rows, c), (c,), (c,)))
    K.batchnorm_inference_grad(x, dy, moving, gamma, dx, dg, db, epsilon=EPSILON)
    ref = batchnorm_inference_backward(x, dy, moving, gamma, EPSILON)
    mag = batchnorm_inference_backward(np.abs(x) + np.abs(moving[:c]), np.abs(dy),
                                       np.concatenate([0 * moving[:c], moving[c:]]),
                                       None if gamma is None else np.abs(gamma), EPSILON)
    for name, got, r, m in zip(("dx", "dgamma", "dbeta"), (dx, dg, db), ref, mag):
        assert_close(got, r, m, rtol=1e-6, atol=0, what=f"batchnorm {name} {(rows, c)}")
    assert_unchanged([x, dy, moving], copies[:3], "batchnorm_inference_grad")


@pytest.mark.parametrize("gamma_beta", [(True, True), (False, True), (True, False), (False, False)],
                         ids=["scale_center", "center", "scale", "neither"])
@pytest.mark.parametrize("rows, c", [(37, 19), (3, 300)])
def test_batchnorm_inference_forward(gamma_beta, rows, c):
    """TF's tf.nn.batch_normalization order from the moving statistics: inv =
    rsqrt(moving_variance + epsilon) * gamma, x * inv + (beta - moving_mean * inv)."""
    (x, _, moving, gamma), copies = frozen(*_bn_case(rows, c, 15))
    gamma = gamma if gamma_beta[0] else None
    beta = (np.float32(0.25) * moving[:c] + 1).astype(np.float32) if gamma_beta[1] else None
    y = np.full(x.shape, np.nan, np.float32)
    K.batchnorm_inference(x, moving, gamma, beta, y, epsilon=EPSILON)
    inv = _inv_std(moving) * (1.0 if gamma is None else gamma)
    mag = np.abs(x * inv) + np.abs(moving[:c] * inv) + (0 if beta is None else np.abs(beta))
    assert_close(y, batchnorm_inference(x, moving, gamma, beta, EPSILON), mag, rtol=3e-7, atol=0,
                 what="batchnorm_inference")
    buf = x.copy()
    K.batchnorm_inference(buf, moving, gamma, beta, buf, epsilon=EPSILON)  # in place
    assert np.array_equal(buf, y)
    assert_unchanged([x, moving], [copies[0], copies[2]], "batchnorm_inference")


def test_batchnorm_inference_grad_optional_outputs_and_in_place():
    (x, dy, moving, gamma), _ = frozen(*_bn_case(9, 5, 4))
    ref = batchnorm_inference_backward(x, dy, moving, gamma, EPSILON)
    dg = np.empty(5, np.float32)
    K.batchnorm_inference_grad(x, dy, moving, gamma, None, dg, None, epsilon=EPSILON)
    assert_close(dg, ref[1], rtol=1e-6, atol=1e-6, what="dgamma alone")
    buf = dy.copy()
    K.batchnorm_inference_grad(x, buf, moving, gamma, buf, None, None, epsilon=EPSILON)  # dx is dy
    assert_close(buf, ref[0], rtol=1e-6, atol=1e-7, what="dx in place")


def test_batchnorm_inference_grad_matches_finite_differences():
    """Linear in x, gamma and beta: directional derivatives of sum(dy * bn(x)) through the
    forward kernel."""
    (x, dy, moving, gamma), _ = frozen(*_bn_case(6, 4, 5))
    beta = np.float32(0.5) * gamma
    dx, dg, db = np.empty((6, 4), np.float32), np.empty(4, np.float32), np.empty(4, np.float32)
    K.batchnorm_inference_grad(x, dy, moving, gamma, dx, dg, db, epsilon=EPSILON)
    dy64 = dy.astype(np.float64)

    def loss(xv, g, b):
        y = np.empty((6, 4), np.float32)
        K.batchnorm_inference(xv, moving, g, b, y, epsilon=EPSILON)
        return float((y * dy64).sum())

    inv = _inv_std(moving)
    mag = float((np.abs(dy) * (np.abs(x) + np.abs(moving[:4])) * inv * np.abs(gamma)).sum()
                + np.abs(dy).sum() * np.abs(beta).max())
    rng = np.random.default_rng(6)
    for grad, f, base in ((dx, lambda t: loss(t, gamma, beta), x),
                          (dg, lambda t: loss(x, t, beta), gamma),
                          (db, lambda t: loss(x, gamma, t), beta)):
        v = rng.standard_normal(base.shape)
        fd = directional(f, base.astype(np.float64), v, h=0.25)
        assert abs(fd - float((grad * v).sum())) <= rounding_error(8 * mag, 0.25) + 1e-5


def test_channel_affine_grad_is_the_float_product():
    rng = np.random.default_rng(7)
    dy, scale = rng.standard_normal((33, 17)).astype(np.float32), rng.standard_normal(17).astype(np.float32)
    dx = np.empty_like(dy)
    K.channel_affine_grad(dy, scale, dx)
    assert np.array_equal(dx, dy * scale)
    K.channel_affine_grad(dy, scale, dy)                              # in place
    assert np.array_equal(dy, dx)


def test_affine_and_batchnorm_grad_validation():
    (x, dy, moving, gamma), _ = frozen(*_bn_case(4, 3, 8))
    dx = np.empty((4, 3), np.float32)
    scale = gamma
    bad = [
        lambda: K.channel_affine_grad(dy, scale[:2], dx),
        lambda: K.channel_affine_grad(dy, scale, np.empty((3, 3), np.float32)),
        lambda: K.batchnorm_inference_grad(x, dy[:3], moving, gamma, dx, None, None),
        lambda: K.batchnorm_inference_grad(x, dy, moving[:5], gamma, dx, None, None),
        lambda: K.batchnorm_inference_grad(x, dy, moving, gamma[:2], dx, None, None),
        lambda: K.batchnorm_inference_grad(x, dy, moving, gamma, dx[:3], None, None),
        lambda: K.batchnorm_inference_grad(x, dy, moving, gamma, None, dx[0, :2].copy(), None),
        lambda: K.batchnorm_inference_grad(x, dy, moving, gamma, dx, dx[0], None),  # overlap
        lambda: K.batchnorm_inference(x, moving[:3], gamma, None, dx),
        lambda: K.batchnorm_inference(x, moving, gamma, None, dx[:3]),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


def test_concat_grad_slices_the_output_gradient():
    dy = np.arange(4 * 9, dtype=np.float32)
    for offset, width in ((0, 2), (2, 4), (6, 3)):
        dx = np.full(4 * width, np.nan, np.float32)
        K.concat_grad(dy, dx, 4, offset)
        assert np.array_equal(dx.reshape(4, width), dy.reshape(4, 9)[:, offset:offset + width])
    for call in (lambda: K.concat_grad(dy, np.empty(12, np.float32), 4, 7),
                 lambda: K.concat_grad(dy, np.empty(10, np.float32), 4, 0),
                 lambda: K.concat_grad(dy, dy[:8], 4, 0)):
        with pytest.raises(K.KernelShapeError):
            call()


# --- dropout -----------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.875])
def test_dropout_follows_the_documented_stream(rate):
    x = np.random.default_rng(9).standard_normal(1001).astype(np.float32)
    y, mask = np.empty_like(x), np.empty_like(x)
    state = np.array([12345], np.uint64)
    K.dropout(x, y, mask, rate, state)
    want, next_state = dropout_mask(x.size, rate, 12345)
    assert np.array_equal(mask, want)
    assert np.array_equal(y, x * mask)
    assert int(state[0]) == next_state
    dy = np.random.default_rng(10).standard_normal(x.size).astype(np.float32)
    dx = np.empty_like(dy)
    K.dropout_grad(dy, mask, dx)
    assert np.array_equal(dx, dy * mask)


def test_dropout_rate_scale_and_stream_continuity():
    n, rate = 200_000, 0.3
    x = np.ones(n, np.float32)
    y, mask = np.empty_like(x), np.empty_like(x)
    state = np.array([2024], np.uint64)
    K.dropout(x, y, mask, rate, state)
    kept = mask != 0
    assert set(np.unique(mask)) == {0, np.float32(1 / (1 - rate))}     # Keras's float32 scale
    assert abs(kept.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / n)
    # Two calls of n/2 draw exactly what one call of n draws (counter-based stream).
    halves, state2 = np.empty_like(mask), np.array([2024], np.uint64)
    K.dropout(x[: n // 2], y[: n // 2], halves[: n // 2], rate, state2)
    K.dropout(x[n // 2:], y[n // 2:], halves[n // 2:], rate, state2)
    assert np.array_equal(halves, mask) and state2[0] == state[0]


def test_dropout_validation():
    x = np.ones(8, np.float32)
    state = np.zeros(1, np.uint64)
    bad = [
        lambda: K.dropout(x, np.empty(8, np.float32), np.empty(8, np.float32), 1.0, state),
        lambda: K.dropout(x, np.empty(8, np.float32), np.empty(8, np.float32), -0.1, state),
        lambda: K.dropout(x, np.empty(7, np.float32), np.empty(8, np.float32), 0.5, state),
        lambda: K.dropout(x, np.empty(8, np.float32), np.empty(8, np.float32), 0.5, np.zeros(2, np.uint64)),
        lambda: K.dropout(x, x, x, 0.5, state),                          # mask is x
        lambda: K.dropout_grad(x, x[:7], np.empty(8, np.float32)),
        lambda: K.dropout_grad(x, x, x),                                 # dx is mask
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()
