"""Row activations over the last axis of a (rows, n) array, in float64: log_softmax,
sparsemax (Keras 3.15's threshold and the simplex one) and glu, with their backward as
TensorFlow differentiates Keras's graphs (kernels/rowact.pxi)."""
import numpy as np


def log_softmax(x):
    x = np.asarray(x, np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_softmax_backward(dy, y):
    """TF's _LogSoftmaxGrad from the output y: dy - exp(y) * sum(dy)."""
    dy, y = np.asarray(dy, np.float64), np.asarray(y, np.float64)
    return dy - np.exp(y) * dy.sum(axis=1, keepdims=True)


def _sparsemax_parts(x, mode):
    """(tau (rows, 1), order (rows, n) = positions in sorted order, support (rows, n) per
    sorted position, k (rows,)) with Keras's formula; order sorts descending, ties by
    position (np.lexsort is stable)."""
    x = np.asarray(x, np.float64)
    rows, n = x.shape
    order = np.stack([np.lexsort((np.arange(n), -row)) for row in x])
    z = np.take_along_axis(x, order, axis=1)
    c = np.cumsum(z, axis=1)
    support = z - (c - 1) / np.arange(1, n + 1) > 0
    k = support.sum(axis=1)
    picked = np.where(support, c if mode == "keras_3_15" else z, 0.0).sum(axis=1)
    with np.errstate(divide="ignore"):
        tau = np.where(k > 0, (picked - 1) / np.maximum(k, 1), -np.inf)
    return tau[:, None], order, support, k


def sparsemax(x, mode="keras_3_15"):
    x = np.asarray(x, np.float64)
    tau = _sparsemax_parts(x, mode)[0]
    return np.maximum(x - tau, 0.0)


def sparsemax_backward(dy, x, mode="keras_3_15", magnitude=False):
    """dx_j = [x_j - tau >= 0] dy_j - g w_rank(j), g = sum of dy over x - tau >= 0, w_m the
    share of tau's gradient at sorted position m (see rowact.pxi); magnitude=True gives the
    same sum over |terms|, for tolerances."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    tau, order, support, k = _sparsemax_parts(x, mode)
    active = (x - tau) >= 0
    if magnitude:
        dy = np.abs(dy)
    g = np.where(active, dy, 0.0).sum(axis=1, keepdims=True)
    if mode == "keras_3_15":
        w_sorted = np.cumsum(support[:, ::-1], axis=1)[:, ::-1]      # #{i >= m in support}
    else:
        w_sorted = support.astype(np.float64)
    w_sorted = w_sorted / np.maximum(k, 1)[:, None]
    w = np.empty_like(w_sorted)
    np.put_along_axis(w, order, w_sorted, axis=1)
    own = np.where(active, dy, 0.0)
    return own + g * w if magnitude else own - g * w


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def glu(x):
    x = np.asarray(x, np.float64)
    h = x.shape[1] // 2
    return x[:, :h] * _sigmoid(x[:, h:])


def glu_backward(dy, x):
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    h = x.shape[1] // 2
    a, b = x[:, :h], x[:, h:]
    return np.concatenate([dy * _sigmoid(b), dy * a * _sigmoid(b) * _sigmoid(-b)], axis=1)
