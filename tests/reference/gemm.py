"""GEMM reference: c = act(a @ b + bias), float64; and the Dense backward."""
import numpy as np

from .activations import activation


def gemm(a_mk, b_kn, bias=None, act="linear", **act_params):
    c = np.asarray(a_mk, np.float64) @ np.asarray(b_kn, np.float64)
    if bias is not None:
        c = c + np.asarray(bias, np.float64)
    return activation(c, act, **act_params)


def gemm_magnitude(a_mk, b_kn, bias=None):
    """sum |a_ik b_kj| + |bias_j|: the scale of the rounding error of c_ij."""
    c = np.abs(np.asarray(a_mk, np.float64)) @ np.abs(np.asarray(b_kn, np.float64))
    return c if bias is None else c + np.abs(np.asarray(bias, np.float64))


def dense_backward(x_mk, w_kn, dy_mn, magnitude=False):
    """Gradients of y = x @ w + b: (dx = dy @ w^T, dw = x^T @ dy, db = column sums of dy),
    float64.  magnitude=True: the same products of absolute values (error scale)."""
    x, w, dy = (np.asarray(a, np.float64) for a in (x_mk, w_kn, dy_mn))
    if magnitude:
        x, w, dy = np.abs(x), np.abs(w), np.abs(dy)
    return dy @ w.T, x.T @ dy, dy.sum(axis=0)
