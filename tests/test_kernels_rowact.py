"""log_softmax, sparsemax and glu over the last axis (kernels/rowact.pxi): forward and backward
against the float64 references on awkward row lengths, TensorFlow's outputs and gradients on
rows with NaN, infinities and ties (recorded from TF 2.21 / Keras 3.15.1 through
keras.activations with tf.GradientTape), finite differences, in place, the runner's rows
and the wrappers' checks."""
import numpy as np
import pytest

from edgecore import _kernels as K
from oprow import run_row
from reference import rowact as ref
from reference.check import assert_close, assert_same_in_thread, assert_unchanged, frozen
from reference.finite_diff import directional, rounding_error

LENGTHS = [1, 2, 3, 7, 17, 64, 1000]
MODES = ["keras_3_15", "simplex"]
EPS = 1.2e-7            # half an ulp of float32, and a little: one rounding of a double result


def _x(rows, n, scale, seed):
    return (np.random.default_rng(seed).standard_normal((rows, n)) * scale).astype(np.float32)


def _log_softmax(x):
    y = np.full_like(x, np.nan)
    K.log_softmax(x, y)
    return y


def _sparsemax(x, mode="keras_3_15"):
    y = np.full_like(x, np.nan)
    K.sparsemax(x, y, np.empty(K.sparsemax_scratch_size(x.shape[1]), np.float32),
                K.SPARSEMAX_MODES[mode])
    return y


def _sparsemax_grad(dy, x, mode="keras_3_15"):
    dx = np.full_like(x, np.nan)
    K.sparsemax_grad(dy, x, dx, np.empty(K.sparsemax_scratch_size(x.shape[1]), np.float32),
                     K.SPARSEMAX_MODES[mode])
    return dx


def _glu(x):
    y = np.full((x.shape[0], x.shape[1] // 2), np.nan, np.float32)
    K.glu(x, y)
    return y


def _glu_grad(dy, x):
    dx = np.full_like(x, np.nan)
    K.glu_grad(dy, x, dx)
    return dx


def _log_softmax_grad(dy, y):
    dx = np.full_like(y, np.nan)
    K.log_softmax_grad(dy, y, dx)
    return dx


# --- log_softmax -----------------------------------------------------------------------------

@pytest.mark.parametrize("n", LENGTHS)
def test_log_softmax_matches_reference(n):
    (x,), copies = frozen(_x(3, n, 4.0, n))
    y = _log_softmax(x)
    want = ref.log_softmax(x)
    # y = (x - max) - log(sum): one rounding of a double result, plus the log of a sum of
    # float32 exponentials (~2 ulp each): an absolute 4e-7.
    assert_close(y, want, np.abs(want), rtol=EPS, atol=4e-7, what=f"log_softmax n={n}")
    assert_unchanged([x], copies, "log_softmax")
    buf = x.copy()
    K.log_softmax(buf, buf)
    assert np.array_equal(buf, y)


def test_log_softmax_extreme_logits():
    x = np.array([[1e4, 0, -1e4, 1e4 - 1], [0, -5, -1e4, 200], [3, 3, 3, 3], [-1e30, 1e30, 0, 5]],
                 np.float32)
    y = _log_softmax(x)
    assert np.isfinite(y).all()
    assert_close(y, ref.log_softmax(x), rtol=EPS, atol=4e-7, what="extreme")


# TF: a row holding NaN or +inf is all NaN, a -inf element is -inf, all -inf is NaN.
ROWS = np.array([[1, np.nan, 2, 0], [1, np.inf, 2, 0], [1, -np.inf, 2, 0], [np.inf, np.inf, 0, 0],
                 [-np.inf] * 4, [3, 3, 3, 3], [1, 0.9, 0, -1], [0, 0.5, 1, 0]], np.float32)
DY = np.tile(np.array([1, 2, 3, 4], np.float32), (len(ROWS), 1))
TF_LOG_SOFTMAX = {
    "y": [[np.nan] * 4, [np.nan] * 4, [-1.4076059, -np.inf, -0.40760595, -2.407606],
          [np.nan] * 4, [np.nan] * 4, [-1.3862944] * 4, [-0.8788181, -0.9788181, -1.878818, -2.878818],
          [-1.8511288, -1.3511288, -0.8511289, -1.8511288]],
    "dx": [[np.nan] * 4, [np.nan] * 4, [-1.4472849, 2, -3.65241, 3.0996943], [np.nan] * 4,
           [np.nan] * 4, [-1.5, -0.5, 0.5, 1.5], [-3.1527343, -1.7575493, 1.4722943, 3.4379885],
           [-0.57059777, -0.589478, -1.2693272, 2.4294024]],
}


def _same_pattern(got, want, what):
    want = np.array(want, np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(want)), (what, got)
    assert np.array_equal(np.where(np.isinf(got), np.sign(got), 0),
                          np.where(np.isinf(want), np.sign(want), 0)), (what, got)
    ok = np.isfinite(want)
    assert_close(got[ok], want[ok], rtol=3e-7, atol=3e-7, what=what)


def test_log_softmax_nonfinite_rows_match_tensorflow():
    y = _log_softmax(ROWS)
    _same_pattern(y, TF_LOG_SOFTMAX["y"], "log_softmax")
    _same_pattern(_log_softmax_grad(DY, y), TF_LOG_SOFTMAX["dx"], "log_softmax_grad")


@pytest.mark.parametrize("n", LENGTHS)
def test_log_softmax_grad_matches_reference(n):
    x = _x(3, n, 3.0, 10 + n)
    y = _log_softmax(x)
    (dy, y), copies = frozen(_x(3, n, 1.0, 20 + n), y)
    dx = _log_softmax_grad(dy, y)
    mag = np.abs(dy) + np.exp(y.astype(np.float64)) * np.abs(dy).sum(axis=1, keepdims=True)
    assert_close(dx, ref.log_softmax_backward(dy, y), mag, rtol=2 * EPS, atol=1e-30,
                 what=f"log_softmax_grad n={n}")
    assert_unchanged([dy, y], copies, "log_softmax_grad")
    for alias in ("dy", "y"):
        buf = (dy if alias == "dy" else y).copy()
        args = (buf, y, buf) if alias == "dy" else (dy, buf, buf)
        K.log_softmax_grad(*args)
        assert np.array_equal(buf, dx), alias


# --- sparsemax -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("scale", [0.1, 3.0])
def test_sparsemax_matches_reference(n, mode, scale):
    # scale 0.1 puts many logits in the support (the two thresholds differ there), 3.0 few.
    (x,), copies = frozen(_x(4, n, scale, n))
    y = _sparsemax(x, mode)
    tau_mag = np.abs(x).sum(axis=1, keepdims=True) + 1
    assert_close(y, ref.sparsemax(x, mode), np.abs(x) + tau_mag, rtol=EPS, atol=0,
                 what=f"sparsemax {mode} n={n}")
    assert_unchanged([x], copies, "sparsemax")
    buf = x.copy()
    K.sparsemax(buf, buf, np.empty(3 * n, np.float32), K.SPARSEMAX_MODES[mode])
    assert np.array_equal(buf, y)
    if mode == "simplex":
        assert_close(y.sum(axis=1), np.ones(4), rtol=0, atol=1e-5 * (1 + tau_mag[:, 0]),
                     what="the simplex projection sums to 1")


def test_sparsemax_keras_3_15_threshold():
    # Keras 3.15's own example of the bug (keras-team/keras#23425) and the fix's answer.
    x = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert list(_sparsemax(x, "keras_3_15")[0]) == [0, 0, 0.25]
    assert list(_sparsemax(x, "simplex")[0]) == [0, 0.25, 0.75]


# TF through keras.activations.sparsemax (3.15.1) with dy = [1, 2, 3, 4] per row: NaN sorts
# last here (TF's TopK may put it elsewhere; ours always last), inf rows have an empty
# support (tau = -inf), ties take the lower position first.
TIES = np.array([[1, 1, 0, -5], [0, 1, 1, -5], [2, 1, 1, -5], [0.5, 0.5, 0.2, -3], [100, 1, 0, -100]],
                np.float32)
TF_SPARSEMAX = {
    "y": [[0, np.nan, 1, 0], [np.inf] * 4, [0, 0, 1, 0], [np.inf] * 4, [np.nan] * 4, [0] * 4,
          [0.049999952, 0, 0, 0], [0, 0, 0.25, 0],
          [0] * 4, [0] * 4, [1, 0, 0, 0], [0] * 4, [1, 0, 0, 0]],
    "dx": [[1, 0, -1, 0], [1, 2, 3, 4], [1, 0, -1, 0], [1, 2, 3, 4], [0] * 4, [0] * 4,
           [0, -0.5, 0, 0], [0, -1.5, 0, 0],
           [-2, 0.5, 0, 0], [0, -3, 0.5, 0], [-5, 2, 3, 0], [0] * 4, [0] * 4],
}


def test_sparsemax_matches_tensorflow_on_nonfinite_rows_and_ties():
    x = np.concatenate([ROWS, TIES])
    dy = np.tile(np.array([1, 2, 3, 4], np.float32), (len(x), 1))
    _same_pattern(_sparsemax(x), TF_SPARSEMAX["y"], "sparsemax")
    _same_pattern(_sparsemax_grad(dy, x), TF_SPARSEMAX["dx"], "sparsemax_grad")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", LENGTHS)
def test_sparsemax_grad_matches_reference(n, mode):
    (x, dy), copies = frozen(_x(3, n, 0.3, 30 + n), _x(3, n, 1.0, 40 + n))
    dx = _sparsemax_grad(dy, x, mode)
    mag = ref.sparsemax_backward(dy, x, mode, magnitude=True)
    assert_close(dx, ref.sparsemax_backward(dy, x, mode), mag, rtol=2 * EPS, atol=1e-30,
                 what=f"sparsemax_grad {mode} n={n}")
    assert_unchanged([x, dy], copies, "sparsemax_grad")
    for alias in ("dy", "x"):
        buf = (dy if alias == "dy" else x).copy()
        scratch = np.empty(3 * n, np.float32)
        args = (buf, x, buf) if alias == "dy" else (dy, buf, buf)
        K.sparsemax_grad(*args, scratch, K.SPARSEMAX_MODES[mode])
        assert np.array_equal(buf, dx), alias


def _fd_check(forward, grad, x, r, v, h, mag, what):
    """<grad(r), v> against the directional derivative of sum(r * forward(x))."""
    fd = directional(lambda t: float((r * forward(t).astype(np.float64)).sum()),
                     x.astype(np.float64), v, h)
    got = float((grad.astype(np.float64) * v).sum())
    tol = rounding_error(mag, h) + 1e-5 * float((np.abs(grad) * np.abs(v)).sum()) + 1e-9
    assert abs(fd - got) <= tol, (what, fd, got, tol)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [2, 3, 7, 17, 64])
def test_sparsemax_grad_matches_finite_differences(n, mode):
    """sparsemax is piecewise linear: where the support, the active set and the order do
    not change within the stencil the differences are exact up to float32 rounding."""
    rng = np.random.default_rng(50 + n)
    checked = 0
    for trial in range(20):
        x = (rng.standard_normal((1, n)) * 0.3).astype(np.float32)
        v = rng.standard_normal((1, n))
        h = 1e-3
        parts = [ref._sparsemax_parts(x + k * h * v, mode) for k in (-2, 2)]
        base = ref._sparsemax_parts(x, mode)
        k_base = int(base[3][0])       # the order matters only inside the support
        same = all(np.array_equal(p[1][:, :k_base], base[1][:, :k_base])
                   and np.array_equal(p[2], base[2])
                   and np.array_equal(x + k * h * v - p[0] >= 0, x - base[0] >= 0)
                   for p, k in zip(parts, (-2, 2)))
        if not same:
            continue
        r = rng.standard_normal((1, n))
        grad = _sparsemax_grad(r.astype(np.float32), x, mode)
        mag = float(np.abs(r).sum()) * (float(np.abs(x).max()) + 1)
        _fd_check(lambda t: _sparsemax(t, mode), grad, x, r, v, h, mag, f"sparsemax {mode}")
        checked += 1
    assert checked >= 5


# --- glu -------------------------------------------------------------------------------------

@pytest.mark.parametrize("h", LENGTHS)
def test_glu_matches_reference(h):
    # h odd and even: rows of 2, 4, 6, 14, 34, 128 and 2000 floats.
    (x,), copies = frozen(_x(3, 2 * h, 3.0, h))
    y = _glu(x)
    want = ref.glu(x)
    assert_close(y, want, np.abs(want), rtol=EPS, atol=1e-38, what=f"glu h={h}")
    assert_unchanged([x], copies, "glu")
    (dy,), _ = frozen(_x(3, h, 1.0, 100 + h))
    dx = _glu_grad(dy, x)
    want = ref.glu_backward(dy, x)
    assert_close(dx, want, np.abs(want), rtol=EPS, atol=1e-38, what=f"glu_grad h={h}")


# TF: a * sigmoid(b) with a = x[:, :2], b = x[:, 2:]; gradients with dy = [1, 2].
TF_GLU = {
    "y": [[0.8807971, np.nan], [0.8807971, np.inf], [0.8807971, -np.inf], [np.inf, np.inf],
          [np.nan, np.nan], [2.8577223, 2.8577223], [0.5, 0.24204725], [0, 0.25]],
    "dx": [[0.8807971, 1, 0.104993574, np.nan], [0.8807971, 1, 0.104993574, np.inf],
           [0.8807971, 1, 0.104993574, -np.inf], [0.5, 1, np.inf, np.inf], [0, 0, np.nan, np.nan],
           [0.95257413, 1.9051483, 0.13552997, 0.27105993], [0.5, 0.5378828, 0.25, 0.35390145],
           [0.7310586, 1, 0, 0.25]],
}


def test_glu_nonfinite_rows_match_tensorflow():
    _same_pattern(_glu(ROWS), TF_GLU["y"], "glu")
    _same_pattern(_glu_grad(DY[:, :2].copy(), ROWS), TF_GLU["dx"], "glu_grad")


@pytest.mark.parametrize("h", [1, 2, 3, 7])
def test_glu_and_log_softmax_grads_match_finite_differences(h):
    rng = np.random.default_rng(60 + h)
    x = (rng.standard_normal((2, 2 * h)) * 2).astype(np.float32)
    v = rng.standard_normal(x.shape)
    r = rng.standard_normal((2, h))
    grad = _glu_grad(r.astype(np.float32), x)
    mag = float((np.abs(r) * np.abs(ref.glu(x))).sum()) * 2 + 1
    _fd_check(_glu, grad, x, r, v, 1e-2, mag, "glu")
    r = rng.standard_normal(x.shape)
    grad = _log_softmax_grad(r.astype(np.float32), _log_softmax(x))
    mag = float((np.abs(r) * (np.abs(ref.log_softmax(x)) + 1)).sum())
    _fd_check(_log_softmax, grad, x, r, v, 1e-2, mag, "log_softmax")


# --- runner rows, threads, checks ------------------------------------------------------------

def test_runner_rows_match_the_wrappers():
    x = _x(3, 14, 1.0, 70)
    dy = _x(3, 14, 1.0, 71)
    n = 14
    y = run_row("log_softmax", {"x0": x}, {"y": x.shape}, ints=(3, n))["y"]
    assert np.array_equal(y, _log_softmax(x))
    dx = run_row("log_softmax_backward", {"x1": dy, "x2": y}, {"y": x.shape}, ints=(3, n))["y"]
    assert np.array_equal(dx, _log_softmax_grad(dy, y))
    for mode in MODES:
        m = K.SPARSEMAX_MODES[mode]
        y = run_row("sparsemax", {"x0": x}, {"y": x.shape}, ints=(3, n, m),
                    scratch=K.sparsemax_scratch_size(n))["y"]
        assert np.array_equal(y, _sparsemax(x, mode))
        dx = run_row("sparsemax_backward", {"x0": x, "x1": dy}, {"y": x.shape}, ints=(3, n, m),
                     scratch=K.sparsemax_scratch_size(n))["y"]
        assert np.array_equal(dx, _sparsemax_grad(dy, x, mode))
    y = run_row("glu", {"x0": x}, {"y": (3, 7)}, ints=(3, 7))["y"]
    assert np.array_equal(y, _glu(x))
    dx = run_row("glu_backward", {"x0": x, "x1": dy[:, :7].copy()}, {"y": x.shape}, ints=(3, 7))["y"]
    assert np.array_equal(dx, _glu_grad(dy[:, :7].copy(), x))


def test_opcodes():
    assert [K.OPCODES[n] for n in ("log_softmax", "sparsemax", "glu", "log_softmax_backward",
                                   "sparsemax_backward", "glu_backward")] == list(range(56, 62))


def test_two_threads_agree():
    x, dy = _x(8, 64, 0.3, 80), _x(8, 64, 1.0, 81)
    assert_same_in_thread(lambda: (_sparsemax(x), _sparsemax_grad(dy, x), _log_softmax(x),
                                   _glu(x)), "row activations")


def test_wrappers_refuse_bad_arguments():
    x = np.ones((2, 4), np.float32)
    scratch = np.empty(12, np.float32)
    buf = np.ones(16, np.float32)
    bad = [
        lambda: K.log_softmax(x, np.empty((2, 5), np.float32)),
        lambda: K.log_softmax(np.ones((2, 0), np.float32), np.empty((2, 0), np.float32)),
        lambda: K.log_softmax(buf[:8].reshape(2, 4), buf[4:12].reshape(2, 4)),   # partial overlap
        lambda: K.log_softmax_grad(x, x, np.empty((2, 3), np.float32)),
        lambda: K.sparsemax(x, np.empty((2, 4), np.float32), np.empty(11, np.float32)),
        lambda: K.sparsemax(x, np.empty((2, 4), np.float32), scratch, 2),
        lambda: K.sparsemax(buf[:8].reshape(2, 4), np.empty((2, 4), np.float32), buf[4:16]),
        lambda: K.sparsemax_grad(x, x, np.empty((2, 4), np.float32), np.empty(3, np.float32)),
        lambda: K.glu(np.ones((2, 5), np.float32), np.empty((2, 2), np.float32)),
        lambda: K.glu(x, np.empty((2, 3), np.float32)),
        lambda: K.glu(buf[:8].reshape(2, 4), buf[8:12].reshape(2, 2)) or
        K.glu(buf[:8].reshape(2, 4), buf[6:10].reshape(2, 2)),
        lambda: K.glu_grad(np.ones((2, 2), np.float32), x, np.empty((2, 2), np.float32)),
        lambda: K.glu_grad(np.ones((2, 2), np.float32), buf[:8].reshape(2, 4), buf[8:16].reshape(2, 4))
        or K.glu_grad(np.ones((2, 2), np.float32), buf[:8].reshape(2, 4), buf[4:12].reshape(2, 4)),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()
