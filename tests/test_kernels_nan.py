"""NaN in, NaN out where Keras / TensorFlow give NaN, and a finite value where TF gives one:
every activation code and the fused activation clamps, forward and backward.

TF's answers are recorded below as constants, from TensorFlow 2.21.0 with Keras 3.15.1 (Keras
2: tf_keras 2.21.0) on x86-64 CPU, with tf.GradientTape for the gradients; TF_ENABLE_ONEDNN_OPTS
=0 and =1 gave the same answers for everything here.  The float64 references in
tests/reference propagate NaN as TF does (np.maximum / np.clip keep it), so where a kernel
only does arithmetic its NaN positions are checked against them.  Each check also requires
that a NaN does not spread: outputs that do not depend on it are bit for bit those of the
run without it (one image of a batch, one row of a GEMM tile).  The plan runner's rows are
run where the runner reaches a core by another route than the checked wrapper.
"""
import math

import numpy as np
import pytest

from edgecore import _kernels as K
from oprow import run_row
from reference.activations import activation as ref_activation
from reference.conv2d import conv2d as ref_conv2d, same_pads
from reference.dwconv2d import dwconv2d as ref_dwconv2d

nan, inf = np.nan, np.inf
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
CODES = K.ACTIVATION_CODES


def assert_nan_like(got, want, what, rtol=1e-6, atol=0.0):
    """NaN exactly where `want` is NaN; elsewhere equal infinities and close finite values."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    bad = np.isnan(got) != np.isnan(want)
    assert not bad.any(), f"{what}: NaN at {np.argwhere(np.isnan(got))[:8].tolist()}, " \
                          f"TF/reference at {np.argwhere(np.isnan(want))[:8].tolist()}"
    fin = ~np.isnan(want)
    g, w = got[fin], want[fin]
    inf_w = np.isinf(w)
    assert np.array_equal(g[inf_w], w[inf_w]), f"{what}: infinities {g[inf_w]} != {w[inf_w]}"
    close = np.abs(g[~inf_w] - w[~inf_w]) <= rtol * np.abs(w[~inf_w]) + atol
    assert close.all(), f"{what}: {g[~inf_w][~close]} != {w[~inf_w][~close]}"


# --- activations ---------------------------------------------------------------------------

# id -> (code name, kernel parameters); TF ran keras.activations.<fn> with the same
# parameters (relu: negative_slope=alpha, max_value, threshold; gelu_tanh: approximate=True;
# hard_swish: hard_silu; swish: silu), hard_sigmoid_k2 ran tf_keras.activations.hard_sigmoid.
ACT_VARIANTS = {
    "linear": ("linear", {}), "relu": ("relu", {}), "relu6": ("relu", dict(max_value=6.0)),
    "relu_max2.5": ("relu", dict(max_value=2.5)), "relu_a0.1": ("relu", dict(alpha=0.1)),
    "relu_a0.1_max4": ("relu", dict(alpha=0.1, max_value=4.0)),
    "relu_a0.1_max6": ("relu", dict(alpha=0.1, max_value=6.0)),
    "relu_t0.5": ("relu", dict(threshold=0.5)), "relu_t-0.5": ("relu", dict(threshold=-0.5)),
    "relu_a0.2_t1_max3": ("relu", dict(alpha=0.2, threshold=1.0, max_value=3.0)),
    "relu_a0.2_t-1_max4": ("relu", dict(alpha=0.2, threshold=-1.0, max_value=4.0)),
    "sigmoid": ("sigmoid", {}), "hard_sigmoid": ("hard_sigmoid", {}),
    "hard_sigmoid_k2": ("hard_sigmoid_k2", {}), "hard_swish": ("hard_swish", {}),
    "swish": ("swish", {}), "gelu": ("gelu", {}), "gelu_tanh": ("gelu_tanh", {}),
    "elu": ("elu", dict(alpha=1.0)), "elu_a0.5": ("elu", dict(alpha=0.5)), "selu": ("selu", {}),
    "softplus": ("softplus", {}), "softsign": ("softsign", {}),
    "leaky_relu": ("leaky_relu", dict(alpha=0.3)), "tanh": ("tanh", {}),
    "exponential": ("exponential", {}), "mish": ("mish", {}), "log_sigmoid": ("log_sigmoid", {}),
}
X_SPECIAL = np.array([nan, inf, -inf], np.float32)
# TF: id -> (f(x) at X_SPECIAL, dx at X_SPECIAL with dy = 1).
TF_SPECIAL = {
    "linear": ([nan, inf, -inf], [1.0, 1.0, 1.0]),
    "relu": ([nan, inf, 0.0], [0.0, 1.0, 0.0]),
    "relu6": ([nan, 6.0, 0.0], [0.0, 0.0, 0.0]),
    "relu_max2.5": ([nan, 2.5, 0.0], [0.0, 0.0, 0.0]),
    "relu_a0.1": ([nan, inf, -inf], [0.1, 1.0, 0.1]),
    "relu_a0.1_max4": ([nan, 4.0, -inf], [0.0, 0.0, 0.1]),
    "relu_a0.1_max6": ([nan, 6.0, -inf], [0.0, 0.0, 0.1]),
    "relu_t0.5": ([0.0, inf, 0.0], [0.0, 1.0, 0.0]),
    "relu_t-0.5": ([0.0, inf, 0.0], [0.0, 1.0, 0.0]),
    "relu_a0.2_t1_max3": ([nan, 3.0, -inf], [0.0, 0.0, 0.2]),
    "relu_a0.2_t-1_max4": ([nan, 4.0, -inf], [0.0, 0.0, 0.2]),
    "sigmoid": ([nan, 1.0, 0.0], [nan, 0.0, 0.0]),
    "hard_sigmoid": ([nan, 1.0, 0.0], [0.0, 0.0, 0.0]),
    "hard_sigmoid_k2": ([nan, 1.0, 0.0], [0.0, 0.0, 0.0]),
    "hard_swish": ([nan, inf, nan], [nan, nan, nan]),
    "swish": ([nan, inf, nan], [nan, nan, nan]),
    "gelu": ([nan, inf, nan], [nan, nan, nan]),
    "gelu_tanh": ([nan, inf, nan], [nan, nan, nan]),
    "elu": ([nan, inf, -1.0], [1.0, 1.0, 0.0]),
    "elu_a0.5": ([nan, inf, -0.5], [0.5, 1.0, 0.0]),
    "selu": ([nan, inf, -1.7580993], [1.050701, 1.050701, 0.0]),
    "softplus": ([nan, inf, 0.0], [nan, 1.0, 0.0]),
    "softsign": ([nan, nan, nan], [nan, 0.0, 0.0]),
    "leaky_relu": ([nan, inf, -inf], [0.3, 1.0, 0.3]),
    "tanh": ([nan, 1.0, -1.0], [nan, 0.0, 0.0]),
    "exponential": ([nan, inf, 0.0], [nan, inf, 0.0]),
    "mish": ([nan, inf, nan], [nan, nan, nan]),
    "log_sigmoid": ([nan, -0.0, -inf], [nan, 0.0, 1.0]),
}
X_GRID = np.array([nan, -inf, -7, -3, -1, -0.5, -0.0, 0, 0.5, 1, 2.5, 3, 4, 6, 7, inf], np.float32)
# TF: id -> dx at X_GRID with dy = NaN (N: NaN, 0: zero).  NaN where TF multiplies dy by a
# mask or a derivative (ReluGrad, Relu6Grad, every smooth activation), 0 where it selects
# (tf.where of relu's threshold, clip_by_value's gradient above max_value and in Keras 2's
# hard_sigmoid).  Unlisted ids: NaN everywhere.
TF_NAN_DY = {
    "relu_max2.5": "0NNNNNNNNNN00000",
    "relu_t0.5": "000000000NNNNNNN",
    "relu_t-0.5": "000000NNNNNNNNNN",
    "hard_sigmoid_k2": "0000NNNNNNN00000",
}


def _act(vid):
    name, params = ACT_VARIANTS[vid]
    return CODES[name], params


def _act_row(code, params):
    return (code, params.get("alpha", 0.0), params.get("max_value", inf),
            params.get("threshold", 0.0))


def _forward(vid, x):
    code, params = _act(vid)
    y = np.full_like(x, 7.0)
    K.activation(x, y, code, **params)
    got = run_row("activation", {"x0": x}, {"y": x.shape}, (x.size,), act=_act_row(code, params))
    assert np.array_equal(got["y"], y, equal_nan=True), f"{vid}: runner row differs"
    return y


def _backward(vid, x, dy, y="forward"):
    code, params = _act(vid)
    if isinstance(y, str):
        y = _forward(vid, x)
    dx = np.full_like(x, 7.0)
    K.activation_grad(dy, x, y, dx, code, **params)
    inputs = {"x0": x, "x1": dy} if y is None else {"x0": x, "x1": dy, "x2": y}
    got = run_row("activation_backward", inputs, {"y": x.shape}, (x.size,),
                  act=_act_row(code, params))
    assert np.array_equal(got["y"], dx, equal_nan=True), f"{vid}: runner row differs"
    return dx


@pytest.mark.parametrize("vid", list(ACT_VARIANTS))
def test_activation_nan_and_inf_follow_tensorflow(vid):
    y_tf, dx_tf = TF_SPECIAL[vid]
    assert_nan_like(_forward(vid, X_SPECIAL), y_tf, f"{vid} forward", rtol=1e-6)
    # selu'(-inf): TF adds activations + scale * alpha in float32 (exactly 0), we in
    # double (2.3e-8 from the float rounding of y).
    for y in ("forward", None):                  # y given, or recomputed by the kernel
        dx = _backward(vid, X_SPECIAL, np.ones(3, np.float32), y)
        assert_nan_like(dx, dx_tf, f"{vid} backward, y {y}", rtol=1e-6, atol=3e-8)
        dx = _backward(vid, X_GRID, np.full(X_GRID.size, nan, np.float32), y)
        want = TF_NAN_DY.get(vid, "N" * X_GRID.size)
        assert "".join("N" if np.isnan(v) else ("0" if v == 0 else "?") for v in dx) == want, vid


@pytest.mark.parametrize("vid", list(ACT_VARIANTS))
def test_activation_nan_stays_in_place(vid):
    """NaN at chosen positions of a buffer with vector tails (67 floats): the forward is NaN
    exactly there (0 for relu's threshold, TF's where), the other elements are those of the
    NaN-free run; a NaN dy is NaN or 0 exactly there, as TF_NAN_DY says at that x."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(67) * 4).astype(np.float32)
    clean = _forward(vid, x)
    at = [0, 5, 31, 64, 66]
    xn = x.copy()
    xn[at] = nan
    y = _forward(vid, xn)
    others = np.setdiff1d(np.arange(x.size), at)
    assert np.array_equal(y[others], clean[others]), vid
    nan_y = TF_SPECIAL[vid][0][0]
    assert (np.isnan(y[at]) if math.isnan(nan_y) else y[at] == nan_y).all(), (vid, y[at])
    dy = rng.standard_normal(x.size).astype(np.float32)
    clean_dx = _backward(vid, x, dy)
    dyn = dy.copy()
    dyn[at] = nan
    dx = _backward(vid, x, dyn)
    assert np.array_equal(dx[others], clean_dx[others]), vid
    # each NaN dy as the kernel gives it for that x alone (TF's rule: X_GRID above)
    ref = _backward(vid, x[at], np.full(len(at), nan, np.float32))
    assert np.array_equal(dx[at], ref, equal_nan=True), vid


# --- fused activation clamps: GEMM epilogue (every ISA), conv2d, dwconv2d ------------------

FUSED = {"linear": {}, "relu": {}, "relu6": dict(max_value=6.0), "relu_max2.5": dict(max_value=2.5),
         "hard_swish": {}}


def _fused(name):
    params = FUSED[name]
    code = CODES["hard_swish" if name == "hard_swish" else ("linear" if name == "linear" else "relu")]
    return code, params, ("hard_swish" if name == "hard_swish" else
                          "linear" if name == "linear" else "relu")


def _pack_gemm(b_kn, bias):
    bp = np.empty(K.gemm_packed_size(*b_kn.shape), np.float32)
    K.gemm_pack_b(b_kn, bp)
    biasp = np.empty(K.gemm_packed_bias_size(b_kn.shape[1]), np.float32)
    K.gemm_pack_bias(bias, biasp)
    return bp, biasp


@pytest.mark.parametrize("act", list(FUSED))
def test_gemm_fused_activation_keeps_nan(gemm_isa, act):
    """Rows of A holding a NaN, +inf or -inf, among them the last row of a partial MR tile
    and rows of a partial NR panel: C is NaN / clamped exactly as the float64 reference
    with the activation (np.maximum / np.clip keep NaN, as TF's Relu / Relu6 / clip), and
    every other row is bit for bit the NaN-free result (rows past mr alias row mr-1)."""
    _, mr, nr = gemm_isa
    code, params, ref_name = _fused(act)
    m, n, k = 2 * mr + 3, nr + 5, 7
    rng = np.random.default_rng(3)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    bp, biasp = _pack_gemm(b, bias)
    clean = np.empty((m, n), np.float32)
    K.gemm(a, bp, n, clean, bias_packed=biasp, act=code, **params)
    an = a.copy()
    special = {1: (2, nan), mr - 1: (0, inf), mr: (6, -inf), m - 1: (3, nan), m - 2: (4, inf)}
    for r, (col, v) in special.items():
        an[r, col] = v
    c = np.empty((m, n), np.float32)
    K.gemm(an, bp, n, c, bias_packed=biasp, act=code, **params)
    ref = ref_activation(an.astype(np.float64) @ b + bias, ref_name, **params)
    assert_nan_like(c, ref, f"gemm {gemm_isa[0]} {act}", rtol=1e-5, atol=1e-5)
    assert np.isnan(c[[1, m - 1]]).all()
    others = np.setdiff1d(np.arange(m), list(special))
    assert np.array_equal(c[others], clean[others])
    got = run_row("gemm", {"x0": an, "w": bp, "b": biasp}, {"y": (m, n)}, (m, n, k),
                  act=_act_row(code, params))
    assert np.array_equal(got["y"], c, equal_nan=True)


# (kernel, strides, groups): the pointwise path (GEMM on NHWC directly), im2col with 'same'
# padding and stride 2, and a grouped convolution (a NaN input channel reaches only its
# group's filters).
CONV_CASES = [(1, 1, 1), (3, 2, 1), (3, 1, 2)]


def _conv_nan_case(kernel, stride, groups, act, rng):
    n, h, w, cin, cout = 3, 9, 8, 4, 6
    x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
    wt = rng.standard_normal((kernel, kernel, cin // groups, cout)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    pads = same_pads(h, kernel, stride) + same_pads(w, kernel, stride)
    geom = dict(strides=(stride, stride), pads=pads, groups=groups)
    wsize, bsize = K.conv2d_packed_sizes(kernel, kernel, cin // groups, cout, groups)
    wp, bp = np.empty(wsize, np.float32), np.empty(bsize, np.float32)
    K.conv2d_pack_weights(wt, groups, wp)
    K.conv2d_pack_bias(bias, groups, bp)
    scratch = np.empty(max(K.conv2d_scratch_size(x.shape, wt.shape, **geom), 1), np.float32)
    code, params, ref_name = _fused(act)

    def run(xx):
        oh, ow = K.conv2d_output_hw(h, w, kernel, kernel, geom["strides"], (1, 1), pads)
        y = np.empty((n, oh, ow, cout), np.float32)
        K.conv2d(xx, wt.shape, wp, y, scratch, bias_packed=bp, act=code, **geom, **params)
        return y

    ref = lambda xx: ref_conv2d(xx, wt, bias, act=ref_name, **geom, **params)
    return x, run, ref, (wp, bp, scratch, wt.shape, geom, code, params)


@pytest.mark.parametrize("act", ["relu6", "relu", "hard_swish"])
@pytest.mark.parametrize("kernel, stride, groups", CONV_CASES, ids=lambda v: str(v))
def test_conv2d_nan_stays_in_its_image_and_window(gemm_isa, kernel, stride, groups, act):
    rng = np.random.default_rng(kernel * 10 + stride + groups)
    x, run, ref, extra = _conv_nan_case(kernel, stride, groups, act, rng)
    clean = run(x)
    xn = x.copy()
    xn[1, 4, 3, 0] = nan           # group 0's first channel
    xn[1, 0, 7, 3] = -inf          # a corner; the last group's channel
    y = run(xn)
    assert np.array_equal(y[[0, 2]], clean[[0, 2]]), "a NaN in image 1 reached another image"
    assert_nan_like(y[1], ref(xn[1:2])[0], f"conv2d {gemm_isa[0]} {act}", rtol=1e-4, atol=1e-4)
    wp, bp, scratch, w_shape, geom, code, params = extra
    n, h, w, c = x.shape
    oh, ow, co = y.shape[1:]
    ints = (n, h, w, c, kernel, kernel, stride, stride, 1, 1, geom["pads"][0], geom["pads"][2],
            oh, ow, co, groups)
    got = run_row("conv2d", {"x0": xn, "w": wp, "b": bp, "scratch": scratch}, {"y": y.shape},
                  ints, act=_act_row(code, params))
    assert np.array_equal(got["y"], y, equal_nan=True)


@pytest.mark.parametrize("act", ["relu6", "relu", "linear", "hard_swish"])
@pytest.mark.parametrize("m", [1, 2])
def test_dwconv2d_nan_stays_in_its_image_window_and_channel(act, m):
    """The fused clamp (_clamp_inplace) and the epilogue activation, M = 1 (register-blocked
    channels, 19 = one block and a tail) and M = 2: a NaN pixel of one channel reaches only
    that channel's outputs (c*M .. c*M + M-1) within its window, in its image."""
    rng = np.random.default_rng(50 + m)
    n, h, w, c = 3, 10, 9, 19
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((3, 3, c, m)).astype(np.float32)
    bias = rng.standard_normal(c * m).astype(np.float32)
    pads = same_pads(h, 3, 2) + same_pads(w, 3, 2)
    code, params, ref_name = _fused(act)

    def run(xx):
        y = np.empty((n, 5, 5, c * m), np.float32)
        K.dwconv2d(xx, wt, y, strides=(2, 2), pads=pads, bias=bias, act=code, **params)
        return y

    clean = run(x)
    xn = x.copy()
    xn[1, 3, 4, 17] = nan          # the channel tail past the 16-channel block
    xn[1, 9, 0, 2] = inf
    y = run(xn)
    assert np.array_equal(y[[0, 2]], clean[[0, 2]])
    ref = ref_dwconv2d(xn[1:2], wt, bias, strides=(2, 2), pads=pads, act=ref_name, **params)[0]
    assert_nan_like(y[1], ref, f"dwconv2d {act} M={m}", rtol=1e-4, atol=1e-4)
    touched = np.zeros(c * m, bool)
    touched[17 * m:18 * m] = touched[2 * m:3 * m] = True
    assert not np.isnan(y[..., ~touched]).any()
    assert np.array_equal(y[..., ~touched], clean[..., ~touched])
    ints = (n, h, w, c, 3, 3, 2, 2, 1, 1, pads[0], pads[2], 5, 5, m)
    got = run_row("dwconv2d", {"x0": xn, "w": wt, "b": bias}, {"y": y.shape}, ints,
                  act=_act_row(code, params))
    assert np.array_equal(got["y"], y, equal_nan=True)


# --- pooling ---------------------------------------------------------------------------------

FLT_LOWEST = float(np.finfo(np.float32).min)
# TF's MaxPool / MaxPoolGrad on one 4x4 channel holding NaN first, last and inside a window
# and a -inf (tf.nn.max_pool2d 2x2 'VALID'; keras.layers.MaxPooling2D(3, 2, "same"), pads
# (0, 1, 0, 1)), dy = 1: a NaN cell never wins the forward, but the backward's argmax scan
# starts at the window's first cell and keeps it when it is NaN.
POOL_X = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
POOL_X[0, 0, 0] = POOL_X[0, 1, 3] = POOL_X[0, 2, 1] = nan
POOL_X[0, 3, 3] = -inf
TF_MAXPOOL = {  # (pool, strides, pads): (y, dx)
    ((2, 2), (2, 2), (0, 0, 0, 0)): ([[5, 6], [13, 14]],
                                     [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 0]]),
    ((3, 3), (2, 2), (0, 1, 0, 1)): ([[10, 11], [14, 14]],
                                     [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 2, 0]]),
}
# and on 4x4x3, NaN everywhere but x[2:, 2:, :2] = 1 and channel 2 = -inf (its (0, 0) NaN):
# windows of only NaN and -inf give -FLT_MAX (TF starts from the lowest float), and every
# window's gradient goes to its first cell.
POOL_X2 = np.full((1, 4, 4, 3), nan, np.float32)
POOL_X2[0, 2:, 2:, :] = 1
POOL_X2[..., 2] = -inf
POOL_X2[0, 0, 0, 2] = nan
L = FLT_LOWEST
TF_MAXPOOL2 = {
    ((2, 2), (2, 2), (0, 0, 0, 0)): ([[[L, L, L], [L, L, L]], [[L, L, L], [1, 1, L]]],
                                     [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]),
    ((3, 3), (2, 2), (0, 1, 0, 1)): ([[[1, 1, L], [1, 1, L]], [[1, 1, L], [1, 1, L]]],
                                     [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]),
}
# TF's MaxPoolGrad with dy NaN at output (0, 0), finite x = arange(16): only that window's
# argmax gets it.
TF_MAXPOOL_NAN_DY = [[0, 0, 0, 0], [0, nan, 0, 1], [0, 0, 0, 0], [0, 1, 0, 1]]


def _pool_ints(x, pool, strides, pads):
    n, h, w, c = x.shape
    oh = (h + pads[0] + pads[1] - pool[0]) // strides[0] + 1
    ow = (w + pads[2] + pads[3] - pool[1]) // strides[1] + 1
    return (n, h, w, c, *pool, *strides, pads[0], pads[2], oh, ow), (n, oh, ow, c)


def _maxpool(x, pool, strides, pads, dy=None):
    ints, yshape = _pool_ints(x, pool, strides, pads)
    y = np.empty(yshape, np.float32)
    K.maxpool2d(x, y, pool, strides, pads)
    assert np.array_equal(run_row("maxpool2d", {"x0": x}, {"y": yshape}, ints)["y"], y,
                          equal_nan=True)
    dy = np.ones(yshape, np.float32) if dy is None else dy
    dx = np.empty_like(x)
    K.maxpool2d_grad(x, dy, dx, pool, strides, pads)
    got = run_row("maxpool2d_backward", {"x0": x, "x1": dy}, {"y": x.shape}, ints)
    assert np.array_equal(got["y"], dx, equal_nan=True)
    return y, dx


@pytest.mark.parametrize("case", list(TF_MAXPOOL), ids=str)
def test_maxpool_nan_and_inf_follow_tensorflow(case):
    y, dx = _maxpool(POOL_X, *case)
    assert np.array_equal(y[0, ..., 0], TF_MAXPOOL[case][0]) and np.array_equal(dx[0, ..., 0], TF_MAXPOOL[case][1])
    y, dx = _maxpool(POOL_X2, *case)
    assert np.array_equal(y[0], TF_MAXPOOL2[case][0])
    for ch in range(3):
        assert np.array_equal(dx[0, ..., ch], TF_MAXPOOL2[case][1]), ch
    dy = np.ones((1, 2, 2, 1), np.float32)
    dy[0, 0, 0] = nan
    _, dx = _maxpool(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1), (2, 2), (2, 2),
                     (0, 0, 0, 0), dy)
    assert np.array_equal(dx[0, ..., 0], TF_MAXPOOL_NAN_DY, equal_nan=True)


@pytest.mark.parametrize("pool, strides, pads", [((2, 2), (2, 2), (0, 0, 0, 0)),
                                                 ((3, 3), (2, 2), (1, 1, 1, 1)),
                                                 ((3, 3), (1, 1), (1, 1, 1, 1))], ids=str)
def test_pooling_nan_rules_on_many_channels(pool, strides, pads):
    """19 channels (vector loops and a tail), NaN and -inf sprinkled over image 0 of 2:
    max and average pooling, forward and backward, against the references with TF's NaN
    rules; image 1 is untouched, bit for bit."""
    from reference import pooling as ref
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 9, 8, 19)).astype(np.float32)
    xn = x.copy()
    spots = rng.random(xn[0].shape) < 0.2
    xn[0][spots] = nan
    xn[0][rng.random(xn[0].shape) < 0.05] = -inf
    xn[0, :3, :3, 5] = nan                       # some windows of NaN only
    _, yshape = _pool_ints(x, pool, strides, pads)
    dy = rng.standard_normal(yshape).astype(np.float32)
    dy[0, 1, 1, 7] = nan
    y, dx = _maxpool(xn, pool, strides, pads, dy)
    y1, dx1 = _maxpool(x, pool, strides, pads, dy)
    assert np.array_equal(y[1], y1[1]) and np.array_equal(dx[1], dx1[1])
    assert np.array_equal(y, ref.pool2d(xn, pool, strides, pads, "max").astype(np.float32))
    assert not np.isnan(y).any() and (y[0, 0, 0, 5] == FLT_LOWEST)
    assert_nan_like(dx, ref.pool2d_backward(xn, dy, pool, strides, pads, "max"), "maxpool dx",
                    rtol=1e-5, atol=1e-6)
    ya = np.empty(yshape, np.float32)
    K.avgpool2d(xn, ya, pool, strides, pads)
    assert_nan_like(ya, ref.pool2d(xn, pool, strides, pads, "avg"), "avgpool", 1e-5, 1e-6)
    assert not np.isnan(ya[1]).any()
    dxa = np.empty_like(x)
    K.avgpool2d_grad(dy, dxa, pool, strides, pads)       # never reads x (TF's neither)
    assert_nan_like(dxa, ref.pool2d_backward(xn, dy, pool, strides, pads, "avg"), "avg dx",
                    1e-5, 1e-6)


# TF (keras.layers.GlobalMaxPooling2D, i.e. reduce_max, and its gradient (x == max) / count
# * dy), on x (1, 2, 1, 3) = [[1, -inf, 2], [nan, -inf, 2]] with dy = 1, then on
# [[1, -inf, 2], [3, -inf, 2]] with dy = [nan, nan, 1]:
TF_GLOBAL_MAX = [
    ([[1, -inf, 2], [nan, -inf, 2]], [1, 1, 1], [nan, -inf, 2], [[nan, .5, .5], [nan, .5, .5]]),
    ([[1, -inf, 2], [3, -inf, 2]], [nan, nan, 1], [3, -inf, 2], [[nan, nan, .5], [nan, nan, .5]]),
]


def _global_max(x, dy):
    n, h, w, c = x.shape
    y = np.empty((n, c), np.float32)
    K.global_maxpool(x, y)
    assert np.array_equal(run_row("global_maxpool", {"x0": x}, {"y": y.shape}, (n, h * w, c))["y"],
                          y, equal_nan=True)
    dx = np.empty_like(x)
    K.global_maxpool_grad(x, dy, dx)
    got = run_row("global_maxpool_backward", {"x0": x, "x1": dy}, {"y": x.shape}, (n, h * w, c))
    assert np.array_equal(got["y"], dx, equal_nan=True)
    return y, dx


@pytest.mark.parametrize("case", range(len(TF_GLOBAL_MAX)))
def test_global_pooling_nan_follows_tensorflow(case):
    x, dy, y_tf, dx_tf = TF_GLOBAL_MAX[case]
    y, dx = _global_max(np.array(x, np.float32).reshape(1, 2, 1, 3),
                        np.array([dy], np.float32))
    assert np.array_equal(y[0], y_tf, equal_nan=True)
    assert np.array_equal(dx.reshape(2, 3), dx_tf, equal_nan=True)


def test_global_pooling_nan_stays_in_its_image_and_channel():
    """300 channels (two blocks of the backward), NaN in three channels of image 1 of 3, at
    the first pixel and later: max and average are NaN in that channel of that image only,
    and so are their gradients (max: 0 / 0 over the channel; average: dy / hw never reads
    x); a NaN dy stays in its (image, channel)."""
    from reference import pooling as ref
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 5, 4, 300)).astype(np.float32)
    x[1, 0, 0, 7] = nan                          # the first pixel: read by the initial copy
    x[1, 3, 2, 280] = nan                        # pixel 14: inside a four-pixel pass
    x[1, 4, 2, 100] = nan                        # pixel 18: past the last four-pixel pass
    dy = rng.standard_normal((3, 300)).astype(np.float32)
    dy[2, 11] = nan
    y, dx = _global_max(x, dy)
    nan_x = np.zeros((3, 300), bool)
    nan_x[1, [7, 100, 280]] = True
    assert np.array_equal(np.isnan(y), nan_x)
    assert_nan_like(y, ref.global_pool(x, "max"), "global max")
    assert_nan_like(dx, ref.global_pool_backward(x, dy, "max"), "global max dx")
    assert np.array_equal(np.isnan(dx).any(axis=(1, 2)), nan_x | np.isnan(dy))
    ya = np.empty((3, 300), np.float32)
    K.global_avgpool(x, ya)
    assert np.array_equal(np.isnan(ya), np.isnan(y))
    dxa = np.empty_like(x)
    K.global_avgpool_grad(dy, dxa)
    assert np.array_equal(np.isnan(dxa).any(axis=(1, 2)), np.isnan(dy))


# --- softmax -----------------------------------------------------------------------------------

# TF's Softmax with TF_ENABLE_ONEDNN_OPTS=0 (its Eigen kernel, the one TF runs on aarch64):
# a NaN or +inf logit, or a row of -inf only, makes the whole row NaN; a -inf among finite
# logits is an exact 0.  (x86 TF's default oneDNN softmax gives NaN at the NaN / +inf
# positions and 0 at the others of such a row: we follow the portable kernel.)
TF_SOFTMAX = [
    ([nan, 1, 2], [nan, nan, nan]), ([1, nan, 2], [nan, nan, nan]),
    ([inf, 1, 2], [nan, nan, nan]), ([inf, -inf, 1], [nan, nan, nan]),
    ([-inf, -inf, -inf], [nan, nan, nan]), ([5, -inf, 1], [0.98201376, 0.0, 0.01798621]),
]
# and its gradient (dy = [1, 2, 3]) at [5, -inf, 1]: [-0.035325348, 0, 0.035325415]; with a
# NaN dy the row is NaN.
TF_SOFTMAX_GRAD = [-0.035325348, 0.0, 0.035325415]


def _softmax(x, dy):
    y = np.empty_like(x)
    K.softmax(x, y)
    assert np.array_equal(run_row("softmax", {"x0": x}, {"y": x.shape}, x.shape)["y"], y,
                          equal_nan=True)
    dx = np.empty_like(x)
    K.softmax_grad(dy, y, dx)
    got = run_row("softmax_backward", {"x1": dy, "x2": y}, {"y": x.shape}, x.shape)
    assert np.array_equal(got["y"], dx, equal_nan=True)
    return y, dx


def test_softmax_nan_follows_tensorflow():
    x = np.array([row for row, _ in TF_SOFTMAX], np.float32)[:, :, None]
    dy = np.tile(np.array([1, 2, 3], np.float32), (len(TF_SOFTMAX), 1))[:, :, None]
    for inner in (1, 2):                 # the row path and the strided (lanes) path
        xi = np.ascontiguousarray(np.repeat(x, inner, axis=2))
        y, dx = _softmax(xi, np.ascontiguousarray(np.repeat(dy, inner, axis=2)))
        for r, (_, want) in enumerate(TF_SOFTMAX):
            assert_nan_like(y[r, :, inner - 1], want, f"softmax row {r} inner {inner}", 1e-6)
            if r < 5:
                assert np.isnan(dx[r]).all()
        assert_nan_like(dx[5, :, 0], TF_SOFTMAX_GRAD, "softmax grad", 1e-5)


@pytest.mark.parametrize("shape", [(7, 19, 1), (3, 7, 70)], ids=["rows", "lanes"])
def test_softmax_nan_stays_in_its_slice(shape):
    """A NaN x (at the first, a middle and a tail position) or a NaN dy makes its own
    slice NaN and nothing else: other slices are bit for bit the NaN-free results."""
    rng = np.random.default_rng(12)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y0, dx0 = _softmax(x, dy)
    xn, dyn = x.copy(), dy.copy()
    xn[1, 0, -1] = xn[2, 3, 0] = nan
    xn[0, -1, 0] = inf
    dyn[-1, 2, -1] = nan
    y, dx = _softmax(xn, dyn)
    slices = np.zeros((shape[0], shape[2]), bool)
    slices[1, -1] = slices[2, 0] = slices[0, 0] = True
    assert np.array_equal(np.isnan(y).all(axis=1), slices)
    assert np.array_equal(np.isnan(y).any(axis=1), slices)
    assert np.array_equal(np.where(slices[:, None, :], 0, y), np.where(slices[:, None, :], 0, y0))
    slices[-1, -1] = True
    assert np.array_equal(np.isnan(dx).all(axis=1), slices)
    assert np.array_equal(np.isnan(dx).any(axis=1), slices)
    assert np.array_equal(np.where(slices[:, None, :], 0, dx), np.where(slices[:, None, :], 0, dx0))


# --- elementwise: broadcasting binary ops, PReLU, affine; dropout ------------------------------

# TF's Maximum / Minimum (tf.maximum, keras.layers.Maximum and Minimum alike) propagate a NaN
# from either operand: a = [nan, 1, nan, inf, -inf, 2], b = [1, nan, nan, nan, nan, 3].
TF_MAX_MIN = {"maximum": [nan, nan, nan, nan, nan, 3], "minimum": [nan, nan, nan, nan, nan, 2]}
# Keras 3 PReLU(alpha=0.25) on [nan, inf, -inf, -1]: y, and dx with dy = 1.
TF_PRELU = ([nan, inf, -inf, -0.25], [0, 1, 0.25, 0.25])
_NUMPY_OPS = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply,
              "divide": np.divide, "maximum": np.maximum, "minimum": np.minimum}


def _binary(a, b, op, shape, sa, sb):
    y = np.empty(int(np.prod(shape)), np.float32)
    K.binary(a, b, y, K.BINARY_OPS[op], shape, sa, sb)
    rank = len(shape)
    got = run_row("binary", {"x0": a, "x1": b}, {"y": y.shape},
                  (K.BINARY_OPS[op], rank, *shape, *sa, *sb))
    assert np.array_equal(got["y"], y, equal_nan=True)
    return y.reshape(shape)


@pytest.mark.parametrize("op", list(TF_MAX_MIN))
def test_maximum_minimum_nan_follow_tensorflow(op):
    a = np.array([nan, 1, nan, inf, -inf, 2], np.float32)
    b = np.array([1, nan, nan, nan, nan, 3], np.float32)
    assert np.array_equal(_binary(a, b, op, (6,), (1,), (1,)), TF_MAX_MIN[op], equal_nan=True)


# (layout, a's shape, b's shape): the row loops (vector-vector, vector-scalar and
# scalar-vector) and the strided scalar loop (a transposed).
LAYOUTS = [("vv", (3, 19), (3, 19)), ("vs", (3, 19), (3, 1)), ("sv", (3, 1), (3, 19)),
           ("strided", (19, 3), (3, 19))]


@pytest.mark.parametrize("layout, a_shape, b_shape", LAYOUTS, ids=[v[0] for v in LAYOUTS])
@pytest.mark.parametrize("op", list(_NUMPY_OPS))
def test_binary_nan_from_either_operand(op, layout, a_shape, b_shape):
    rng = np.random.default_rng(13)
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32) + 3
    a.flat[[0, a.size // 2, a.size - 1]] = nan
    b.flat[[1, b.size - 1]] = nan
    a_view = a.T if layout == "strided" else a
    shape = (3, 19)
    sa = tuple(s // 4 for s in np.broadcast_to(a_view, shape).strides)
    sb = tuple(s // 4 for s in np.broadcast_to(b, shape).strides)
    y = _binary(a.ravel(), b.ravel(), op, shape, sa, sb)
    want = _NUMPY_OPS[op](a_view.astype(np.float64), b.astype(np.float64))
    assert_nan_like(y, np.broadcast_to(want, shape), f"{op} {layout}", rtol=1e-6)


def test_prelu_and_affine_nan():
    x = np.array([nan, inf, -inf, -1], np.float32)
    alpha = np.full(4, 0.25, np.float32)
    y = np.empty_like(x)
    K.prelu(x, alpha, y, (4,), (1,))
    assert np.array_equal(y, TF_PRELU[0], equal_nan=True)
    got = run_row("prelu", {"x0": x, "w": alpha}, {"y": x.shape}, (1, 4, 1, 4, 1))
    assert np.array_equal(got["y"], y, equal_nan=True)
    dx, dalpha = np.empty_like(x), np.empty_like(alpha)
    K.prelu_grad(x, alpha, np.ones_like(x), dx, dalpha, (4,), (1,))
    assert np.array_equal(dx, TF_PRELU[1])
    # per-channel affine (BatchNorm that could not be folded) and scale: element by element
    rng = np.random.default_rng(14)
    x = rng.standard_normal((5, 19)).astype(np.float32)
    x[2, 17] = nan
    scale, shift = rng.standard_normal(19).astype(np.float32), rng.standard_normal(19).astype(np.float32)
    y = np.empty_like(x)
    K.channel_affine(x, scale, shift, y)
    assert np.array_equal(np.isnan(y), np.isnan(x))
    dy = x.copy()
    K.channel_affine_grad(dy, scale, y)
    assert np.array_equal(np.isnan(y), np.isnan(x))
    K.scale(x.ravel(), y.ravel(), 0.0)                 # NaN * 0 is NaN, as TF's Mul
    assert np.array_equal(np.isnan(y), np.isnan(x))


def test_dropout_zeroes_nan_where_it_drops():
    """TF's tf.nn.experimental.stateless_dropout (Keras 3's Dropout) on an all-NaN x gave
    NaN where kept and 0 where dropped (where(keep, x * scale, 0)), and with dy = NaN its
    gradient likewise: a dropped NaN must not leak through as NaN * 0."""
    n = 203
    x = np.full(n, nan, np.float32)
    x[::10] = inf
    y, mask = np.empty_like(x), np.empty_like(x)
    K.dropout(x, y, mask, 0.5, np.array([42], np.uint64))
    kept = mask != 0
    assert 0 < kept.sum() < n
    assert (y[~kept] == 0).all() and np.array_equal(y[kept], x[kept], equal_nan=True)
    got = run_row("dropout_forward", {"x0": x}, {"y": (n,), "y2": (n,)}, (n, 42), (0.5,))
    assert np.array_equal(got["y"], y, equal_nan=True) and np.array_equal(got["y2"], mask)
    dy = np.full(n, nan, np.float32)
    dx = np.empty_like(dy)
    K.dropout_grad(dy, mask, dx)
    assert (dx[~kept] == 0).all() and np.isnan(dx[kept]).all()
    got = run_row("dropout_backward", {"x0": mask, "x1": dy}, {"y": (n,)}, (n,))
    assert np.array_equal(got["y"], dx, equal_nan=True)


# --- normalization: LayerNormalization, BatchNormalization (inference and training) -----------

def _mask(a):
    return "".join("N" if np.isnan(v) else "." for v in np.ravel(a))


# TF / Keras 3 (layer(x) under tf.GradientTape, gamma and beta trainable) on x (3, 4) with x[1, 2]
# = NaN and dy = 1, then on a finite x with dy[1, 2] = NaN: NaN masks of y, dx, dgamma, dbeta
# (N: NaN), row-major.  LayerNormalization: the row; BatchNormalization in inference: the
# element (dx = dy * inv_std * gamma never reads x); in training: the channel, whose moving
# statistics also become NaN.
TF_NORM = {
    "layer": {"x": ("....NNNN....", "....NNNN....", "NNNN", "...."),
              "dy": ("............", "....NNNN....", "..N.", "..N.")},
    "layer_rms_scaling": {"x": ("....NNNN....", "....NNNN....", "NNNN", None),
                          "dy": ("............", "....NNNN....", "..N.", None)},
    "bn_inference": {"x": ("......N.....", "............", "..N.", "...."),
                     "dy": ("............", "......N.....", "..N.", "..N.")},
    "bn_train": {"x": ("..N...N...N.", "..N...N...N.", "..N.", "...."),
                 "dy": ("............", "..N...N...N.", "..N.", "..N.")},
}


def _norm(kind, x, dy):
    rows, c = x.shape
    rng = np.random.default_rng(15)
    gamma = rng.uniform(0.5, 2, c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)
    dgamma, dbeta = np.empty(c, np.float32), np.empty(c, np.float32)
    moving = np.concatenate([rng.standard_normal(c), rng.uniform(0.5, 2, c)]).astype(np.float32)
    if kind in ("layer", "layer_rms_scaling", "rms"):
        mode = K.NORM_MODES[kind]
        b = beta if kind == "layer" else None
        K.layernorm(x, y, gamma, b, 1e-3, mode)
        K.layernorm_grad(x, dy, gamma, dx, dgamma, dbeta if b is not None else None, 1e-3, mode)
        return y, dx, dgamma, (dbeta if b is not None else None), None
    if kind == "bn_inference":
        K.batchnorm_inference(x, moving, gamma, beta, y, 1e-3)
        K.batchnorm_inference_grad(x, dy, moving, gamma, dx, dgamma, dbeta, 1e-3)
        return y, dx, dgamma, dbeta, None
    saved = np.empty(2 * c, np.float32)
    K.batchnorm_train(x, moving, gamma, beta, y, saved, 0.99, 1e-3)
    K.batchnorm_train_grad(x, dy, saved, gamma, dx, dgamma, dbeta)
    return y, dx, dgamma, dbeta, moving


@pytest.mark.parametrize("kind", list(TF_NORM))
def test_normalization_nan_follows_tensorflow(kind):
    rng = np.random.default_rng(16)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    for case in ("x", "dy"):
        xx, dy = x.copy(), np.ones_like(x)
        (xx if case == "x" else dy)[1, 2] = nan
        y, dx, dgamma, dbeta, moving = _norm(kind, xx, dy)
        want = TF_NORM[kind][case]
        assert (_mask(y), _mask(dx), _mask(dgamma)) == want[:3], (kind, case)
        if want[3] is not None:
            assert _mask(dbeta) == want[3], (kind, case)
        if moving is not None:
            assert _mask(moving) == ("..N." * 2 if case == "x" else "." * 8)


@pytest.mark.parametrize("kind", ["layer", "layer_rms_scaling", "rms", "bn_inference", "bn_train"])
def test_normalization_nan_stays_in_its_row_or_channel(kind):
    """300 columns (more than one 256-column block: LayerNorm's backward then takes its
    unfused path, BatchNorm two channel blocks): the NaN reaches its row (LayerNorm), its
    element (BatchNorm inference) or its channel (training), and every other value is bit
    for bit the NaN-free run's."""
    rng = np.random.default_rng(17)
    x = rng.standard_normal((5, 300)).astype(np.float32)
    dy = rng.standard_normal((5, 300)).astype(np.float32)
    clean = _norm(kind, x, dy)
    xn = x.copy()
    xn[3, 270] = nan
    got = _norm(kind, xn, dy)
    if kind.startswith("bn"):
        touched = np.zeros((5, 300), bool)
        if kind == "bn_train":
            touched[:, 270] = True
        else:
            touched[3, 270] = True
    else:
        touched = np.zeros((5, 300), bool)
        touched[3] = True
    for name, g, c in zip(("y", "dx"), got[:2], clean[:2]):
        t = touched if name == "y" or kind != "bn_inference" else np.zeros_like(touched)
        assert np.array_equal(np.isnan(g), t), (kind, name)
        assert np.array_equal(g[~t], c[~t]), (kind, name)


# --- losses --------------------------------------------------------------------------------------

# TF / Keras 3 losses with reduction=None on logits z (rows [nan, 1, 2], [1, 2, 3],
# [inf, 1, 2], [-inf, 1, 2]), labels [1, 0, 1, 0] (one-hot for categorical), binary targets
# [[1, 0, 1], [0, nan, 1], [1, 1, 0], [0, 0, 1]] (BCE, MSE), and for cce_nan_target logits
# [1, 2, 3] on every row with the one-hot target's [1, 2] = NaN: (per-row loss, gradient of
# their sum, row-major).  A NaN or +inf logit makes its softmax row's loss and gradient
# NaN; a NaN target only its own gradient element and its row's loss.
LOSS_Z = np.array([[nan, 1, 2], [1, 2, 3], [inf, 1, 2], [-inf, 1, 2]], np.float32)
LOSS_LABELS = np.array([1, 0, 1, 0], np.int64)
LOSS_BINARY = np.array([[1, 0, 1], [0, nan, 1], [1, 1, 0], [0, 0, 1]], np.float32)
TF_LOSSES = {
    "sparse": ([nan, 2.4076059, nan, inf],
               [nan, nan, nan, -0.90996945, 0.24472848, 0.66524094, nan, nan, nan, -1.0,
                0.26894143, 0.7310586]),
    "cce": ([nan, 2.4076059, nan, inf],
            [nan, nan, nan, -0.90996945, 0.24472848, 0.66524094, nan, nan, nan, -1.0,
             0.26894143, 0.7310586]),
    "cce_nan_target": ([1.4076059, nan, 1.4076059, 2.4076059],
                       [0.090030573, -0.75527155, 0.66524094, -0.90996945, 0.24472848, nan,
                        0.090030573, -0.75527155, 0.66524094, -0.90996945, 0.24472848,
                        0.66524094]),
    "bce": ([nan, nan, nan, nan],
            [nan, 0.2436862, -0.039734304, 0.2436862, nan, -0.015808627, 0.0, -0.089647144,
             0.29359904, 0.0, 0.2436862, -0.039734304]),
    "mse": ([nan, nan, inf, inf],
            [nan, 0.6666667, 0.6666667, 0.6666667, nan, 1.3333334, inf, -0.0, 1.3333334, -inf,
             0.6666667, 0.6666667]),
}


@pytest.mark.parametrize("name", list(TF_LOSSES))
def test_losses_nan_and_inf_follow_tensorflow(name):
    loss, grad = np.empty(4, np.float32), np.empty((4, 3), np.float32)
    if name == "sparse":
        K.sparse_softmax_cross_entropy_loss(LOSS_Z, LOSS_LABELS, loss, grad)
    elif name == "cce":
        K.softmax_cross_entropy_loss(LOSS_Z, np.eye(3, dtype=np.float32)[LOSS_LABELS], loss, grad)
    elif name == "cce_nan_target":
        t = np.eye(3, dtype=np.float32)[LOSS_LABELS]
        t[1, 2] = nan
        K.softmax_cross_entropy_loss(np.repeat(LOSS_Z[1:2], 4, 0), t, loss, grad)
    elif name == "bce":
        K.sigmoid_binary_cross_entropy_loss(LOSS_Z, LOSS_BINARY, loss, grad)
    else:
        K.mean_squared_error_loss(LOSS_Z, LOSS_BINARY, loss, grad)
    assert_nan_like(loss, TF_LOSSES[name][0], f"{name} loss", rtol=1e-6)
    assert_nan_like(grad.ravel(), TF_LOSSES[name][1], f"{name} gradient", rtol=1e-6)


def test_losses_with_label_smoothing_keep_nan():
    t = np.eye(3, dtype=np.float32)[LOSS_LABELS]
    t[1, 2] = nan
    loss, grad = np.empty(4, np.float32), np.empty((4, 3), np.float32)
    K.softmax_cross_entropy_loss(np.repeat(LOSS_Z[1:2], 4, 0), t, loss, grad, 0.1)
    assert _mask(loss) == ".N.." and _mask(grad) == ".....N......"
    K.sigmoid_binary_cross_entropy_loss(np.ones((4, 3), np.float32), LOSS_BINARY, loss, grad, 0.1)
    assert _mask(loss) == ".N.." and _mask(grad) == "....N......."


# --- data movement and dense backward -----------------------------------------------------------

# TF (keras.layers.UpSampling2D((2, 3), interpolation="bilinear"), tf.GradientTape) on x
# (1, 4, 5, 2) with x[0, 1, 2, 0] = x[0, 3, 4, 1] = NaN: the output NaN rectangles per channel
# (rows, cols, inclusive); a NaN dy at [0, 3, 7, 0] gives dx NaN at (1, 2) and (2, 2) of
# channel 0 only (weights of 0 included: TF's lerp is a + (b - a) * w, NaN for a NaN b).
TF_BILINEAR_NAN = {0: ((1, 4), (5, 9)), 1: ((5, 7), (11, 14))}
TF_BILINEAR_GRAD_NAN = [(1, 2), (2, 2)]


def test_upsampling_nan_follows_tensorflow():
    rng = np.random.default_rng(18)
    x = rng.standard_normal((1, 4, 5, 2)).astype(np.float32)
    x[0, 1, 2, 0] = x[0, 3, 4, 1] = nan
    y = np.empty((1, 8, 15, 2), np.float32)
    K.upsample_bilinear(x, y)
    for ch, ((r0, r1), (c0, c1)) in TF_BILINEAR_NAN.items():
        want = np.zeros((8, 15), bool)
        want[r0:r1 + 1, c0:c1 + 1] = True
        assert np.array_equal(np.isnan(y[0, :, :, ch]), want), ch
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy[0, 3, 7, 0] = nan
    dx = np.empty_like(x)
    K.upsample_bilinear_grad(dy, dx)
    assert [tuple(p) for p in np.argwhere(np.isnan(dx[0, :, :, 0]))] == TF_BILINEAR_GRAD_NAN
    assert not np.isnan(dx[..., 1]).any()
    # nearest: a copy each way (the backward sums each block)
    yn = np.empty((1, 8, 15, 2), np.float32)
    K.upsample_nearest(x, yn, 2, 3)
    assert np.array_equal(np.isnan(yn), np.isnan(np.repeat(np.repeat(x, 2, 1), 3, 2)))
    K.upsample_nearest_grad(dy, dx, 2, 3)
    assert np.array_equal(np.argwhere(np.isnan(dx)), [[0, 1, 2, 0]])


def test_copies_move_nan_exactly():
    """ZeroPadding2D / Cropping2D, Concatenate (and its backward), Permute: NaN lands where
    its value lands, padding stays 0."""
    rng = np.random.default_rng(19)
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    x[1, 4, 0, 2] = nan
    y = np.empty((2, 8, 6, 3), np.float32)
    K.window_copy(x, y, 2, 1)
    want = np.pad(x, ((0, 0), (2, 1), (1, 1), (0, 0)))
    assert np.array_equal(y, want, equal_nan=True)
    yc = np.empty((2, 3, 2, 3), np.float32)
    K.window_copy(x, yc, -2, -2)
    assert np.array_equal(yc, x[:, 2:, 2:], equal_nan=True)
    cat = np.zeros(2 * 5 * 4 * 5, np.float32)
    K.concat(x.ravel(), cat, 2 * 5 * 4, 2)
    assert np.array_equal(cat.reshape(2, 5, 4, 5)[..., 2:], x, equal_nan=True)
    back = np.empty(x.size, np.float32)
    K.concat_grad(cat, back, 2 * 5 * 4, 2)
    assert np.array_equal(back.reshape(x.shape), x, equal_nan=True)
    t = np.empty(x.size, np.float32)
    K.transpose(x.ravel(), t, x.shape, (0, 3, 1, 2))
    assert np.array_equal(t.reshape(2, 3, 5, 4), x.transpose(0, 3, 1, 2), equal_nan=True)


def test_dense_grad_nan_stays_in_its_sample(gemm_isa):
    """dx = dy @ w^T, dw = x^T @ dy, db = sums of dy on the GEMM micro-kernels: a NaN dy of
    one sample makes that sample's dx row NaN, and dw / db NaN in its column only; a NaN x
    makes only its row of dw NaN.  Everything else is bit for bit the NaN-free result."""
    _, mr, nr = gemm_isa
    m, k, n = 2 * mr + 1, 13, nr + 3
    rng = np.random.default_rng(20)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    scratch = np.empty(max(K.dense_grad_scratch_size(m, k, n), 1), np.float32)

    def grads(xx, dyy):
        dx, dw, db = np.empty((m, k), np.float32), np.empty((k, n), np.float32), np.empty(n, np.float32)
        K.dense_grad(xx, w, dyy, dx, dw, db, scratch)
        return dx, dw, db

    dx0, dw0, db0 = grads(x, dy)
    dyn, xn = dy.copy(), x.copy()
    dyn[m - 1, 5] = nan                      # the last row: a partial MR tile
    xn[2, 7] = nan
    dx, dw, db = grads(xn, dyn)
    rows = np.arange(m) != m - 1
    assert np.isnan(dx[m - 1]).all() and np.array_equal(dx[rows], dx0[rows])
    assert np.array_equal(np.isnan(db), np.arange(n) == 5)
    want = np.zeros((k, n), bool)
    want[:, 5] = want[7, :] = True
    assert np.array_equal(np.isnan(dw), want) and np.array_equal(dw[~want], dw0[~want])
    assert np.array_equal(db[np.arange(n) != 5], db0[np.arange(n) != 5])


# --- end to end: a Keras-written MobileNetV2 -------------------------------------------------------

def _mobilenet():
    import edgecore as ec
    from fixtures import FIXTURES
    return ec, ec.load(FIXTURES / "mobilenet_v2.k3.h5")        # input (96, 96, 3), 10 logits


def test_mobilenet_v2_predicts_nan_for_a_nan_image_and_only_for_it():
    """Keras 3.15.1 (TF 2.21, oneDNN on or off) predicts NaN for all 10 outputs of an all-NaN
    image, and for a batch of 4 with one NaN pixel in image 2, NaN in row 2 only.  (Before
    the NaN-keeping clamps, relu6 turned the NaN into 0 and this model answered finitely.)"""
    _, model = _mobilenet()
    assert np.isnan(model.predict(np.full((1, 96, 96, 3), nan, np.float32))).all()
    rng = np.random.default_rng(21)
    x = rng.uniform(-1, 1, (4, 96, 96, 3)).astype(np.float32)
    clean = model.predict(x)
    x[2, 40, 50, 1] = nan
    got = model.predict(x)
    assert np.isnan(got[2]).all() and not np.isnan(clean).any()
    assert np.array_equal(got[[0, 1, 3]], clean[[0, 1, 3]])


def test_training_on_a_nan_sample_meets_a_nan_loss():
    """Keras 3.15.1's train_on_batch (SGD, mse) on this model with one NaN pixel in one of 4
    samples returns loss NaN (and NaN weights after the step).  The NaN must reach the loss,
    not be clamped away into a finite one; edgecore then refuses the step (the weights
    stay as they were: tests/test_nan_training.py)."""
    ec, model = _mobilenet()
    model.compile(optimizer=ec.optimizers.SGD(learning_rate=0.01), loss="mse")
    rng = np.random.default_rng(22)
    x = rng.uniform(-1, 1, (4, 96, 96, 3)).astype(np.float32)
    x[2, 10, 10, 0] = nan
    with pytest.raises(ec.NonFiniteLossError, match="nan"):
        model.train_on_batch(x, rng.standard_normal((4, 10)).astype(np.float32))
