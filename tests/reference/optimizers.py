"""Keras 3 optimizer steps (keras/src/optimizers/{sgd,adam,rmsprop,base_optimizer}.py),
written line by line in float32 NumPy, one rounding per TensorFlow op.

Checked against Keras 3.15.1 / TensorFlow 2.21 on x86-64 (4000 weights, 8 steps, gradients
over 7 decades): bit-identical to Keras for SGD (plain, momentum, Nesterov, weight decay),
Adam, AdamW and Adam(amsgrad), both eagerly and under tf.function.  Under tf.function,
which is how model.fit runs, TensorFlow's grappler rewrites two expressions, and these
references follow the graph (graph=True, the default):
  * weight decay  variable - variable * wd * lr  becomes  variable - variable * (wd * lr);
  * RMSprop       (lr * g) / sqrt(den)           becomes  (lr * g) * rsqrt(den); TF's rsqrt
                  is an approximation within 2 ulp of the correctly rounded one used here,
                  so RMSprop alone is not bit-identical (the test allows for it).
Python-side constants follow Keras: 1 - beta_1, 1 - rho are computed in double and then
rounded to float32 when they meet a float32 tensor; beta^t is pow in float32 (TF's Pow
matched the correctly rounded power on every normal result).
"""
import math

import numpy as np

f32 = np.float32


def adam_alpha(lr, beta_1, beta_2, step):
    """lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) in float32, t = iterations + 1."""
    t = float(f32(step))
    b1p = f32(math.pow(float(f32(beta_1)), t))
    b2p = f32(math.pow(float(f32(beta_2)), t))
    return f32(lr) * np.sqrt(f32(1) - b2p) / (f32(1) - b1p)


def weight_decay(w, lr, wd, graph=True):
    w = np.asarray(w, f32)
    if graph:
        return w - w * (f32(wd) * f32(lr))
    return w - w * f32(wd) * f32(lr)


def sgd(w, g, state, lr, momentum=0.0, nesterov=False):
    """One SGD step; state: {"m": momentums} (used when momentum != 0)."""
    lr, g = f32(lr), np.asarray(g, f32)
    if momentum == 0:
        return w - g * lr
    mom = f32(momentum)
    state["m"] = state["m"] * mom - g * lr
    if nesterov:
        return w + (state["m"] * mom - g * lr)
    return w + state["m"]


def adam(w, g, state, lr, step, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False):
    """One Adam step; state: {"m", "v"} (+ "v_hat" for amsgrad), zeros at step 1."""
    g = np.asarray(g, f32)
    alpha = adam_alpha(lr, beta_1, beta_2, step)
    state["m"] = state["m"] + (g - state["m"]) * f32(1 - beta_1)
    state["v"] = state["v"] + (g * g - state["v"]) * f32(1 - beta_2)
    v = state["v"]
    if amsgrad:
        state["v_hat"] = np.maximum(state["v_hat"], v)
        v = state["v_hat"]
    return w - (state["m"] * alpha) / (np.sqrt(v) + f32(epsilon))


def rmsprop(w, g, state, lr, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
            graph=True):
    """One RMSprop step; state: {"v"} (+ "mom" when momentum > 0, "mg" when centered)."""
    g, lr, rho32 = np.asarray(g, f32), f32(lr), f32(rho)
    state["v"] = rho32 * state["v"] + f32(1 - rho) * (g * g)
    if centered:
        state["mg"] = rho32 * state["mg"] + f32(1 - rho) * g
        den = state["v"] - state["mg"] * state["mg"] + f32(epsilon)
    else:
        den = state["v"] + f32(epsilon)
    if graph:
        inc = (lr * g) * (1.0 / np.sqrt(den.astype(np.float64))).astype(f32)
    else:
        inc = (lr * g) / np.sqrt(den)
    if momentum > 0:
        state["mom"] = f32(momentum) * state["mom"] + inc
        return w - state["mom"]
    return w - inc
