"""LayerNormalization reference, Keras 3 (keras/src/ops/nn.py _layer_normalization):

    mean, var = moments(x, axes)          # population variance, centred
    inv = rsqrt(var + eps) * gamma;  y = x * inv + (beta - mean * inv)
    rms_scaling: y = x * rsqrt(var + eps) * gamma     (var still the centred variance)

RMSNormalization reference, Keras 3 (_rms_normalization): y = x * rsqrt(mean(x^2) + eps) * scale
"""
import numpy as np


def layernorm(x_rows_cols, gamma=None, beta=None, epsilon=1e-3, rms_scaling=False):
    x = np.asarray(x_rows_cols, np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt(var + epsilon)
    g = 1.0 if gamma is None else np.asarray(gamma, np.float64)
    if rms_scaling:
        return x * inv * g
    bt = 0.0 if beta is None else np.asarray(beta, np.float64)
    return (x - mean) * inv * g + bt


def rms_normalization(x_rows_cols, scale=None, epsilon=1e-6):
    x = np.asarray(x_rows_cols, np.float64)
    inv = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + epsilon)
    return x * inv * (1.0 if scale is None else np.asarray(scale, np.float64))
