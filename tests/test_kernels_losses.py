"""Losses fused with their gradient (Keras 3 on logits): per-row loss and gradient against
the float64 references (label smoothing in Keras's float32 arithmetic), finite differences
of the loss outputs, extreme logits, optional outputs, in-place gradients, bad labels."""
import numpy as np
import pytest

from edgecore import _kernels as K
from reference import losses as ref
from reference.check import assert_close, assert_unchanged, frozen
from reference.finite_diff import directional, rounding_error

SHAPES = [(1, 1), (1, 2), (32, 10), (7, 1000), (3, 33)]
IDS = [f"{r}x{c}" for r, c in SHAPES]


def _logits(rows, cols, seed, spread=3.0):
    return (np.random.default_rng(seed).standard_normal((rows, cols)) * spread).astype(np.float32)


def _run(fn, z, target, *args, **kw):
    loss = np.full(z.shape[0], np.nan, np.float32)
    grad = np.full(z.shape, np.nan, np.float32)
    fn(z, target, loss, grad, *args, **kw)
    return loss, grad


def _soft_targets(rows, cols, seed):
    t = np.random.default_rng(seed).random((rows, cols))
    return (t / t.sum(axis=1, keepdims=True)).astype(np.float32)


def check(got, want, what, grad_terms=None):
    """Loss per row: a sum of `cols` double terms rounded once; gradient: one rounding of
    a difference, so its error is bounded by the magnitude of its terms (grad_terms), not
    of the result: where p - t cancels, aarch64's fused multiply-add rounds the smoothed
    target differently and the difference carries that ulp."""
    (loss, grad), (rloss, rgrad) = got, want
    assert_close(loss, rloss, rtol=2e-7, atol=1e-7, what=f"{what} loss")
    assert_close(grad, rgrad, grad_terms, rtol=2.4e-7, atol=1e-12, what=f"{what} gradient")


def _softmax_terms(z, t, ls, scale):
    """|softmax(z)| + |smoothed t|, times the gradient's scale."""
    z = z.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    smoothed = t.astype(np.float64) * (1 - ls) + ls / t.shape[1]
    return (p + np.abs(smoothed)) * scale


@pytest.mark.parametrize("rows, cols", SHAPES, ids=IDS)
def test_sparse_softmax_cross_entropy(rows, cols):
    labels = np.random.default_rng(rows).integers(0, cols, rows).astype(np.int64)
    (z,), copies = frozen(_logits(rows, cols, 1))
    got = _run(K.sparse_softmax_cross_entropy_loss, z, labels, 1.0 / rows)
    check(got, ref.sparse_softmax_cross_entropy(z, labels, 1.0 / rows), f"sparse CE {rows}x{cols}")
    assert_unchanged([z], copies, "sparse CE")


@pytest.mark.parametrize("ls", [0.0, 0.1, 0.3], ids=lambda v: f"ls{v}")
@pytest.mark.parametrize("rows, cols", SHAPES, ids=IDS)
def test_softmax_cross_entropy(rows, cols, ls):
    (z, t), copies = frozen(_logits(rows, cols, 2), _soft_targets(rows, cols, 3))
    got = _run(K.softmax_cross_entropy_loss, z, t, ls, 1.0 / rows)
    check(got, ref.softmax_cross_entropy(z, t, ls, 1.0 / rows), f"CE {rows}x{cols} ls{ls}",
          _softmax_terms(z, t, ls, 1.0 / rows))
    assert_unchanged([z, t], copies, "CE")


def test_softmax_cross_entropy_unnormalised_targets_follow_tensorflow():
    """TF's op returns softmax - t as the gradient even when t does not sum to 1, and loss
    sum t (lse - z); recorded with Keras 3.15 / TF 2.21 on this row."""
    z = np.array([[1.0, 2.0, 0.5]], np.float32)
    t = np.array([[0.5, 0.8, 0.2]], np.float32)
    loss, grad = _run(K.softmax_cross_entropy_loss, z, t, 0.0, 1.0)
    assert_close(loss, [1.4965532], rtol=1e-7, atol=0, what="loss")
    assert_close(grad, [[-0.26877612, -0.17146832, -0.05975562]], rtol=1e-6, atol=0, what="grad")


@pytest.mark.parametrize("ls", [0.0, 0.2], ids=lambda v: f"ls{v}")
@pytest.mark.parametrize("rows, cols", SHAPES, ids=IDS)
def test_sigmoid_binary_cross_entropy(rows, cols, ls):
    rng = np.random.default_rng(4)
    (z, t), copies = frozen(_logits(rows, cols, 5), (rng.random((rows, cols)) > 0.5))
    got = _run(K.sigmoid_binary_cross_entropy_loss, z, t, ls, 1.0 / rows)
    check(got, ref.sigmoid_binary_cross_entropy(z, t, ls, 1.0 / rows), f"BCE {rows}x{cols}")
    assert_unchanged([z, t], copies, "BCE")


@pytest.mark.parametrize("rows, cols", SHAPES, ids=IDS)
def test_mean_squared_error(rows, cols):
    (p, t), copies = frozen(_logits(rows, cols, 6), _logits(rows, cols, 7))
    got = _run(K.mean_squared_error_loss, p, t, 1.0 / rows)
    check(got, ref.mean_squared_error(p, t, 1.0 / rows), f"MSE {rows}x{cols}")
    assert_unchanged([p, t], copies, "MSE")


def test_extreme_logits_stay_finite():
    z = np.array([[1e4, -1e4, 0.0], [-88.0, 88.0, 3.0], [-1e30, 0.0, 1e30]], np.float32)
    labels = np.array([1, 0, 2], np.int64)
    for fn, target in ((K.sparse_softmax_cross_entropy_loss, labels),
                       (K.softmax_cross_entropy_loss, np.eye(3, dtype=np.float32)[labels]),
                       (K.sigmoid_binary_cross_entropy_loss, np.eye(3, dtype=np.float32)[labels])):
        loss, grad = _run(fn, z, target)
        assert np.isfinite(loss).all() and np.isfinite(grad).all(), fn.__name__
    loss, grad = _run(K.sparse_softmax_cross_entropy_loss, z, labels)
    assert_close(loss[:2], [2e4, 176.0], rtol=1e-7, atol=0, what="huge margins")


LOSSES = {
    "sparse": lambda z, tl, out, g, s: K.sparse_softmax_cross_entropy_loss(z, tl[1], out, g, s),
    "softmax": lambda z, tl, out, g, s: K.softmax_cross_entropy_loss(z, tl[0], out, g, 0.1, s),
    "sigmoid": lambda z, tl, out, g, s: K.sigmoid_binary_cross_entropy_loss(z, tl[0], out, g, 0.2, s),
    "mse": lambda z, tl, out, g, s: K.mean_squared_error_loss(z, tl[0], out, g, s),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_gradient_matches_finite_differences(name):
    """The gradient is d(grad_scale * sum of the row losses)/dz: 4th-order directional
    differences of the kernel's own float32 loss outputs."""
    rows, cols = 6, 5
    z = _logits(rows, cols, 8, spread=1.5)
    targets = (_soft_targets(rows, cols, 9), np.arange(rows, dtype=np.int64) % cols)
    scale = 1.0 / rows
    grad = np.empty_like(z)
    LOSSES[name](z, targets, None, grad, scale)

    def total(zv):
        loss = np.empty(rows, np.float32)
        LOSSES[name](zv, targets, loss, None, scale)
        return float(loss.astype(np.float64).sum() * scale)

    v = np.random.default_rng(10).standard_normal(z.shape)
    fd = directional(total, z.astype(np.float64), v, h=1e-2)
    mag = total(z) * 2 + 1
    assert abs(fd - float((grad * v).sum())) <= rounding_error(mag, 1e-2) + 1e-6, name


def test_optional_outputs_and_in_place_gradient():
    z = _logits(4, 6, 11)
    t = _soft_targets(4, 6, 12)
    want_loss, want_grad = _run(K.softmax_cross_entropy_loss, z, t, 0.1, 0.25)
    loss = np.empty(4, np.float32)
    K.softmax_cross_entropy_loss(z, t, loss, None, 0.1, 0.25)
    assert np.array_equal(loss, want_loss)
    buf = z.copy()
    K.softmax_cross_entropy_loss(buf, t, None, buf, 0.1, 0.25)        # gradient over the logits
    assert np.array_equal(buf, want_grad)
    buf = t.copy()
    K.sigmoid_binary_cross_entropy_loss(z, buf, None, buf, 0.0, 0.25)  # or over the targets
    assert np.array_equal(buf, _run(K.sigmoid_binary_cross_entropy_loss, z, t, 0.0, 0.25)[1])


def test_loss_validation():
    z = _logits(3, 4, 13)
    t = _soft_targets(3, 4, 14)
    loss, grad = np.empty(3, np.float32), np.empty((3, 4), np.float32)
    bad = [
        lambda: K.sparse_softmax_cross_entropy_loss(z, np.array([0, 4, 1], np.int64), loss, grad),
        lambda: K.sparse_softmax_cross_entropy_loss(z, np.array([0, -1, 1], np.int64), loss, grad),
        lambda: K.sparse_softmax_cross_entropy_loss(z, np.array([0, 1], np.int64), loss, grad),
        lambda: K.softmax_cross_entropy_loss(z, t[:2], loss, grad),
        lambda: K.softmax_cross_entropy_loss(z, t, loss[:2], grad),
        lambda: K.softmax_cross_entropy_loss(z, t, loss, grad[:, :3].copy()),
        lambda: K.softmax_cross_entropy_loss(z, t, loss, grad, 1.5),
        lambda: K.sigmoid_binary_cross_entropy_loss(z, t, loss, grad, -0.1),
        lambda: K.mean_squared_error_loss(z, t, grad[0, :3], grad),           # loss inside grad
        lambda: K.mean_squared_error_loss(z, t, loss, np.empty((3, 4), np.float64)),
        lambda: K.mean_squared_error_loss(np.empty((0, 4), np.float32), np.empty((0, 4), np.float32),
                                          None, None),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


# --- against Keras itself ------------------------------------------------------------------

_KERAS_SCRIPT = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras
spec = json.loads(sys.argv[1])
d = np.load(spec["inputs"])
z = tf.constant(d["z"])
out = {}
for name, cls, kw, target in spec["cases"]:
    loss = getattr(keras.losses, cls)(**kw)
    per_row = getattr(keras.losses, cls)(reduction=None, **kw)
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = loss(tf.constant(d[target]), z)
    out[name + "_grad"] = tape.gradient(value, z).numpy()
    out[name + "_rows"] = per_row(tf.constant(d[target]), z).numpy()
np.savez(spec["out"], **out)
"""

KERAS_CASES = [
    ("sparse", "SparseCategoricalCrossentropy", {"from_logits": True}, "labels"),
    ("softmax", "CategoricalCrossentropy", {"from_logits": True}, "soft"),
    ("softmax_ls", "CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.1}, "onehot"),
    ("sigmoid", "BinaryCrossentropy", {"from_logits": True}, "binary"),
    ("sigmoid_ls", "BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.2}, "binary"),
    ("mse", "MeanSquaredError", {}, "soft"),
]


@pytest.mark.keras
@pytest.mark.slow
def test_losses_match_keras(keras_py, tmp_path):
    """Keras 3's loss objects (default reduction) and their TF gradients on one batch."""
    from fixtures import run_keras_script       # reads the fixture manifest: only here
    rows, cols = 32, 10
    z = _logits(rows, cols, 40)
    labels = np.random.default_rng(41).integers(0, cols, rows).astype(np.int64)
    data = {"z": z, "labels": labels, "soft": _soft_targets(rows, cols, 42),
            "onehot": np.eye(cols, dtype=np.float32)[labels],
            "binary": (np.random.default_rng(43).random((rows, cols)) > 0.5).astype(np.float32)}
    keras_out = run_keras_script(keras_py, _KERAS_SCRIPT, tmp_path, data, cases=KERAS_CASES)
    kernels = {"sparse": K.sparse_softmax_cross_entropy_loss, "softmax": K.softmax_cross_entropy_loss,
               "sigmoid": K.sigmoid_binary_cross_entropy_loss, "mse": K.mean_squared_error_loss}
    for name, _, kw, target in KERAS_CASES:
        extra = () if name in ("sparse", "mse") else (kw.get("label_smoothing", 0.0),)
        loss, grad = _run(kernels[name.split("_")[0]], z, data[target], *extra, 1.0 / rows)
        # TF sums exp in float32 before the log: ~1 ulp of the sum (~1e-7) in absolute terms.
        assert_close(loss, keras_out[name + "_rows"], rtol=2e-6, atol=3e-7, what=f"{name} loss")
        # TF's softmax - onehot rounds p to float32 first: ~1 ulp of 1, times 1 / rows.
        assert_close(grad, keras_out[name + "_grad"], rtol=2e-6, atol=4 * 1.2e-7 / rows,
                     what=f"{name} grad")
