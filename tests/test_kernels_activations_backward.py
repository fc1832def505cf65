"""activation_backward for every activation code: TensorFlow's gradient rules at the kinks
(recorded from TF 2.21 / Keras 3.15), the float64 derivative elsewhere, finite differences
of the forward kernel, relu's parameter combinations, y given or recomputed, in place."""
import math
import zlib

import numpy as np
import pytest

from edgecore import _kernels as K
from reference.activations import ACTIVATIONS, activation_derivative
from reference.check import assert_close, assert_unchanged, frozen
from reference.finite_diff import elementwise, rounding_error

PARAMS = {"elu": {"alpha": 1.0}, "leaky_relu": {"alpha": 0.3}}
RELU_PARAMS = [dict(max_value=6.0), dict(max_value=2.5), dict(alpha=0.1), dict(alpha=0.1, max_value=4.0),
               dict(alpha=0.1, max_value=6.0), dict(threshold=0.5), dict(threshold=-0.5),
               dict(alpha=0.2, threshold=1.0, max_value=3.0), dict(alpha=0.2, threshold=-1.0, max_value=4.0)]
# Every (name, params) the tests run: each code, relu's combinations, ELU with alpha != 1.
VARIANTS = ([(n, PARAMS.get(n, {})) for n in sorted(ACTIVATIONS)]
            + [("relu", p) for p in RELU_PARAMS] + [("elu", {"alpha": 0.5})])
IDS = [n + "".join(f"_{k}{v}" for k, v in p.items()) for n, p in VARIANTS]


def _grad(x, dy, name, params, y="forward"):
    code = K.ACTIVATION_CODES[name]
    if isinstance(y, str):
        y = np.empty_like(x)
        K.activation(x, y, code, **params)
    dx = np.full_like(x, np.nan)
    K.activation_grad(dy, x, y, dx, code, **params)
    return dx, y


def _inputs(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = np.concatenate([np.linspace(-8, 8, 1601), rng.standard_normal(500) * 20,
                        [0.0, -0.0, 3.0, -3.0, 6.0, 1e-30, -1e-30, 60.0, -60.0]])
    if name == "exponential":
        x = np.clip(x, -80, 80)
    return x, rng.standard_normal(x.size)


@pytest.mark.parametrize("name, params", VARIANTS, ids=IDS)
def test_activation_grad_matches_reference(name, params):
    x, dy = _inputs(name)
    (x, dy), copies = frozen(x, dy)
    dx, y = _grad(x, dy, name, params)
    ref = dy * activation_derivative(x, y, name, **params)
    # One rounding of a double computation; the masks (relu family) are exact products.
    # gelu_tanh's 1 + tanh(..) and 1 - tanh^2 cancel in double for x << 0 (as the forward
    # does): there the error is ~1e-16 of terms up to ~30 |dy|, not of the tiny result.
    # hard_swish's relu6(x + 3) / 6 + x / 6 cancels to 0 at x = -1.5: an fma (aarch64)
    # leaves ~1e-17, the error of its double terms (<= 1 + |x| / 6), not of the zero.
    mag = np.abs(ref)
    if name == "gelu_tanh":
        mag = mag + np.abs(dy) * 1e-7
    elif name == "hard_swish":
        mag = mag + np.abs(dy) * (1 + np.abs(x) / 6) * 1e-8
    assert_close(dx, ref, mag, rtol=2.4e-7, atol=1e-37, what=f"activation_grad {name} {params}")
    assert_unchanged([x, dy], copies, name)


# TF 2.21's gradient of sum(f(x)) at the kinks, recorded with tf.GradientTape through
# keras.activations (Keras 3.15.1).
KINKS = np.array([-6.5, -6, -3.0000002, -3, -2.9999998, -1, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1,
                  2.9999998, 3, 3.0000002, 4, 5.9999995, 6, 6.0000005, 7], np.float32)
TF_KINK_GRADS = {
    ("relu", ()): [0] * 9 + [1] * 11,
    ("relu", (("max_value", 6.0),)): [0] * 9 + [1] * 8 + [0] * 3,
    ("relu", (("max_value", 4.0),)): [0] * 9 + [1] * 7 + [0] * 4,
    ("relu", (("alpha", 0.1),)): [0.1] * 9 + [1] * 11,
    ("relu", (("alpha", 0.1), ("max_value", 6.0))): [0.1] * 7 + [0, 0] + [1] * 8 + [0] * 3,
    ("relu", (("threshold", 0.5),)): [0] * 11 + [1] * 9,
    ("relu", (("alpha", 0.2), ("max_value", 4.0), ("threshold", -1.0))):
        [0.2] * 5 + [0, 0] + [1] * 9 + [0] * 4,
    ("relu", (("alpha", 0.2), ("max_value", 3.0), ("threshold", 1.0))):
        [0.2] * 11 + [0, 1, 1] + [0] * 6,
    ("leaky_relu", (("alpha", 0.3),)): [0.3] * 9 + [1] * 11,
    ("hard_sigmoid", ()): [0] * 4 + [1 / 6] * 8 + [0] * 8,
    ("elu", (("alpha", 1.0),)): [None] * 6 + [1] * 14,
    ("elu", (("alpha", 0.5),)): [None] * 6 + [0.5] * 3 + [1] * 11,
    # TF's Selu forward is scale * alpha * (exp(x) - 1) in float32, which is 0 for
    # |x| < 3e-8, so its gradient there is `scale`; ours, from expm1, is the left-hand
    # derivative scale * alpha: -1e-30 is left out (the one known difference).
    ("selu", ()): [None] * 7 + [1.0507009873554805] * 13,
}


@pytest.mark.parametrize("key", list(TF_KINK_GRADS), ids=lambda k: k[0] + "".join(f"_{a}{b}" for a, b in k[1]))
def test_activation_grad_kinks_match_tensorflow(key):
    name, params = key[0], dict(key[1])
    dx, _ = _grad(KINKS, np.ones_like(KINKS), name, params)
    for i, want in enumerate(TF_KINK_GRADS[key]):
        if want is not None:
            assert dx[i] == np.float32(want), (name, params, float(KINKS[i]), dx[i], want)


def test_hard_swish_kinks_match_tensorflow():
    # TF: x * relu6(x + 3) / 6 differentiated, x + 3 rounded in float32.
    want = [0, 0, 0, 0, -0.49999994, 0.16666667, 0.5, 0.5, 0.5, 0.5, 0.6666666, 0.8333334,
            1, 1, 1, 1, 1, 1, 1, 1]
    dx, _ = _grad(KINKS, np.ones_like(KINKS), "hard_swish", {})
    assert_close(dx, np.array(want, np.float32), rtol=1.2e-7, atol=0, what="hard_swish kinks")


def test_keras2_hard_sigmoid_passes_where_tensorflow_float_ops_do():
    # Keras 2: clip_by_value(0.2 * x + 0.5, 0, 1), Mul and AddV2 each rounded to float32,
    # bounds passing.  Those float ops put the pass interval at [-2.5, 2.5000002]; a fused
    # multiply-add would move -2.5 out of it.  (tf.GradientTape through tf_keras 2.21's
    # hard_sigmoid gives exactly [0, .2, .2, .2, .2, .2, 0] on these seven points.)
    lo, hi = np.float32(-2.5), np.nextafter(np.float32(2.5), np.float32(np.inf))
    x = np.array([np.nextafter(lo, -np.inf), lo, np.nextafter(lo, np.inf), 0,
                  np.nextafter(hi, -np.inf), hi, np.nextafter(hi, np.inf)], np.float32)
    k2 = x * np.float32(0.2) + np.float32(0.5)
    assert list((k2 >= 0) & (k2 <= 1)) == [False] + [True] * 5 + [False]
    dx, _ = _grad(x, np.ones_like(x), "hard_sigmoid_k2", {})
    assert list(dx) == [0] + [np.float32(0.2)] * 5 + [0]


def _kinks(name, params):
    if name in ("relu", "leaky_relu", "elu", "selu"):
        return [0.0, params.get("threshold", 0.0), params.get("max_value", math.inf)]
    return {"hard_sigmoid": [-3.0, 3.0], "hard_swish": [-3.0, 3.0],
            "hard_sigmoid_k2": [-2.5, 2.5], "softsign": [0.0]}.get(name, [])   # |x| in softsign


@pytest.mark.parametrize("name, params", VARIANTS, ids=IDS)
def test_activation_grad_matches_finite_differences(name, params):
    """4th-order central differences of the float32 forward kernel on a binary grid (x and
    x +- k h exact in float32), away from the kinks."""
    h = 2.0 ** -8
    x = np.arange(-6 * 1024, 6 * 1024 + 1, 7) / 1024.0
    for kink in _kinks(name, params):
        x = x[np.abs(x - kink) > 3 * h]
    code = K.ACTIVATION_CODES[name]

    def f(t):
        # the double-precision reference forward: the vector kernels' few-ulp noise would
        # swamp a stencil with h = 2^-8 (their accuracy: test_kernels_activations_vector.py)
        out = np.empty_like(t)
        K.activation_scalar(t, out, code, **params)
        return out

    fd = elementwise(f, x, h)
    dx, _ = _grad(x.astype(np.float32), np.ones(x.size, np.float32), name, params)
    stencil_mag = np.max([np.abs(f((x + k * h).astype(np.float32))) for k in (-2, 2)], axis=0)
    tol = rounding_error(stencil_mag, h) + 2e-6 * np.abs(fd) + 1e-7
    bad = np.abs(dx - fd) > tol
    assert not bad.any(), (name, params, x[bad][:5], dx[bad][:5], fd[bad][:5])


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "exponential", "elu", "selu", "swish", "gelu"])
def test_y_none_recomputes_the_forward(name):
    x, dy = (a.astype(np.float32) for a in _inputs(name))
    given, _ = _grad(x, dy, name, PARAMS.get(name, {}))
    recomputed, _ = _grad(x, dy, name, PARAMS.get(name, {}), y=None)
    assert np.array_equal(given, recomputed)


@pytest.mark.parametrize("name", ["relu", "swish", "sigmoid", "hard_sigmoid", "linear"])
def test_activation_grad_in_place(name):
    x, dy = (a.astype(np.float32) for a in _inputs(name))
    want, y = _grad(x, dy, name, {})
    buf = dy.copy()
    K.activation_grad(buf, x, y, buf, K.ACTIVATION_CODES[name])             # dx is dy
    assert np.array_equal(buf, want)
    buf = x.copy()
    K.activation_grad(dy, buf, y, buf, K.ACTIVATION_CODES[name])            # dx is x
    assert np.array_equal(buf, want)


def test_activation_grad_validation():
    x = np.ones(5, np.float32)
    bad = [
        lambda: K.activation_grad(x, x, None, np.empty(4, np.float32), 0),
        lambda: K.activation_grad(x[:4], x, None, np.empty(5, np.float32), 0),
        lambda: K.activation_grad(x, x, np.ones(4, np.float32), np.empty(5, np.float32), 2),
        lambda: K.activation_grad(x, x, None, np.empty(5, np.float32), len(K.ACTIVATION_CODES)),
    ]
    buf = np.ones(8, np.float32)
    bad.append(lambda: K.activation_grad(buf[1:6], x, None, buf[:5], 1))    # partial overlap
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()
    K.activation_grad(np.empty(0, np.float32), np.empty(0, np.float32), None,
                      np.empty(0, np.float32), 1)                          # empty is a no-op


# --- against TensorFlow itself ---------------------------------------------------------------

_KERAS_SCRIPT = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras
spec = json.loads(sys.argv[1])
data = np.load(spec["inputs"])
x, dy = tf.constant(data["x"]), tf.constant(data["dy"])
keras_name = {"hard_swish": "hard_silu", "swish": "silu", "gelu_tanh": "gelu"}
out = {}
for i, (name, params) in enumerate(spec["variants"]):
    kw = {{"alpha": "negative_slope"}.get(k, k): v for k, v in params.items()}
    if name == "elu":
        kw = {"alpha": params.get("alpha", 1.0)}
    if name == "leaky_relu":
        kw = {"negative_slope": params["alpha"]}
    if name in ("gelu", "gelu_tanh"):
        kw = {"approximate": name == "gelu_tanh"}
    fn = getattr(keras.activations, keras_name.get(name, name))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x, **kw)
    out[f"dx{i}"] = tape.gradient(y, x, output_gradients=dy).numpy()
np.savez(spec["out"], **out)
"""


@pytest.mark.keras
@pytest.mark.slow
def test_activation_grads_match_tensorflow(keras_py, tmp_path):
    """TF's own gradients through keras.activations on a grid with every kink: the mask
    activations must agree exactly, the smooth ones to TF's float32 approximations."""
    from fixtures import run_keras_script       # reads the fixture manifest: only here

    variants = [v for v in VARIANTS if v[0] != "hard_sigmoid_k2"]         # Keras 2 only
    x = np.concatenate([KINKS, np.linspace(-7, 7, 561, dtype=np.float32)]).astype(np.float32)
    dy = np.random.default_rng(30).standard_normal(x.size).astype(np.float32)
    tf_grads = run_keras_script(keras_py, _KERAS_SCRIPT, tmp_path, dict(x=x, dy=dy),
                                variants=variants)
    exact = {"relu", "leaky_relu", "hard_sigmoid", "linear"}
    for i, (name, params) in enumerate(variants):
        ours, _ = _grad(x, dy, name, params)
        want = tf_grads[f"dx{i}"]
        if name in exact:
            assert np.array_equal(ours, want), (name, params, x[ours != want][:5])
        else:
            # TF evaluates in float32: ~1 ulp of its largest term, which for gelu_tanh is
            # 0.5 x (1 - tanh^2) c (1 + 0.134 x^2) with 1 - tanh^2 cancelling (~|x|^3 ulp).
            growth = (1 + np.abs(x)) ** (3 if name == "gelu_tanh" else 1)
            tol = 4e-6 * np.abs(want) + 3e-7 * np.abs(dy) * growth
            bad = np.abs(ours - want) > tol
            if name == "selu":      # TF's exp(x) - 1 is 0 for |x| < 3e-8 (see TF_KINK_GRADS)
                bad &= np.abs(x) > 3e-8
            # Where TF's float32 tanh / exp saturate (gelu_tanh below x ~ -4.9) its gradient
            # is exactly 0; ours, from double, is the true ~1e-6 tail.
            bad &= ~((want == 0) & (np.abs(ours) <= 1e-5 * np.abs(dy)))
            assert not bad.any(), (name, params, x[bad][:5], ours[bad][:5], want[bad][:5])
