"""Keras 3 losses on logits, float64, following keras/src/losses/losses.py and the
TensorFlow ops Keras calls (keras/src/backend/tensorflow/nn.py) line by line:

    sparse / categorical: tf.nn.(sparse_)softmax_cross_entropy_with_logits
        loss = sum_j t_j * (logsumexp(z) - z_j), backprop = softmax(z) - t
    binary (from_logits): tf.nn.sigmoid_cross_entropy_with_logits, mean over the last axis
        loss = max(z, 0) - z * t + log1p(exp(-|z|)), gradient sigmoid(z) - t
    mean squared error: mean((t - p)^2, axis=-1)

Label smoothing is applied to the targets in float32 exactly as Keras writes it, where
Python evaluates (1.0 - ls) and 0.5 * ls in double and TF rounds them to float32.
Gradients are returned multiplied by grad_scale (1 / batch for Keras's default reduction).
"""
import numpy as np

f32 = np.float32


def smooth_categorical(targets, label_smoothing):
    """y_true * (1.0 - ls) + ls / num_classes, in float32 (skipped when ls == 0)."""
    t = np.asarray(targets, f32)
    if not label_smoothing:
        return t
    return t * f32(1.0 - label_smoothing) + f32(label_smoothing) / f32(t.shape[-1])


def smooth_binary(targets, label_smoothing):
    """y_true * (1.0 - ls) + 0.5 * ls, in float32 (skipped when ls == 0)."""
    t = np.asarray(targets, f32)
    if not label_smoothing:
        return t
    return t * f32(1.0 - label_smoothing) + f32(0.5 * label_smoothing)


def _softmax_parts(logits):
    z = np.asarray(logits, np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return shifted, lse


def softmax_cross_entropy(logits, targets, label_smoothing=0.0, grad_scale=1.0):
    """(loss per row, dlogits) of CategoricalCrossentropy(from_logits=True)."""
    t = smooth_categorical(targets, label_smoothing).astype(np.float64)
    shifted, lse = _softmax_parts(logits)
    loss = (t * (lse - shifted)).sum(axis=-1)
    return loss, (np.exp(shifted - lse) - t) * grad_scale


def sparse_softmax_cross_entropy(logits, labels, grad_scale=1.0):
    """(loss per row, dlogits) of SparseCategoricalCrossentropy(from_logits=True)."""
    onehot = np.eye(np.asarray(logits).shape[-1])[np.asarray(labels)]
    return softmax_cross_entropy(logits, onehot, 0.0, grad_scale)


def sigmoid_binary_cross_entropy(logits, targets, label_smoothing=0.0, grad_scale=1.0):
    """(loss per row, dlogits) of BinaryCrossentropy(from_logits=True)."""
    z = np.asarray(logits, np.float64)
    t = smooth_binary(targets, label_smoothing).astype(np.float64)
    elem = np.maximum(z, 0.0) - z * t + np.log1p(np.exp(-np.abs(z)))
    sig = np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))),
                   np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))
    return elem.mean(axis=-1), (sig - t) * grad_scale / z.shape[-1]


def mean_squared_error(pred, targets, grad_scale=1.0):
    """(loss per row, dpred) of MeanSquaredError."""
    diff = np.asarray(pred, np.float64) - np.asarray(targets, np.float64)
    return (diff ** 2).mean(axis=-1), 2.0 * diff * grad_scale / diff.shape[-1]
