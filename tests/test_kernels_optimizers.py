"""Optimizer updates (SGD, momentum, Nesterov, Adam, AdamW, amsgrad, RMSprop plain /
momentum / centered, weight decay): several steps against the float32 line-by-line
emulation of Keras 3 (reference/optimizers.py), which they must reproduce bit for bit, and,
when a TensorFlow/Keras python is available (marker `keras`), against Keras itself."""
import numpy as np
import pytest

from edgecore import _kernels as K
from reference import optimizers as ref

N = 3001            # not a multiple of any vector width
STEPS = 6


def _problem(seed=0):
    """Weights, and per-step gradients spanning 7 decades (tiny ones exercise epsilon)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(N).astype(np.float32)
    grads = [(rng.standard_normal(N) * 10.0 ** rng.uniform(-6, 1, N)).astype(np.float32)
             for _ in range(STEPS)]
    return w, grads


def _zeros(*names):
    return {k: np.zeros(N, np.float32) for k in names}


# Each case: (kernel step, reference step, state slots), the step functions taking
# (w, g, state, t) with t counting from 1.
CASES = {
    "sgd": (lambda w, g, s, t: K.sgd_step(w, g, 0.1),
            lambda w, g, s, t: ref.sgd(w, g, s, 0.1), ()),
    "sgd_momentum": (lambda w, g, s, t: K.sgd_step(w, g, 0.05, s["m"], 0.9),
                     lambda w, g, s, t: ref.sgd(w, g, s, 0.05, 0.9), ("m",)),
    "sgd_nesterov": (lambda w, g, s, t: K.sgd_step(w, g, 0.05, s["m"], 0.8, True),
                     lambda w, g, s, t: ref.sgd(w, g, s, 0.05, 0.8, True), ("m",)),
    "adam": (lambda w, g, s, t: K.adam_step(w, s["m"], s["v"], g, K.adam_step_size(1e-3, 0.9, 0.999, t)),
             lambda w, g, s, t: ref.adam(w, g, s, 1e-3, t), ("m", "v")),
    "adam_custom": (lambda w, g, s, t: K.adam_step(w, s["m"], s["v"], g,
                                                   K.adam_step_size(0.01, 0.8, 0.95, t), 0.8, 0.95, 1e-3),
                    lambda w, g, s, t: ref.adam(w, g, s, 0.01, t, 0.8, 0.95, 1e-3), ("m", "v")),
    "adam_amsgrad": (lambda w, g, s, t: K.adam_step(w, s["m"], s["v"], g,
                                                    K.adam_step_size(2e-3, 0.9, 0.999, t), v_hat=s["v_hat"]),
                     lambda w, g, s, t: ref.adam(w, g, s, 2e-3, t, amsgrad=True), ("m", "v", "v_hat")),
    "rmsprop": (lambda w, g, s, t: K.rmsprop_step(w, s["v"], g, 1e-3),
                lambda w, g, s, t: ref.rmsprop(w, g, s, 1e-3), ("v",)),
    "rmsprop_momentum_centered": (
        lambda w, g, s, t: K.rmsprop_step(w, s["v"], g, 1e-3, 0.8, 0.5, 1e-7, s["mom"], s["mg"]),
        lambda w, g, s, t: ref.rmsprop(w, g, s, 1e-3, 0.8, 0.5, centered=True), ("v", "mom", "mg")),
}


def _decayed(case_step, lr, wd, kernel):
    """Keras applies weight decay before the update (AdamW, SGD(weight_decay=...))."""
    def step(w, g, s, t):
        if kernel:
            K.weight_decay_step(w, lr, wd)
            case_step(w, g, s, t)
            return w
        return case_step(ref.weight_decay(w, lr, wd), g, s, t)
    return step


CASES["adamw"] = (_decayed(CASES["adam"][0], 1e-3, 0.004, True),
                  _decayed(CASES["adam"][1], 1e-3, 0.004, False), ("m", "v"))
CASES["sgd_weight_decay"] = (_decayed(CASES["sgd"][0], 0.1, 0.01, True),
                             _decayed(CASES["sgd"][1], 0.1, 0.01, False), ())


def _run_both(name):
    kernel_step, ref_step, slots = CASES[name]
    w0, grads = _problem()
    w_k, s_k = w0.copy(), _zeros(*slots)
    w_r, s_r = w0.copy(), _zeros(*slots)
    for t, g in enumerate(grads, 1):
        g.setflags(write=False)                       # gradients may be read-only
        kernel_step(w_k, g, s_k, t)
        w_r = ref_step(w_r, g, s_r, t)
        yield t, w_k, w_r, s_k, s_r


@pytest.mark.parametrize("name", list(CASES))
def test_optimizer_steps_reproduce_keras_arithmetic(name):
    for t, w_k, w_r, s_k, s_r in _run_both(name):
        bad = np.flatnonzero(w_k != w_r)
        assert bad.size == 0, (f"{name} step {t}: {bad.size} weights differ from Keras's float32 "
                               f"arithmetic, first at {bad[0]}: {w_k[bad[0]]!r} vs {w_r[bad[0]]!r}")
        for slot in s_k:
            assert np.array_equal(s_k[slot], s_r[slot]), f"{name} step {t}: slot {slot} differs"


def test_adam_step_size_matches_keras_float32():
    for t in (1, 2, 3, 4, 10, 100, 1000, 10000):
        for b1, b2 in ((0.9, 0.999), (0.8, 0.95), (0.5, 0.99)):
            assert np.float32(K.adam_step_size(1e-3, b1, b2, t)) == ref.adam_alpha(1e-3, b1, b2, t)


def test_optimizer_validation():
    w, g = np.zeros(4, np.float32), np.ones(4, np.float32)
    bad = [
        lambda: K.sgd_step(w, g[:3], 0.1),
        lambda: K.sgd_step(w, g, 0.1, np.zeros(4, np.float32)),               # slot without momentum
        lambda: K.sgd_step(w, g, 0.1, None, 0.9),                              # momentum without slot
        lambda: K.adam_step(w, w, np.zeros(4, np.float32), g, 1e-3),           # m is w
        lambda: K.adam_step(w, np.zeros(3, np.float32), np.zeros(4, np.float32), g, 1e-3),
        lambda: K.adam_step(w, np.zeros(4, np.float32), np.zeros(4, np.float32), w, 1e-3),  # g is w
        lambda: K.rmsprop_step(w, np.zeros(4, np.float32), g, 1e-3, momentum=0.5),
        lambda: K.adam_step_size(1e-3, 0.9, 0.999, 0),
        lambda: K.weight_decay_step(np.zeros(0, np.float32), 0.1, 0.1),
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
w0, grads = np.load(spec["inputs"])["w"], np.load(spec["inputs"])["g"]
out = {}
for name, (cls, kwargs) in spec["optimizers"].items():
    opt = getattr(keras.optimizers, cls)(**kwargs)
    var = keras.Variable(w0.copy())
    opt.build([var])
    g_var = tf.Variable(grads[0])
    step = tf.function(lambda: opt.apply_gradients([(tf.identity(g_var), var)]))   # as model.fit
    trace = []
    for g in grads:
        g_var.assign(g)
        step()
        trace.append(np.array(var.numpy()))
    out[name] = np.stack(trace)
np.savez(spec["out"], **out)
"""

KERAS_OPTIMIZERS = {
    "sgd": ("SGD", {"learning_rate": 0.1}),
    "sgd_momentum": ("SGD", {"learning_rate": 0.05, "momentum": 0.9}),
    "sgd_nesterov": ("SGD", {"learning_rate": 0.05, "momentum": 0.8, "nesterov": True}),
    "sgd_weight_decay": ("SGD", {"learning_rate": 0.1, "weight_decay": 0.01}),
    "adam": ("Adam", {"learning_rate": 1e-3}),
    "adam_custom": ("Adam", {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-3}),
    "adam_amsgrad": ("Adam", {"learning_rate": 2e-3, "amsgrad": True}),
    "adamw": ("AdamW", {"learning_rate": 1e-3, "weight_decay": 0.004}),
    "rmsprop": ("RMSprop", {"learning_rate": 1e-3}),
    "rmsprop_momentum_centered": ("RMSprop", {"learning_rate": 1e-3, "rho": 0.8, "momentum": 0.5,
                                              "centered": True}),
}


@pytest.mark.keras
@pytest.mark.slow
def test_optimizer_steps_match_keras(keras_py, tmp_path):
    """Keras 3 under tf.function (model.fit's mode) on the same weights and gradients:
    identical bits except RMSprop, whose TF rsqrt is approximate (within 2 ulp), so it must
    stay within 3e-7 of the summed update magnitude."""
    from fixtures import run_keras_script       # reads the fixture manifest: only here
    w0, grads = _problem()
    keras_trace = run_keras_script(keras_py, _KERAS_SCRIPT, tmp_path, dict(w=w0, g=np.stack(grads)),
                                   optimizers=KERAS_OPTIMIZERS)
    for name in KERAS_OPTIMIZERS:
        previous = w0.astype(np.float64)
        moved = np.abs(previous)
        for t, w_k, _, _, _ in _run_both(name):
            want = keras_trace[name][t - 1]
            moved += np.abs(want - previous)
            previous = want.astype(np.float64)
            if name.startswith("rmsprop"):
                assert (np.abs(w_k - want) <= 3e-7 * moved).all(), f"{name} step {t}"
            else:
                assert np.array_equal(w_k, want), f"{name} step {t}: not Keras's bits"
