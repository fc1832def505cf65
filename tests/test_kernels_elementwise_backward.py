"""Softmax, channel-affine / inference-mode BatchNormalization (forward and backward, from
the layer's moving statistics and epsilon), Concatenate and dropout backward, broadcasting
binary ops and PReLU backward: float64 references, finite differences of the forward
kernels, TensorFlow's recorded tie and NaN rules, optional outputs, in-place use, the
dropout generator's exact stream and statistics, the plan runner's rows, a second thread,
and bad shapes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from edgecore import _kernels as K
from oprow import run_row
from reference.check import assert_close, assert_same_in_thread, assert_unchanged, frozen
from reference.dropout import dropout_mask
from reference.elementwise import binary_backward, binary_magnitude, prelu_backward
from reference.finite_diff import EPS32, directional, rounding_error
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


# --- broadcasting binary ops -------------------------------------------------------------

# Per element one float32 product or quotient (divide's db: three), then a double sum
# rounded once to float32: within 2 eps32 of the sum of |terms|.
BINARY_RTOL = 2 * EPS32

# (shape of a, shape of b): every broadcast pattern the planner emits.
BINARY_GRAD_CASES = {
    "same_9x7_c13": ((2, 9, 7, 13), (2, 9, 7, 13)),
    "same_one_element": ((1,), (1,)),
    "scalar_b_18x17_c3": ((2, 18, 17, 3), ()),
    "scalar_a_9x7_c16": ((), (1, 9, 7, 16)),
    "channel_b_9x7_c17": ((2, 9, 7, 17), (17,)),
    "channel_a_c1": ((1,), (3, 9, 7, 1)),
    "squeeze_excite_18x17_c8": ((2, 18, 17, 8), (2, 1, 1, 8)),
    "squeeze_excite_a_9x7_c4": ((3, 1, 1, 4), (3, 9, 7, 4)),
    "rows_1h11_c3": ((2, 9, 7, 3), (1, 9, 1, 1)),
    "both_n1wc_1h1c": ((2, 1, 7, 4), (1, 9, 1, 4)),
    "both_nh1c_11wc": ((2, 9, 1, 16), (1, 1, 7, 16)),
    "outer_7x1_1x9": ((7, 1), (1, 9)),
    "column_2x2": ((2, 2, 1), (2, 1, 2)),
    "rank6": ((2, 1, 3, 2, 1, 4), (1, 2, 1, 2, 3, 1)),
    # Past the 256-column accumulator block: kept columns and a reduced row of 700.
    "squeeze_excite_c300": ((2, 3, 5, 300), (2, 1, 1, 300)),
    "reduced_row_700": ((2, 3, 700), (2, 3, 1)),
}


def _strides(arr, shape):
    return tuple(s // 4 for s in np.broadcast_to(arr, shape).strides)


def _binary_inputs(a_shape, b_shape, op, seed):
    """a, b, dy; b away from 0 (divide), a and b on disjoint grids for maximum/minimum so
    that no tie occurs (ties have their own test)."""
    rng = np.random.default_rng(seed)
    shape = np.broadcast_shapes(a_shape, b_shape)
    if op in ("maximum", "minimum"):
        a = rng.integers(-4, 4, a_shape) + 0.25
        b = rng.integers(-4, 4, b_shape) * 1.0
    else:
        a = rng.standard_normal(a_shape)
        b = rng.uniform(1, 2, b_shape) * rng.choice([-1, 1], b_shape)
    return frozen(a, b, rng.standard_normal(shape))


def run_binary_grad(a, b, dy, op, want=("da", "db")):
    shape = dy.shape or (1,)
    da = np.full(a.size, np.nan, np.float32) if "da" in want else None
    db = np.full(b.size, np.nan, np.float32) if "db" in want else None
    K.binary_grad(a.reshape(-1), b.reshape(-1), dy.reshape(-1), da, db, K.BINARY_OPS[op],
                  shape, _strides(a, shape), _strides(b, shape))
    return (None if da is None else da.reshape(a.shape),
            None if db is None else db.reshape(b.shape))


def check_binary_grad(a, b, dy, op, got, what):
    ref, mag = binary_backward(a, b, dy, op), binary_backward(a, b, dy, op, magnitude=True)
    for name, g, r, m in zip(("da", "db"), got, ref, mag):
        if g is not None:
            assert_close(g, r, m, rtol=BINARY_RTOL, atol=0, what=f"{what} {name}")


@pytest.mark.parametrize("op", sorted(K.BINARY_OPS))
@pytest.mark.parametrize("case", list(BINARY_GRAD_CASES))
def test_binary_grad_matches_reference(case, op):
    a_shape, b_shape = BINARY_GRAD_CASES[case]
    (a, b, dy), copies = _binary_inputs(a_shape, b_shape, op, 31)
    got = run_binary_grad(a, b, dy, op)
    check_binary_grad(a, b, dy, op, got, f"binary_grad {op} {case}")
    assert_unchanged([a, b, dy], copies, "binary_grad")


@settings(max_examples=150, deadline=None, derandomize=True)
@given(shapes_=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=6,
                                                 min_side=1, max_side=5),
       op=st.sampled_from(sorted(K.BINARY_OPS)))
def test_binary_grad_random_broadcasts(shapes_, op):
    (sa, sb), _ = shapes_
    (a, b, dy), _ = _binary_inputs(sa, sb, op, 32)
    check_binary_grad(a, b, dy, op, run_binary_grad(a, b, dy, op), f"binary_grad {op} {sa} {sb}")


@pytest.mark.parametrize("want", [("da",), ("db",)])
@pytest.mark.parametrize("op", ["multiply", "divide"])
def test_binary_grad_optional_outputs(op, want):
    (a, b, dy), _ = _binary_inputs((2, 9, 7, 5), (2, 1, 1, 5), op, 33)
    got = run_binary_grad(a, b, dy, op, want)
    assert [g is None for g in got] == ["da" not in want, "db" not in want]
    check_binary_grad(a, b, dy, op, got, f"binary_grad only {want}")


@pytest.mark.parametrize("op", sorted(K.BINARY_OPS))
@pytest.mark.parametrize("shapes_", [((2, 3, 4, 5), (2, 1, 1, 5)), ((3, 1), (1, 4)),
                                     ((2, 5), ()), ((1, 3, 2), (1, 3, 2))],
                         ids=lambda s: f"{s[0]}_{s[1]}")
def test_binary_grad_matches_finite_differences(shapes_, op):
    """<grad, v> against the directional derivative of sum(dy * binary(a, b)) through the
    forward kernel.  Linear in each operand except divide in b; there |b| >= 1 and |v| <= 1
    bound the stencil's h^4 truncation by 4 h^4 sum|dy a|."""
    a_shape, b_shape = shapes_
    (a, b, dy), _ = _binary_inputs(a_shape, b_shape, op, 34)
    shape = dy.shape
    da, db = run_binary_grad(a, b, dy, op)
    dy64 = dy.astype(np.float64)

    def loss(av, bv):
        y = np.empty(shape, np.float32)
        K.binary(av.reshape(-1), bv.reshape(-1), y.reshape(-1), K.BINARY_OPS[op], shape,
                 _strides(av, shape), _strides(bv, shape))
        return float((y * dy64).sum())

    h = 1 / 64
    mag = float((np.abs(dy64) * binary_magnitude(a, b, op)).sum())
    trunc = 4 * h ** 4 * float((np.abs(dy64) * np.abs(a.astype(np.float64))).sum())
    rng = np.random.default_rng(35)
    for name, grad, f, base in (("a", da, lambda t: loss(t, b), a),
                                ("b", db, lambda t: loss(a, t), b)):
        v = rng.uniform(-1, 1, base.shape)
        fd = directional(f, base.astype(np.float64), v, h)
        tol = rounding_error(4 * mag, h) + trunc + 1e-6 * float((np.abs(grad) * np.abs(v)).sum())
        assert abs(fd - float((grad * v).sum())) <= tol, (op, name, fd, tol)


# TensorFlow 2.21 (tf.maximum / tf.minimum under tf.GradientTape; Keras 3.15's Maximum
# layer agrees) on a = [[1, 2, 3], [3, 2, 1]], b = [[2, 2, 2]], dy = [[1, 2, 4], [8, 16, 32]]:
# ties (column 1) go to a for both ops, b's gradient is summed over the broadcast rows.
TF_BINARY_TIES = {
    "maximum": ([[0, 2, 4], [8, 16, 0]], [[1, 0, 32]]),
    "minimum": ([[1, 2, 0], [0, 16, 32]], [[8, 0, 4]]),
}
# and on a = [1, 2, nan, 3, 0], b = [1, nan, 1, 2, -0], dy = 1: a NaN comparison sends the
# gradient to b, so neither gradient is NaN (TF's tf.where rule).
TF_BINARY_NAN = {
    "maximum": ([1, 0, 0, 1, 1], [0, 1, 1, 0, 0]),
    "minimum": ([1, 0, 0, 0, 1], [0, 1, 1, 1, 0]),
}


@pytest.mark.parametrize("op", list(TF_BINARY_TIES))
def test_binary_grad_ties_and_nan_follow_tensorflow(op):
    a = np.array([[1, 2, 3], [3, 2, 1]], np.float32)
    b = np.array([[2, 2, 2]], np.float32)
    dy = np.array([[1, 2, 4], [8, 16, 32]], np.float32)
    da, db = run_binary_grad(a, b, dy, op)
    assert np.array_equal(da, TF_BINARY_TIES[op][0]) and np.array_equal(db, TF_BINARY_TIES[op][1])
    a = np.array([1, 2, np.nan, 3, 0], np.float32)
    b = np.array([1, np.nan, 1, 2, -0.0], np.float32)
    da, db = run_binary_grad(a, b, np.ones(5, np.float32), op)
    assert np.array_equal(da, TF_BINARY_NAN[op][0]) and np.array_equal(db, TF_BINARY_NAN[op][1])


@pytest.mark.parametrize("op", sorted(K.BINARY_OPS))
def test_binary_grad_propagates_nan(op):
    """A NaN dy reaches the gradient of every operand it is routed to (summed over the
    broadcast: the whole reduced element is NaN); a NaN a reaches db where TF's formula
    multiplies by a (multiply, divide)."""
    (a, b, dy), _ = _binary_inputs((2, 3, 4, 5), (2, 1, 1, 5), op, 36)
    dy = dy.copy()
    dy[1, 2, 3, 4] = np.nan
    da, db = run_binary_grad(a, b, dy, op)
    to_a = to_b = True
    if op in ("maximum", "minimum"):
        to_a = a[1, 2, 3, 4] >= b[1, 0, 0, 4] if op == "maximum" else a[1, 2, 3, 4] <= b[1, 0, 0, 4]
        to_b = not to_a
    assert np.isnan(da[1, 2, 3, 4]) == to_a and np.isnan(da).sum() == int(to_a)
    assert np.isnan(db[1, 0, 0, 4]) == to_b and np.isnan(db).sum() == int(to_b)
    if op in ("multiply", "divide"):
        (a, b, dy), _ = _binary_inputs((2, 3, 4, 5), (2, 1, 1, 5), op, 36)
        a = a.copy()
        a[0, 1, 2, 3] = np.nan
        _, db = run_binary_grad(a, b, dy, op)
        assert np.isnan(db[0, 0, 0, 3]) and np.isnan(db).sum() == 1


def test_binary_grad_validation():
    a, b, dy = np.ones(24, np.float32), np.ones(4, np.float32), np.ones(24, np.float32)
    da, db = np.empty(24, np.float32), np.empty(4, np.float32)
    shape, sa, sb = (2, 3, 4), (12, 4, 1), (0, 0, 1)
    mul = K.BINARY_OPS["multiply"]
    K.binary_grad(a, b, dy, da, db, mul, shape, sa, sb)
    bad = [
        lambda: K.binary_grad(a, b, dy[:23], da, db, mul, shape, sa, sb),
        lambda: K.binary_grad(a, b, dy, da[:23], db, mul, shape, sa, sb),
        lambda: K.binary_grad(a, b, dy, da, np.empty(3, np.float32), mul, shape, sa, sb),
        lambda: K.binary_grad(a, b, dy, da, db, mul, shape, sa, (0, 1, 1)),     # not compact
        lambda: K.binary_grad(a, b, dy, da, db, mul, shape, (12, 4, 2), sb),    # gaps in a
        lambda: K.binary_grad(a, b[:3], dy, da, db, mul, shape, sa, sb),
        lambda: K.binary_grad(a, b, dy, da, db, 6, shape, sa, sb),               # prelu's code
        lambda: K.binary_grad(a, b, dy, da, db, mul, shape, sa, (0, 1)),
        lambda: K.binary_grad(a, b, dy, da, db, mul, (1,) * 7, (0,) * 7, (0,) * 7),
        lambda: K.binary_grad(a, b, dy, dy, db, mul, shape, sa, sb),             # da is dy
        lambda: K.binary_grad(a, b, dy, da, da[:4], mul, shape, sa, sb),         # db inside da
        lambda: K.binary_grad(a, b, dy, None, b, mul, shape, sa, sb),            # db is b
        lambda: K.binary_grad(a, b, dy, da, np.empty(4, np.float64), mul, shape, sa, sb),
        lambda: K.binary_grad(a, b, dy, da.reshape(2, 12), db, mul, shape, sa, sb),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


@pytest.mark.parametrize("op", sorted(K.BINARY_OPS))
def test_binary_grad_runner_row_and_second_thread(op):
    """OP_BINARY_BACKWARD: y = da, y2 = db, x0 = a, x1 = dy, x2 = b, ints as OP_BINARY's
    (after the planner's collapse) gives the wrapper's result bit for bit; so does a run
    from another thread."""
    (a, b, dy), _ = _binary_inputs((2, 9, 7, 6), (2, 1, 1, 6), op, 37)
    shape, sa, sb = (2, 63, 6), (378, 6, 1), (6, 0, 1)
    want = run_binary_grad(a, b, dy, op)
    ints = (K.BINARY_OPS[op], 3, *shape, *sa, *sb)
    inputs = {"x0": a, "x1": dy, "x2": b}
    got = run_row("binary_backward", inputs, {"y": a.shape, "y2": b.shape}, ints)
    assert np.array_equal(got["y"], want[0]) and np.array_equal(got["y2"], want[1])
    only_db = run_row("binary_backward", inputs, {"y2": b.shape}, ints)
    assert np.array_equal(only_db["y2"], want[1])
    assert_same_in_thread(lambda: run_binary_grad(a, b, dy, op), f"binary_grad {op}")


# --- PReLU -------------------------------------------------------------------------------

# (input shape with batch, Keras shared_axes)
PRELU_GRAD_CASES = {
    "full_alpha_9x7_c13": ((2, 9, 7, 13), ()),
    "shared_hw_18x17_c16": ((2, 18, 17, 16), (1, 2)),
    "shared_hw_c1": ((3, 9, 7, 1), (1, 2)),
    "shared_c_c17": ((3, 5, 4, 17), (3,)),
    "shared_w_c3": ((2, 9, 7, 3), (2,)),
    "dense_37": ((4, 37), ()),
    "dense_batch1": ((1, 8), ()),
    "shared_all": ((2, 3, 4), (1, 2)),
    "rank6_sample": ((2, 2, 3, 2, 3, 2, 3), (2, 4, 6)),   # 7 alternating axes with the batch
    "wide_c300": ((2, 3, 5, 300), (1, 2)),
}


def _prelu_inputs(shape, shared, seed):
    """x on a grid away from 0 (x == 0 has its own test), alpha, dy."""
    rng = np.random.default_rng(seed)
    alpha_shape = tuple(1 if i + 1 in shared else d for i, d in enumerate(shape[1:]))
    x = rng.integers(-8, 8, shape) * 0.5 + 0.25
    return frozen(x, rng.uniform(-1, 1, alpha_shape), rng.standard_normal(shape))


def run_prelu_grad(x, alpha, dy, want=("dx", "dalpha")):
    dx = np.full(x.size, np.nan, np.float32) if "dx" in want else None
    dalpha = np.full(alpha.size, np.nan, np.float32) if "dalpha" in want else None
    K.prelu_grad(x.reshape(-1), alpha.reshape(-1), dy.reshape(-1), dx, dalpha, x.shape[1:],
                 _strides(alpha, x.shape[1:]))
    return (None if dx is None else dx.reshape(x.shape),
            None if dalpha is None else dalpha.reshape(alpha.shape))


@pytest.mark.parametrize("case", list(PRELU_GRAD_CASES))
def test_prelu_grad_matches_reference(case):
    (x, alpha, dy), copies = _prelu_inputs(*PRELU_GRAD_CASES[case], 41)
    got = run_prelu_grad(x, alpha, dy)
    ref, mag = prelu_backward(x, alpha, dy), prelu_backward(x, alpha, dy, magnitude=True)
    for name, g, r, m in zip(("dx", "dalpha"), got, ref, mag):
        assert_close(g, r, m, rtol=BINARY_RTOL, atol=0, what=f"prelu_grad {name} {case}")
    assert_unchanged([x, alpha, dy], copies, "prelu_grad")
    dx_only, _ = run_prelu_grad(x, alpha, dy, ("dx",))
    _, dalpha_only = run_prelu_grad(x, alpha, dy, ("dalpha",))
    assert np.array_equal(dx_only, got[0]) and np.array_equal(dalpha_only, got[1])


@pytest.mark.parametrize("case", ["full_alpha_9x7_c13", "shared_hw_c1", "rank6_sample"])
def test_prelu_grad_matches_finite_differences(case):
    """PReLU is linear in alpha, and in x away from 0 (x sits on a grid of quarters, the
    steps stay below 1/4): the stencil is exact up to rounding."""
    shape, shared = PRELU_GRAD_CASES[case]
    (x, alpha, dy), _ = _prelu_inputs(shape, shared, 42)
    dx, dalpha = run_prelu_grad(x, alpha, dy)
    strides, dy64 = _strides(alpha, shape[1:]), dy.astype(np.float64)

    def loss(xv, av):
        y = np.empty(shape, np.float32)
        K.prelu(xv.reshape(-1), av.reshape(-1), y.reshape(-1), shape[1:], strides)
        return float((y * dy64).sum())

    h, rng = 1 / 16, np.random.default_rng(43)
    mag = float((np.abs(dy64) * np.abs(x) * (1 + np.abs(alpha))).sum())
    for name, grad, f, base in (("x", dx, lambda t: loss(t, alpha), x),
                                ("alpha", dalpha, lambda t: loss(x, t), alpha)):
        v = rng.uniform(-1, 1, base.shape)
        fd = directional(f, base.astype(np.float64), v, h)
        tol = rounding_error(4 * mag, h) + 1e-6 * float((np.abs(grad) * np.abs(v)).sum())
        assert abs(fd - float((grad * v).sum())) <= tol, (name, fd, float((grad * v).sum()))


# TensorFlow 2.21 / Keras 3.15 PReLU(alpha=0.25) on x = [-1, 0, 2, nan, -0], dy = 1:
# dx = [0.25, 0, 1, 0, 0] (ReluGrad masks: 0 at x == 0 and at NaN x), dalpha per element
# [-1, 0, 0, nan, 0] (relu(-x) is NaN for a NaN x); with dy = NaN every dx is NaN, x == 0
# included (ReluGrad multiplies dy by its mask).
def test_prelu_grad_zero_and_nan_follow_tensorflow():
    x = np.array([[-1, 0, 2, np.nan, -0.0]], np.float32)
    alpha = np.full(5, 0.25, np.float32)
    dx, dalpha = run_prelu_grad(x, alpha, np.ones_like(x))
    assert np.array_equal(dx, [[0.25, 0, 1, 0, 0]])
    assert np.array_equal(dalpha, [-1, 0, 0, np.nan, 0], equal_nan=True)
    dx, dalpha = run_prelu_grad(x, alpha, np.full_like(x, np.nan))
    assert np.isnan(dx).all() and np.isnan(dalpha).all()
    (x, alpha, dy), _ = _prelu_inputs((2, 3, 4, 5), (1, 2), 44)       # shared alpha (1, 1, 5)
    x = x.copy()
    x[1, 2, 3, 4] = np.nan
    _, dalpha = run_prelu_grad(x, alpha, dy)
    assert np.isnan(dalpha[0, 0, 4]) and np.isnan(dalpha).sum() == 1


def test_prelu_grad_validation():
    x, dy, alpha = np.ones(24, np.float32), np.ones(24, np.float32), np.ones(4, np.float32)
    dx, dalpha = np.empty(24, np.float32), np.empty(4, np.float32)
    K.prelu_grad(x, alpha, dy, dx, dalpha, (3, 4), (0, 1))
    bad = [
        lambda: K.prelu_grad(x, alpha, dy, dx, dalpha, (5,), (1,)),            # 24 not whole samples
        lambda: K.prelu_grad(x, alpha, dy[:12], dx, dalpha, (3, 4), (0, 1)),
        lambda: K.prelu_grad(x, alpha, dy, dx[:12], dalpha, (3, 4), (0, 1)),
        lambda: K.prelu_grad(x, alpha, dy, dx, dalpha[:3], (3, 4), (0, 1)),
        lambda: K.prelu_grad(x, alpha, dy, dx, dalpha, (3, 4), (4, 1)),        # alpha is 12 long
        lambda: K.prelu_grad(x, alpha, dy, dx, dalpha, (3, 4), (1, 0)),        # not compact
        lambda: K.prelu_grad(x, alpha, dy, dx, dalpha, (3, 4), (1,)),
        lambda: K.prelu_grad(x, alpha, dy, dy, dalpha, (3, 4), (0, 1)),        # dx is dy
        lambda: K.prelu_grad(x, alpha, dy, dx, dx[:4], (3, 4), (0, 1)),        # dalpha inside dx
        lambda: K.prelu_grad(x, alpha, dy, None, alpha, (3, 4), (0, 1)),       # dalpha is alpha
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


def test_prelu_grad_runner_row_and_second_thread():
    """OP_PRELU_BACKWARD: y = dx, x0 = x, x1 = dy, w = alpha, y2 = dalpha, ints as OP_PRELU's."""
    shape, shared = PRELU_GRAD_CASES["shared_hw_18x17_c16"]
    (x, alpha, dy), _ = _prelu_inputs(shape, shared, 45)
    want = run_prelu_grad(x, alpha, dy)
    strides = _strides(alpha, shape[1:])
    ints = (shape[0], x.size // shape[0], 3, *shape[1:], *strides)
    inputs = {"x0": x, "x1": dy, "w": alpha}
    got = run_row("prelu_backward", inputs, {"y": x.shape, "y2": alpha.shape}, ints)
    assert np.array_equal(got["y"], want[0]) and np.array_equal(got["y2"], want[1])
    got = run_row("prelu_backward", inputs, {"y2": alpha.shape}, ints)
    assert np.array_equal(got["y2"], want[1])
    assert_same_in_thread(lambda: run_prelu_grad(x, alpha, dy), "prelu_grad")
