"""The Keras-3-only elementwise activations (kernels/activations_k3.pxi): forward against the
float64 formula, TensorFlow's outputs at NaN/inf and its gradients at the kinks (recorded
from TF 2.21 / Keras 3.15.1 with tf.GradientTape through keras.activations), the backward
against the float64 derivative and finite differences, Select semantics for a NaN dy, in
place, every loop length, and the runner's rows."""
import zlib

import numpy as np
import pytest

from edgecore import _kernels as K
from oprow import run_row
from reference.activations import ACTIVATIONS_K3, KERAS3_PARAMS, activation_k3, derivative_k3
from reference.check import assert_close, assert_unchanged, frozen
from reference.finite_diff import elementwise, rounding_error

NAMES = sorted(ACTIVATIONS_K3)


def _params(name):
    return KERAS3_PARAMS.get(name, {})


def _forward(x, name):
    y = np.full_like(x, np.nan)
    K.activation(x, y, K.ACTIVATION_CODES[name], **_params(name))
    return y


def _grad(x, dy, name):
    dx = np.full_like(x, np.nan)
    K.activation_grad(dy, x, None, dx, K.ACTIVATION_CODES[name], **_params(name))
    return dx


def _inputs(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = np.concatenate([np.linspace(-8, 8, 1601), rng.standard_normal(400) * 20,
                        np.geomspace(1e-30, 1e30, 61), -np.geomspace(1e-30, 1e30, 61),
                        [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 3e38, -3e38]])
    return x.astype(np.float32), rng.standard_normal(x.size).astype(np.float32)


def test_codes_are_appended_after_the_keras2_ones():
    # Another branch fixes the existing codes; ours only extend the enum.
    assert [K.ACTIVATION_CODES[n] for n in ("celu", "hard_shrink", "hard_tanh", "soft_shrink",
                                            "sparse_plus", "sparse_sigmoid", "squareplus",
                                            "tanh_shrink")] == list(range(18, 26))


@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_keras_formula(name):
    x, _ = _inputs(name)
    if name == "squareplus":
        x = x[np.abs(x) < 1e18]       # TF's float32 x * x overflows beyond: see below
    (x,), copies = frozen(x)
    y = _forward(x, name)
    ref = activation_k3(x, name)
    # Double arithmetic rounded once: half an ulp, plus an ulp of double for expm1/tanh.
    assert_close(y, ref, np.abs(ref), rtol=1.2e-7, atol=1e-38, what=name)
    assert_unchanged([x], copies, name)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 17, 64, 1000])
@pytest.mark.parametrize("name", NAMES)
def test_every_length_and_in_place(name, n):
    x = (np.random.default_rng(n).standard_normal(n) * 3).astype(np.float32)
    want = _forward(x, name)
    buf = x.copy()
    K.activation(buf, buf, K.ACTIVATION_CODES[name], **_params(name))
    assert np.array_equal(buf, want, equal_nan=True)
    dy = np.random.default_rng(n + 1).standard_normal(n).astype(np.float32)
    want = _grad(x, dy, name)
    buf = dy.copy()
    K.activation_grad(buf, x, None, buf, K.ACTIVATION_CODES[name], **_params(name))
    assert np.array_equal(buf, want, equal_nan=True)


# TF 2.21 through keras.activations at NaN, -inf, +inf: (outputs, gradients of sum(f)).
NONFINITE = np.array([np.nan, -np.inf, np.inf], np.float32)
TF_NONFINITE = {
    "celu": ([np.nan, -1, np.inf], [0, 0, 1]),
    "hard_shrink": ([0, -np.inf, np.inf], [0, 1, 1]),
    "hard_tanh": ([np.nan, -1, 1], [0, 0, 0]),
    "soft_shrink": ([0, -np.inf, np.inf], [0, 1, 1]),
    "sparse_plus": ([np.nan, 0, np.inf], [np.nan, np.nan, np.nan]),
    "sparse_sigmoid": ([np.nan, 0, 1], [0.5, 0, 0]),
    "squareplus": ([np.nan, np.nan, np.inf], [np.nan, np.nan, np.nan]),
    "tanh_shrink": ([np.nan, -np.inf, np.inf], [np.nan, 1, 1]),
}


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_inputs_give_tensorflow_outputs(name):
    y, g = TF_NONFINITE[name]
    assert np.array_equal(_forward(NONFINITE, name), np.array(y, np.float32), equal_nan=True)
    dx = _grad(NONFINITE, np.ones(3, np.float32), name)
    assert np.array_equal(dx, np.array(g, np.float32), equal_nan=True), (name, dx)


# TF's gradients of sum(f(x)) at these float32 points (the kinks and their neighbours).
KINKS = np.array([-2, -1.0000001, -1, -0.99999994, -0.5000001, -0.5, -0.49999997, -1e-30, -0.0,
                  0.0, 1e-30, 0.49999997, 0.5, 0.5000001, 0.99999994, 1, 1.0000001, 2, -1000],
                 np.float32)
TF_KINK_GRADS = {
    "celu": [0.13533528, 0.3678794, 0.36787945, 0.36787945, 0.6065306, 0.60653067, 0.60653067,
             1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0],
    "hard_shrink": [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
    "hard_tanh": [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "soft_shrink": [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
    "sparse_plus": [0, 0, 0, 2.9802322e-08, 0.24999994, 0.25, 0.25, 0.5, 0.5, 0.5, 0.5, 0.75,
                    0.75, 0.75000006, 1, 1, 1, 1, 0],
    "sparse_sigmoid": [0, 0, 0] + [0.5] * 12 + [0, 0, 0, 0],
    "squareplus": [0.14644662, 0.27639318, 0.2763932, 0.27639323, 0.37873214, 0.37873217,
                   0.3787322, 0.5, 0.5, 0.5, 0.5, 0.6212678, 0.6212678, 0.62126786, 0.72360677,
                   0.7236068, 0.7236068, 0.8535534, 1.013279e-06],
    "tanh_shrink": [0.9293492, 0.5800258, 0.5800257, 0.5800257, 0.21355242, 0.21355224,
                    0.21355224, 0, 0, 0, 0, 0.21355224, 0.21355224, 0.21355242, 0.5800257,
                    0.5800257, 0.5800258, 0.9293492, 1],
}
MASKS = ("hard_shrink", "hard_tanh", "soft_shrink", "sparse_sigmoid", "sparse_plus", "celu")


@pytest.mark.parametrize("name", NAMES)
def test_kink_gradients_match_tensorflow(name):
    dx = _grad(KINKS, np.ones_like(KINKS), name)
    want = np.array(TF_KINK_GRADS[name], np.float32)
    if name in MASKS:
        # Which side passes is TF's rule: exact (celu's exp terms to an ulp; its 2 at +-0
        # and 1 at +-1e-30 exactly).
        exact = np.isin(want, [0, 0.5, 1, 2])
        assert np.array_equal(dx[exact], want[exact]), (name, KINKS[exact], dx[exact], want[exact])
        assert_close(dx, want, rtol=1.2e-7, atol=0, what=name)
    else:
        # TF differentiates in float32: squareplus(-1000)'s 1 + x / sqrt(x^2 + 4) cancels
        # there (TF 1.013e-6, the true value 9.99997e-7); ours is exact.
        ok = KINKS != -1000
        assert_close(dx[ok], want[ok], rtol=3e-7, atol=1e-7, what=name)


def test_squareplus_where_tensorflow_overflows():
    # TF's float32 x * x is inf beyond 1.8e19, so TF gives inf for squareplus(+-1e20) and
    # 0.5 for their gradients; we give the true values (the one finite-input difference).
    x = np.array([1e20, -1e20], np.float32)
    assert_close(_forward(x, "squareplus"), [1e20, 1e-20], rtol=1.2e-7, atol=0)
    assert_close(_grad(x, np.ones(2, np.float32), "squareplus"), [1.0, 1e-40], rtol=1e-5, atol=1e-45)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_reference(name):
    x, dy = _inputs(name)
    ok = np.isfinite(x) & ((np.abs(x) < 1e18) | (name != "squareplus"))
    x, dy = x[ok], dy[ok]
    (x, dy), copies = frozen(x, dy)
    dx = _grad(x, dy, name)
    ref = dy * derivative_k3(x, name)
    assert_close(dx, ref, np.abs(ref), rtol=2.4e-7, atol=1e-38, what=name)
    assert_unchanged([x, dy], copies, name)


def test_masks_select_like_tensorflow():
    # Where TF's Select passes nothing a NaN or inf dy still gives 0; where it passes, dy.
    x = np.array([0.0, 0.2, 5.0, -5.0], np.float32)
    dy = np.array([np.nan, np.inf, np.nan, -np.inf], np.float32)
    for name, want in (("hard_shrink", [0, 0, np.nan, -np.inf]),
                       ("soft_shrink", [0, 0, np.nan, -np.inf]),
                       ("hard_tanh", [np.nan, np.inf, 0, 0]),
                       ("sparse_sigmoid", [np.nan, np.inf, 0, 0])):
        assert np.array_equal(_grad(x, dy, name), np.array(want, np.float32), equal_nan=True), name


def _kinks(name):
    return {"celu": [0.0], "hard_shrink": [-0.5, 0.5], "soft_shrink": [-0.5, 0.5],
            "hard_tanh": [-1.0, 1.0], "sparse_plus": [-1.0, 1.0],
            "sparse_sigmoid": [-1.0, 1.0]}.get(name, [])


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name):
    """4th-order central differences of the float32 forward on a binary grid, away from
    the kinks (as test_kernels_activations_backward does for the other codes)."""
    h = 2.0 ** -8
    x = np.arange(-6 * 1024, 6 * 1024 + 1, 7) / 1024.0
    for kink in _kinks(name):
        x = x[np.abs(x - kink) > 3 * h]
    fd = elementwise(lambda t: _forward(t, name), x, h)
    dx = _grad(x.astype(np.float32), np.ones(x.size, np.float32), name)
    stencil_mag = np.max([np.abs(_forward((x + k * h).astype(np.float32), name))
                          for k in (-2, 2)], axis=0)
    tol = rounding_error(stencil_mag, h) + 2e-6 * np.abs(fd) + 1e-7
    bad = np.abs(dx - fd) > tol
    assert not bad.any(), (name, x[bad][:5], dx[bad][:5], fd[bad][:5])


@pytest.mark.parametrize("name", NAMES)
def test_runner_rows(name):
    x, dy = (a[:257] for a in _inputs(name))
    code, p = K.ACTIVATION_CODES[name], _params(name)
    y = run_row("activation", {"x0": x}, {"y": x.shape}, ints=(x.size,), act=(code, p))["y"]
    assert np.array_equal(y, _forward(x, name), equal_nan=True)
    dx = run_row("activation_backward", {"x0": x, "x1": dy}, {"y": x.shape}, ints=(x.size,),
                 act=(code, p))["y"]
    assert np.array_equal(dx, _grad(x, dy, name), equal_nan=True)


# --- against TensorFlow itself (optional: needs a Python with Keras) -------------------------

_KERAS_SCRIPT = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras
spec = json.loads(sys.argv[1])
data = np.load(spec["inputs"])
x, dy = tf.constant(data["x"]), tf.constant(data["dy"])
out = {}
for name in spec["names"]:
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = getattr(keras.activations, name)(x)
    out[name + "_y"] = y.numpy()
    out[name + "_dx"] = tape.gradient(y, x, output_gradients=dy).numpy()
np.savez(spec["out"], **out)
"""


@pytest.mark.keras
@pytest.mark.slow
def test_match_tensorflow(keras_py, tmp_path):
    """TF's own outputs and gradients on a grid with every kink: the piecewise-linear codes
    exactly, the smooth ones to TF's float32 round-off."""
    from fixtures import run_keras_script

    x = np.concatenate([KINKS, NONFINITE, np.linspace(-7, 7, 561, dtype=np.float32)])
    dy = np.random.default_rng(31).standard_normal(x.size).astype(np.float32)
    tf_out = run_keras_script(keras_py, _KERAS_SCRIPT, tmp_path, dict(x=x, dy=dy), names=NAMES)
    exact = {"hard_shrink", "hard_tanh", "soft_shrink", "sparse_sigmoid"}
    for name in NAMES:
        y, dx = _forward(x, name), _grad(x, dy, name)
        for got, want in ((y, tf_out[name + "_y"]), (dx, tf_out[name + "_dx"])):
            if name in exact:
                assert np.array_equal(got, want, equal_nan=True), name
            else:
                finite = np.isfinite(want)
                assert np.array_equal(np.isnan(got), np.isnan(want)), name
                assert_close(got[finite], want[finite], rtol=1e-6,
                             atol=1e-6 * (1 + np.nan_to_num(np.abs(x[finite]))), what=name)
