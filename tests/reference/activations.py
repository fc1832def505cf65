"""Keras activation formulas in float64 (Keras 3 keras/src/activations/activations.py
unless marked Keras 2), keyed by the names of ``edgecore._kernels.ACTIVATION_CODES``."""
import math

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _softplus(x):
    return np.logaddexp(0.0, x)          # log(1 + exp(x)) without overflow


def _sigmoid(x):
    # Two branches so neither exp overflows nor 1 - tiny cancels.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """keras.activations.relu, following ReLU.static_call branch by branch."""
    x = np.asarray(x, dtype=np.float64)
    if negative_slope != 0.0 and max_value is None and threshold == 0:
        return np.where(x > 0, x, negative_slope * x)         # leaky_relu
    negative_part = np.maximum(threshold - x, 0.0) if negative_slope != 0.0 else 0.0
    y = np.where(x > threshold, x, 0.0) if threshold != 0 else np.maximum(x, 0.0)
    if max_value is not None:
        y = np.clip(y, 0.0, max_value)
    return y - negative_slope * negative_part


ACTIVATIONS = {
    "linear": lambda x, **k: x,
    "relu": lambda x, alpha=0.0, max_value=None, threshold=0.0: relu(x, alpha, max_value, threshold),
    "sigmoid": lambda x, **k: _sigmoid(x),
    "hard_sigmoid": lambda x, **k: np.clip(x + 3.0, 0.0, 6.0) / 6.0,          # Keras 3
    "hard_sigmoid_k2": lambda x, **k: np.clip(0.2 * x + 0.5, 0.0, 1.0),       # Keras 2
    "hard_swish": lambda x, **k: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,        # hard_silu
    "swish": lambda x, **k: x * _sigmoid(x),
    "gelu": lambda x, **k: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64)),
    "gelu_tanh": lambda x, **k: 0.5 * x * (1.0 + np.tanh(
        math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
    "elu": lambda x, alpha=1.0, **k: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0))),
    "selu": lambda x, **k: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
    "softplus": lambda x, **k: _softplus(x),
    "softsign": lambda x, **k: x / (1.0 + np.abs(x)),
    "leaky_relu": lambda x, alpha=0.2, **k: np.where(x >= 0, x, alpha * x),
    "tanh": lambda x, **k: np.tanh(x),
    "exponential": lambda x, **k: np.exp(x),
    "mish": lambda x, **k: x * np.tanh(_softplus(x)),
    "log_sigmoid": lambda x, **k: -_softplus(-x),
}

# Largest |f'(x)| of each activation: an error e in the pre-activation value becomes at
# most lipschitz * e after it, which is how fused-activation tolerances are scaled.
# (elu/selu/relu/leaky_relu: the slopes used in the tests are <= 1.)
LIPSCHITZ = {name: 1.2 for name in ACTIVATIONS}
LIPSCHITZ.update(selu=1.8, hard_swish=1.5, exponential=None)


def activation(x, name, alpha=0.0, max_value=math.inf, threshold=0.0):
    """Reference for ``activation(code)`` with the kernel's parameter conventions
    (max_value=inf means Keras's None)."""
    x = np.asarray(x, dtype=np.float64)
    if name == "relu":
        return relu(x, alpha, None if math.isinf(max_value) else max_value, threshold)
    if name in ("elu", "leaky_relu"):
        return ACTIVATIONS[name](x, alpha=alpha)
    return ACTIVATIONS[name](x)


# --- derivatives, as TensorFlow differentiates Keras 3's ops --------------------------------

def _relu_derivative(x32, negative_slope, max_value, threshold):
    """Keras ReLU.static_call differentiated op by op as TF does: where / Relu / Relu6 /
    clip_by_value (minimum then maximum, whose gradients pass at ties) and the negative
    part relu(-x + threshold), with every comparison on float32 values."""
    thr = np.float32(threshold)
    if negative_slope != 0 and max_value is None and threshold == 0:
        return np.where(x32 > 0, 1.0, negative_slope)          # LeakyReluGrad: x > 0
    clip = max_value is not None
    if threshold != 0:
        v = np.where(x32 > thr, x32, np.float32(0))
        g = (x32 > thr).astype(np.float64)
    elif max_value == 6:
        v, clip = None, False
        g = ((x32 > 0) & (x32 < 6)).astype(np.float64)         # Relu6Grad
    else:
        v = np.maximum(x32, np.float32(0))
        g = (x32 > 0).astype(np.float64)                       # ReluGrad: y > 0
    if clip:
        g = g * ((v >= 0) & (v <= np.float32(max_value)))
    if negative_slope != 0:
        g = g + negative_slope * ((-x32 + thr) > 0)
    return g


def _derivatives(x, x32, y):
    """name -> f'(x) for the activations without parameters; y is the float32 forward
    output, read where TF's gradient op reads it."""
    s = _sigmoid(x)
    xs = x32 + np.float32(3.0)                                 # relu6(x + 3) in float32
    hs_mask = ((xs > 0) & (xs < 6)) / 6.0
    k2 = x32 * np.float32(0.2) + np.float32(0.5)
    t_gelu = np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))
    t_mish = np.tanh(_softplus(x))
    return {
        "linear": np.ones_like(x),
        "sigmoid": y * (1.0 - y),                              # SigmoidGrad(y)
        "hard_sigmoid": hs_mask,
        "hard_sigmoid_k2": np.where((k2 >= 0) & (k2 <= 1), float(np.float32(0.2)), 0.0),
        "hard_swish": np.clip(xs.astype(np.float64), 0.0, 6.0) / 6.0 + x * hs_mask,
        "swish": s * (1.0 + x * (1.0 - s)),                    # tf.nn.silu's gradient
        "gelu": 0.5 * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))
        + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi),
        "gelu_tanh": 0.5 * (1.0 + t_gelu) + 0.5 * x * (1.0 - t_gelu ** 2)
        * math.sqrt(2.0 / math.pi) * (1.0 + 3 * 0.044715 * x ** 2),
        "selu": np.where(y < 0, y + SELU_SCALE * SELU_ALPHA, SELU_SCALE),   # SeluGrad(y)
        "softplus": s,                                         # SoftplusGrad
        "softsign": 1.0 / (1.0 + np.abs(x)) ** 2,
        "tanh": 1.0 - y * y,                                   # TanhGrad(y)
        "exponential": y,
        "mish": t_mish + x * (1.0 - t_mish ** 2) * s,
        "log_sigmoid": _sigmoid(-x),
    }


def activation_derivative(x, y, name, alpha=0.0, max_value=math.inf, threshold=0.0):
    """f'(x) in float64 with TensorFlow's rules at the kinks (see kernels/activations.pxi):
    x is the float32 input, y = f(x) the float32 forward output."""
    x32 = np.asarray(x, np.float32)
    x = x32.astype(np.float64)
    y = np.asarray(y, np.float64)
    if name == "relu":
        return _relu_derivative(x32, alpha, None if math.isinf(max_value) else max_value,
                                threshold)
    if name == "leaky_relu":
        return np.where(x32 > 0, 1.0, float(np.float32(alpha)))
    if name == "elu":                                          # EluGrad(y), alpha at 0
        return np.where(x > 0, 1.0, y + float(np.float32(alpha)))
    return _derivatives(x, x32, y)[name]


# --- the Keras-3-only codes (kernels/activations_k3.pxi) -----------------------------------
# Kept apart from ACTIVATIONS: they take Keras's default parameters (KERAS3_PARAMS) rather
# than the kernel's zero defaults.  tanh_shrink and squareplus cancel in float64 too (x -
# tanh x near 0, x + sqrt(x^2 + b) for x << 0), so their references are evaluated with enough
# significant digits by `decimal` (90 in all), independently of the kernel's series / rewritten forms.

KERAS3_PARAMS = {"celu": {"alpha": 1.0}, "hard_shrink": {"threshold": 0.5},
                 "soft_shrink": {"threshold": 0.5}, "squareplus": {"alpha": 4.0}}


def _decimal_map(f, x):
    import decimal
    ctx = decimal.Context(prec=90)   # x + sqrt(x^2 + b) for |x| up to 1e18
    out = np.empty(np.shape(x), np.float64)
    with decimal.localcontext(ctx):             # the operators use it too, not only ctx.sqrt
        for i, v in enumerate(np.asarray(x, np.float64).ravel()):
            out.flat[i] = float(f(ctx, ctx.create_decimal(float(v)))) if np.isfinite(v) else np.nan
    return out


def _dec_tanh(ctx, d):
    if abs(d) > 40:
        return ctx.create_decimal(1 if d > 0 else -1)
    e = ctx.exp(2 * d)
    return ctx.divide(e - 1, e + 1)


def _squareplus(x, b):
    return _decimal_map(lambda c, d: (d + c.sqrt(d * d + c.create_decimal(b))) / 2, x)


def _squareplus_derivative(x, b):
    return _decimal_map(lambda c, d: (1 + d / c.sqrt(d * d + c.create_decimal(b))) / 2, x)


def _celu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0) / alpha))


ACTIVATIONS_K3 = {
    "celu": lambda x, alpha=1.0, **k: _celu(x, alpha),
    "hard_shrink": lambda x, threshold=0.5, **k: np.where(np.abs(x) > threshold, x, 0.0),
    "hard_tanh": lambda x, **k: np.clip(x, -1.0, 1.0),
    "soft_shrink": lambda x, threshold=0.5, **k: np.where(
        x > threshold, x - threshold, np.where(x < -threshold, x + threshold, 0.0)),
    "sparse_plus": lambda x, **k: np.where(x <= -1, 0.0, np.where(x < 1, 0.25 * (x + 1) ** 2, x)),
    "sparse_sigmoid": lambda x, **k: np.where(x <= -1, 0.0, np.where(x >= 1, 1.0, 0.5 * (x + 1))),
    "squareplus": lambda x, alpha=4.0, **k: _squareplus(x, alpha),
    "tanh_shrink": lambda x, **k: _decimal_map(lambda c, d: d - _dec_tanh(c, d), x),
}


def derivative_k3(x, name, alpha=None, threshold=None):
    """f'(x) in float64 with TF's rules at the kinks (activations_k3.pxi's comment), for
    finite x; parameters default to Keras's."""
    p = dict(KERAS3_PARAMS.get(name, {}))
    p.update({k: v for k, v in (("alpha", alpha), ("threshold", threshold)) if v is not None})
    x = np.asarray(x, np.float64)
    t = p.get("threshold", 0.0)
    if name == "celu":                       # maximum and minimum both pass at 0
        return (x >= 0) + np.where(x <= 0, np.exp(np.minimum(x, 0.0) / p["alpha"]), 0.0)
    if name in ("hard_shrink", "soft_shrink"):
        return (np.abs(x) > t).astype(np.float64)
    if name == "hard_tanh":
        return ((x >= -1) & (x <= 1)).astype(np.float64)
    if name == "sparse_plus":
        return np.where(x <= -1, 0.0, np.where(x < 1, 0.5 * (x + 1), 1.0))
    if name == "sparse_sigmoid":
        return np.where((x <= -1) | (x >= 1), 0.0, 0.5)
    if name == "squareplus":
        return _squareplus_derivative(x, p["alpha"])
    if name == "tanh_shrink":
        return np.tanh(x) ** 2
    raise KeyError(name)


def activation_k3(x, name, **params):
    p = dict(KERAS3_PARAMS.get(name, {}))
    p.update(params)
    return ACTIVATIONS_K3[name](np.asarray(x, np.float64), **p)
