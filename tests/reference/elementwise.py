"""Elementwise references: broadcasting binary ops (Keras Add/Subtract/Multiply/Maximum/
Minimum and divide), scale, per-channel affine and Keras PReLU (BatchNormalization is in
reference/normalization.py)."""
import numpy as np

BINARY = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
    "maximum": np.maximum, "minimum": np.minimum,
}


def binary(a, b, op):
    return BINARY[op](np.asarray(a, np.float64), np.asarray(b, np.float64))


def binary_magnitude(a, b, op):
    """Scale of the rounding error: |a| + |b| for add/subtract, |result| otherwise (one
    correctly rounded float32 operation)."""
    a, b = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64))
    return a + b if op in ("add", "subtract") else np.abs(binary(a, b, op))


def channel_affine(x_rc, scale, shift):
    return np.asarray(x_rc, np.float64) * np.asarray(scale, np.float64) + np.asarray(shift, np.float64)


def prelu(x, alpha):
    """Keras PReLU: relu(x) - alpha * relu(-x), alpha broadcast over the batch axis (and
    over shared axes, where its size is 1)."""
    x = np.asarray(x, np.float64)
    alpha = np.asarray(alpha, np.float64)
    return np.maximum(x, 0.0) - alpha * np.maximum(-x, 0.0)
