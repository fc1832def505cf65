"""LayerNormalization reference, Keras 3 (keras/src/ops/nn.py _layer_normalization):

    mean, var = moments(x, axes)          # population variance, centred
    inv = rsqrt(var + eps) * gamma;  y = x * inv + (beta - mean * inv)
    rms_scaling: y = x * rsqrt(var + eps) * gamma     (var still the centred variance)

RMSNormalization reference, Keras 3 (_rms_normalization): y = x * rsqrt(mean(x^2) + eps) * scale

Their backward (the gradient TF's autodiff gives for those formulas, derived by hand below),
and BatchNormalization in inference mode (moving statistics) and training mode (batch
statistics, the moving-average update, the full gradient).
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


# --- LayerNormalization / RMSNormalization backward ---------------------------------------
# modes as the kernel's NormMode: "layer", "layer_rms_scaling", "rms".  With g = gamma * dy,
# m the row mean (0 in "rms"), var the centred variance (the mean square in "rms"),
# inv = 1 / sqrt(var + eps), s the shift y subtracts (m in "layer", else 0):
#   y = (x - s) * inv * gamma (+ beta in "layer")
#   d inv / dx_j = -inv^3 (x_j - m) / n                       (every mode)
#   dx = inv * (g - [layer] mean(g) - (x - m) * inv * inv * sum(g * (x - s)) / n)
#   dgamma = sum_rows dy * (x - s) * inv,   dbeta = sum_rows dy ("layer" only)

def _row_stats(x, epsilon, mode):
    m = np.zeros((x.shape[0], 1)) if mode == "rms" else x.mean(axis=-1, keepdims=True)
    var = ((x - m) ** 2).mean(axis=-1, keepdims=True)
    return m, 1.0 / np.sqrt(var + epsilon)


def layernorm_forward(x_rows_cols, gamma=None, beta=None, epsilon=1e-3, mode="layer"):
    """All three modes in one function (for the finite-difference check of the backward)."""
    if mode == "rms":
        return rms_normalization(x_rows_cols, gamma, epsilon)
    return layernorm(x_rows_cols, gamma, beta, epsilon, rms_scaling=mode == "layer_rms_scaling")


def layernorm_backward(x_rows_cols, dy_rows_cols, gamma=None, epsilon=1e-3, mode="layer",
                       magnitude=False):
    """(dx, dgamma, dbeta) in float64 (dbeta None outside "layer"); magnitude=True gives the
    same sums over absolute values of every term (the scale of the float32 rounding)."""
    x, dy = np.asarray(x_rows_cols, np.float64), np.asarray(dy_rows_cols, np.float64)
    n = x.shape[1]
    m, inv = _row_stats(x, epsilon, mode)
    shift = m if mode == "layer" else 0.0
    gam = 1.0 if gamma is None else np.asarray(gamma, np.float64)
    a = abs if magnitude else (lambda v: v)
    g = a(gam * dy)
    xs, xc = a(x - shift), a(x - m)
    mean_g = g.mean(axis=-1, keepdims=True) if mode == "layer" else 0.0
    if magnitude and mode == "layer_rms_scaling":
        # the kernel forms sum(g (x - m)) + m sum(g): the magnitude of both terms
        b = inv * inv * ((g * xc).sum(axis=-1, keepdims=True)
                         + np.abs(m) * g.sum(axis=-1, keepdims=True)) / n
    else:
        b = inv * inv * (g * xs).sum(axis=-1, keepdims=True) / n
    if magnitude:
        dx = inv * (g + mean_g + xc * b)
    else:
        dx = inv * (g - mean_g - xc * b)
    dgamma = (a(dy) * xs * inv).sum(axis=0)
    dbeta = a(dy).sum(axis=0) if mode == "layer" else None
    return dx, dgamma, dbeta


# --- BatchNormalization, channels last over (rows, C) -------------------------------------

def batchnorm_inference(x_rc, moving, gamma=None, beta=None, epsilon=1e-3):
    """Keras BatchNormalization(training=False): (x - moving_mean) / sqrt(moving_variance +
    eps) * gamma + beta; moving = [moving_mean (C), moving_variance (C)]."""
    x = np.asarray(x_rc, np.float64)
    c = x.shape[1]
    moving = np.asarray(moving, np.float64)
    inv = 1.0 / np.sqrt(moving[c:] + epsilon)
    g = 1.0 if gamma is None else np.asarray(gamma, np.float64)
    b = 0.0 if beta is None else np.asarray(beta, np.float64)
    return g * (x - moving[:c]) * inv + b


def batchnorm_inference_backward(x_rc, dy_rc, moving, gamma=None, epsilon=1e-3):
    """(dx, dgamma, dbeta) of batchnorm_inference: the statistics are constants."""
    x, dy = np.asarray(x_rc, np.float64), np.asarray(dy_rc, np.float64)
    c = x.shape[1]
    moving = np.asarray(moving, np.float64)
    inv = 1.0 / np.sqrt(moving[c:] + epsilon)
    g = 1.0 if gamma is None else np.asarray(gamma, np.float64)
    xhat = (x - moving[:c]) * inv
    return dy * g * inv, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def batch_moments(x_rc):
    """Batch mean and biased (population) variance per channel."""
    x = np.asarray(x_rc, np.float64)
    mean = x.mean(axis=0)
    return mean, ((x - mean) ** 2).mean(axis=0)


def batchnorm_train(x_rc, gamma=None, beta=None, epsilon=1e-3):
    """Keras BatchNormalization(training=True) output and (mean, inv_std) from the batch."""
    x = np.asarray(x_rc, np.float64)
    mean, var = batch_moments(x)
    inv = 1.0 / np.sqrt(var + epsilon)
    g = 1.0 if gamma is None else np.asarray(gamma, np.float64)
    b = 0.0 if beta is None else np.asarray(beta, np.float64)
    return (x - mean) * inv * g + b, mean, inv


def moving_update(moving, x_rc, momentum, bessel):
    """The moving statistics after one training call, in float64: moving * momentum +
    stat * (1 - momentum), the variance with Bessel's correction rows / (rows - 1) when
    bessel (TF's fused batch norm; rows = 1 keeps the variance)."""
    moving = np.asarray(moving, np.float64)
    rows, c = np.shape(x_rc)
    mean, var = batch_moments(x_rc)
    if bessel and rows > 1:
        var = var * rows / (rows - 1)
    return np.concatenate([moving[:c] * momentum + mean * (1 - momentum),
                           moving[c:] * momentum + var * (1 - momentum)])


def batchnorm_train_backward(x_rc, dy_rc, gamma=None, epsilon=1e-3, magnitude=False):
    """(dx, dgamma, dbeta) of batchnorm_train, the batch mean and variance depending on x:
    dx = gamma * inv / n * (n dy - sum(dy) - xhat * sum(dy * xhat)).  magnitude=True: the
    same over absolute values of every term."""
    x, dy = np.asarray(x_rc, np.float64), np.asarray(dy_rc, np.float64)
    n = x.shape[0]
    mean, var = batch_moments(x)
    inv = 1.0 / np.sqrt(var + epsilon)
    g = 1.0 if gamma is None else np.asarray(gamma, np.float64)
    a = abs if magnitude else (lambda v: v)
    xhat, dy = a((x - mean) * inv), a(dy)
    dbeta = dy.sum(axis=0)
    dgamma = (dy * xhat).sum(axis=0)
    if magnitude:
        dx = a(g) * inv / n * (n * dy + dbeta + xhat * dgamma)
    else:
        dx = g * inv / n * (n * dy - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta
