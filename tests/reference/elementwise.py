"""Elementwise references: broadcasting binary ops (Keras Add/Subtract/Multiply/Maximum/
Minimum and divide), scale, per-channel affine and Keras PReLU, and the backward of the
binary ops and PReLU (TensorFlow's gradient formulas, summed over broadcast axes);
BatchNormalization is in reference/normalization.py."""
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


def reduce_to(g, shape):
    """Sum g over the axes along which an operand of `shape` (left-padded with 1s) was
    broadcast to g's shape: the gradient in the operand's own shape."""
    g = np.asarray(g, np.float64)
    padded = (1,) * (g.ndim - len(shape)) + tuple(shape)
    axes = tuple(i for i, (s, d) in enumerate(zip(padded, g.shape)) if s == 1 and d != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


def _binary_terms(a, b, dy, op):
    """TensorFlow's per-element gradients of y = a op b (float64, at the broadcast shape):
    divide's db = -dy * a / b**2; maximum's gradient to a where a >= b, else to b;
    minimum's to a where a <= b (tf.where, so a NaN comparison sends it to b)."""
    a, b, dy = (np.asarray(v, np.float64) for v in (a, b, dy))
    a, b = np.broadcast_arrays(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        if op in ("maximum", "minimum"):
            to_a = a >= b if op == "maximum" else a <= b
            return np.where(to_a, dy, 0.0), np.where(to_a, 0.0, dy)
        return {"add": (dy, dy), "subtract": (dy, -dy), "multiply": (dy * b, dy * a),
                "divide": (dy / b, -dy * a / (b * b))}[op]


def binary_backward(a, b, dy, op, magnitude=False):
    """(da, db) of y = a op b in a's and b's shapes.  magnitude=True: the sums of |terms|
    (the scale of a float32 kernel's rounding error)."""
    ga, gb = _binary_terms(a, b, dy, op)
    if magnitude:
        ga, gb = np.abs(ga), np.abs(gb)
    return reduce_to(ga, np.shape(a)), reduce_to(gb, np.shape(b))


def channel_affine(x_rc, scale, shift):
    return np.asarray(x_rc, np.float64) * np.asarray(scale, np.float64) + np.asarray(shift, np.float64)


def prelu(x, alpha):
    """Keras PReLU: relu(x) - alpha * relu(-x), alpha broadcast over the batch axis (and
    over shared axes, where its size is 1)."""
    x = np.asarray(x, np.float64)
    alpha = np.asarray(alpha, np.float64)
    return np.maximum(x, 0.0) - alpha * np.maximum(-x, 0.0)


def prelu_backward(x, alpha, dy, magnitude=False):
    """(dx, dalpha) of Keras PReLU through TF's relu gradient: dx = dy where x > 0, alpha *
    dy where x < 0, 0 at x == 0; dalpha = dy * min(x, 0) summed over the batch and the
    shared axes (alpha's shape has 1 there)."""
    x, alpha, dy = (np.asarray(v, np.float64) for v in (x, alpha, dy))
    dx = dy * (x > 0) + alpha * dy * (x < 0)
    da = dy * np.minimum(x, 0.0)
    if magnitude:
        dx, da = np.abs(dx), np.abs(da)
    return dx, reduce_to(da, (1,) + alpha.shape)[0]

