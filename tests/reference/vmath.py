"""Exact (float64, cancellation-free) values of the activations the float32 vector kernels
compute, and their error in ulp of the exact result, for tests/test_kernels_activations_
vector.py and bench/measure_activations.py.

Unlike reference/activations.py (Keras's formulas in float64, which cancel where Keras's
do: 0.5 x (1 + erf) and 0.5 x (1 + tanh) for x << 0) these are the functions themselves:
gelu from erfc, gelu_tanh as x sigmoid(2u), sigmoid / softplus without 1 - s.  float64's
relative error here is < 1e-15, far below a float32 ulp (6e-8 relative)."""
import math

import numpy as np

from reference.activations import SELU_ALPHA, SELU_SCALE

_erfc = np.frompyfunc(math.erfc, 1, 1)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x > 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _gelu(x):
    # x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2; erfc underflows double only below x = -38
    out = np.zeros_like(x)
    live = np.abs(x) < 40
    xl = x[live]
    out[live] = xl * 0.5 * _erfc(-xl / math.sqrt(2.0)).astype(np.float64)
    out[~live] = np.where(x[~live] > 0, x[~live], -0.0)
    return out


def _gelu_tanh(x):
    u = _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
    return x * _sigmoid(2.0 * u)


def _elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


EXACT = {
    "sigmoid": _sigmoid,
    "swish": lambda x: x * _sigmoid(x),
    "tanh": np.tanh,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "elu": _elu,
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
    "celu": _elu,                      # Keras's default alpha = 1
    "softplus": _softplus,
    "log_sigmoid": lambda x: -_softplus(-x),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "exponential": np.exp,
}


def exact(x, name):
    """The function at float32 inputs x, in float64 (finite x only)."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return EXACT[name](np.asarray(x, np.float64))


def ulp32(ref):
    """The float32 ulp at |ref| (2^-149 for denormals)."""
    e = np.frexp(np.abs(ref))[1]
    return np.ldexp(1.0, np.maximum(e - 24, -149))


def ulp_error(got, ref):
    """|got - ref| in float32 ulps of ref; an infinite ref must be matched exactly (0 or
    inf); a finite ref beyond FLT_MAX (rounds to inf) counts its distance from FLT_MAX."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got - ref) / ulp32(ref)
        ovf = np.abs(ref) > np.finfo(np.float32).max
        err = np.where(ovf, np.where(np.isinf(got) & (np.sign(got) == np.sign(ref)), 0.0, np.inf), err)
        both_inf = np.isinf(ref) & (got == ref)
        return np.where(both_inf, 0.0, err)


def finite_float32(step=1, lo_bits=0, hi_bits=0x7F800000):
    """Every `step`-th positive finite float32 with bit patterns in [lo_bits, hi_bits), and
    their negatives."""
    pos = np.arange(lo_bits, hi_bits, step, dtype=np.uint32).view(np.float32)
    return np.concatenate([pos, -pos])
