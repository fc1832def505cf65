"""UpSampling2D backward, nearest (sum over each block) and bilinear (the transpose of the
forward, TF's half-pixel float32 coordinates): float64 references on odd sizes and channel
tails, the forward kernel's own matrix transposed, finite differences, TensorFlow's
recorded gradients, NaN propagation, the plan runner's rows, a second thread, bad shapes."""
import numpy as np
import pytest

from edgecore import _kernels as K
from oprow import run_row
from reference import layout as ref
from reference.check import assert_close, assert_same_in_thread, assert_unchanged, frozen
from reference.finite_diff import EPS32, directional, rounding_error

# (n, h, w, c, fh, fw): odd sizes, the 1x1 image, channels around the vector widths.
NEAREST = [(1, 9, 7, 13, 2, 2), (2, 18, 17, 3, 2, 2), (1, 1, 1, 1, 3, 2), (2, 9, 7, 16, 1, 3),
           (1, 9, 7, 17, 3, 1), (1, 7, 9, 4, 1, 1), (1, 3, 2, 8, 4, 4), (3, 2, 3, 1, 2, 3)]
# (n, h, w, c, oh, ow): UpSampling2D's integer factors, plus resizes the kernel also serves
# (identity, odd ratios, downscaling), where coordinates clamp at both borders.
BILINEAR = [(1, 9, 7, 13, 18, 14), (2, 18, 17, 3, 36, 34), (1, 9, 7, 16, 27, 21),
            (1, 1, 1, 1, 2, 3), (2, 1, 7, 4, 3, 14), (1, 5, 7, 8, 3, 4), (1, 6, 6, 17, 6, 6),
            (1, 2, 3, 1, 7, 9), (1, 4, 6, 3, 9, 13)]


def _nid(case):
    return "n{}_{}x{}_c{}_f{}x{}".format(*case)


def _bid(case):
    return "n{}_{}x{}_c{}_to{}x{}".format(*case)


def _dy(shape, seed):
    return frozen(np.random.default_rng(seed).standard_normal(shape))


def nearest_grad(dy, fh, fw):
    n, oh, ow, c = dy.shape
    dx = np.full((n, oh // fh, ow // fw, c), np.nan, np.float32)
    K.upsample_nearest_grad(dy, dx, fh, fw)
    return dx


def bilinear_grad(dy, h, w):
    dx = np.full((dy.shape[0], h, w, dy.shape[3]), np.nan, np.float32)
    K.upsample_bilinear_grad(dy, dx)
    return dx


def bilinear_rtol(h, w, oh, ow):
    """Float sums of up to 4 * (oh/h + 2) * (ow/w + 2) terms per pixel (the magnitude counts
    every weight as 1), plus the coordinates: an fma (aarch64) may round src = (o + 0.5) *
    scale - 0.5 once instead of twice, moving it, and a weight, by an ulp of the input
    size.  Measured on x86-64: at most 0.44 eps32 of the magnitude."""
    terms = 4 * (oh // h + 2) * (ow // w + 2)
    return (terms + 2 * max(h, w)) * EPS32


@pytest.mark.parametrize("case", NEAREST, ids=map(_nid, NEAREST))
def test_upsample_nearest_grad_matches_reference(case):
    n, h, w, c, fh, fw = case
    (dy,), copies = _dy((n, h * fh, w * fw, c), 51)
    dx = nearest_grad(dy, fh, fw)
    # fh*fw float additions per pixel.
    assert_close(dx, ref.upsample_nearest_backward(dy, fh, fw),
                 ref.upsample_nearest_backward(dy, fh, fw, magnitude=True),
                 rtol=fh * fw * EPS32, atol=0, what=f"upsample_nearest_grad {case}")
    assert_unchanged([dy], copies, "upsample_nearest_grad")


@pytest.mark.parametrize("case", BILINEAR, ids=map(_bid, BILINEAR))
def test_upsample_bilinear_grad_matches_reference(case):
    n, h, w, c, oh, ow = case
    (dy,), copies = _dy((n, oh, ow, c), 52)
    dx = bilinear_grad(dy, h, w)
    assert_close(dx, ref.upsample_bilinear_backward(dy, h, w),
                 ref.upsample_bilinear_backward(dy, h, w, magnitude=True),
                 rtol=bilinear_rtol(h, w, oh, ow), atol=0, what=f"upsample_bilinear_grad {case}")
    assert_unchanged([dy], copies, "upsample_bilinear_grad")


@pytest.mark.parametrize("case", [(3, 4, 6, 8), (3, 4, 9, 12), (4, 3, 3, 2), (1, 1, 2, 2),
                                  (2, 5, 7, 5)], ids=lambda c: "{}x{}_to{}x{}".format(*c))
def test_upsample_bilinear_grad_is_the_forward_kernels_transpose(case):
    """The forward kernel's matrix, read off unit images (one channel), transposed and
    applied to dy: the backward is the adjoint of exactly that map, weights within an ulp."""
    h, w, oh, ow = case
    m = np.empty((oh * ow, h * w))
    for i in range(h * w):
        e = np.zeros((1, h, w, 1), np.float32)
        e.reshape(-1)[i] = 1
        y = np.empty((1, oh, ow, 1), np.float32)
        K.upsample_bilinear(e, y)
        m[:, i] = y.reshape(-1)
    (dy,), _ = _dy((1, oh, ow, 1), 53)
    want = (m.T @ dy.reshape(-1).astype(np.float64)).reshape(1, h, w, 1)
    mag = (np.abs(m).T @ np.abs(dy.reshape(-1).astype(np.float64))).reshape(1, h, w, 1)
    assert_close(bilinear_grad(dy, h, w), want, mag, rtol=bilinear_rtol(h, w, oh, ow), atol=0,
                 what=f"bilinear transpose {case}")


@pytest.mark.parametrize("kind, case", [("nearest", NEAREST[0]), ("nearest", NEAREST[-1]),
                                        ("bilinear", BILINEAR[0]), ("bilinear", BILINEAR[5]),
                                        ("bilinear", BILINEAR[7])], ids=lambda v: str(v))
def test_upsample_grad_matches_finite_differences(kind, case):
    """Both upsamplings are linear in x: the directional derivative of sum(dy * up(x))
    through the forward kernel is exact up to float32 rounding."""
    n, h, w, c, a, b = case
    oh, ow = (h * a, w * b) if kind == "nearest" else (a, b)
    rng = np.random.default_rng(54)
    x = rng.standard_normal((n, h, w, c))
    (dy,), _ = _dy((n, oh, ow, c), 55)
    dx = nearest_grad(dy, a, b) if kind == "nearest" else bilinear_grad(dy, h, w)
    dy64 = dy.astype(np.float64)

    def loss(xv):
        y = np.empty((n, oh, ow, c), np.float32)
        if kind == "nearest":
            K.upsample_nearest(xv, y, a, b)
        else:
            K.upsample_bilinear(xv, y)
        return float((y * dy64).sum())

    v = rng.standard_normal(x.shape)
    fd = directional(loss, x, v, h=0.5)
    mag = float((np.abs(dy64) * np.abs(x).max() * 4).sum())
    tol = rounding_error(4 * mag, 0.5) + 1e-5 * float((np.abs(dx) * np.abs(v)).sum())
    assert abs(fd - float((dx * v).sum())) <= tol


# TensorFlow 2.21 / Keras 3.15 UpSampling2D gradients for dy = 1, 2, ..., oh*ow (row-major,
# one channel), recorded with tf.GradientTape(output_gradients=dy).
TF_UPSAMPLE = {
    ("bilinear", (2, 2), (2, 3)): [[21.5, 29.0, 36.5], [63.5, 71.0, 78.5]],
    ("bilinear", (3, 2), (2, 2)): [[36.41666793823242, 46.916664123535156],
                                   [103.08333587646484, 113.58333587646484]],
    ("nearest", (2, 3), (2, 2)): [[30.0, 48.0], [102.0, 120.0]],
}


@pytest.mark.parametrize("key", list(TF_UPSAMPLE), ids=lambda k: f"{k[0]}_{k[1][0]}x{k[1][1]}")
def test_upsample_grad_matches_tensorflow(key):
    kind, (fh, fw), (h, w) = key
    dy = np.arange(1, h * fh * w * fw + 1, dtype=np.float32).reshape(1, h * fh, w * fw, 1)
    dx = nearest_grad(dy, fh, fw) if kind == "nearest" else bilinear_grad(dy, h, w)
    want = np.array(TF_UPSAMPLE[key], np.float32)
    assert_close(dx[0, :, :, 0], want, rtol=4 * EPS32, atol=0, what=f"TF {key}")


def test_upsample_grad_propagates_nan():
    (dy,), _ = _dy((1, 18, 14, 3), 56)
    dy = dy.copy()
    dy[0, 5, 6, 1] = np.nan
    dx = nearest_grad(dy, 2, 2)
    assert np.isnan(dx[0, 2, 3, 1]) and np.isnan(dx).sum() == 1
    dx = bilinear_grad(dy, 9, 7)
    # Output row 5 of 18 reads input rows 2 and 3, column 6 of 14 columns 2 and 3.
    assert np.isnan(dx[0, 2:4, 2:4, 1]).all() and np.isnan(dx).sum() == 4


def test_upsample_grad_validation():
    dy = np.ones((2, 8, 9, 3), np.float32)
    inside_dy = dy.reshape(-1)[:2 * 4 * 3 * 3].reshape(2, 4, 3, 3)
    bad = [
        lambda: K.upsample_nearest_grad(dy, np.empty((2, 4, 4, 3), np.float32), 2, 2),  # 9 != 4*2
        lambda: K.upsample_nearest_grad(dy, np.empty((2, 4, 3, 3), np.float32), 2, 2),
        lambda: K.upsample_nearest_grad(dy, np.empty((1, 4, 3, 3), np.float32), 2, 3),  # batch
        lambda: K.upsample_nearest_grad(dy, np.empty((2, 4, 3, 2), np.float32), 2, 3),  # channels
        lambda: K.upsample_nearest_grad(dy, np.empty((2, 8, 9, 3), np.float32), 0, 1),
        lambda: K.upsample_nearest_grad(dy, inside_dy, 2, 3),                           # dx in dy
        lambda: K.upsample_bilinear_grad(dy, np.empty((2, 4, 3, 4), np.float32)),
        lambda: K.upsample_bilinear_grad(dy, np.empty((3, 4, 3, 3), np.float32)),
        lambda: K.upsample_bilinear_grad(dy, inside_dy),
        lambda: K.upsample_bilinear_grad(dy, np.empty((2, 0, 3, 3), np.float32)),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()
    K.upsample_nearest_grad(dy, np.empty((2, 4, 3, 3), np.float32), 2, 3)


@pytest.mark.parametrize("kind", ["nearest", "bilinear"])
def test_upsample_grad_runner_rows_and_second_thread(kind):
    """OP_UPSAMPLE_{NEAREST,BILINEAR}_BACKWARD: y = dx, x1 = dy, the forward's ints
    (nearest: n, h, w, c, fh, fw with the input's h, w; bilinear: n, h, w, c, oh, ow)."""
    n, h, w, c = 2, 9, 7, 5
    (dy,), _ = _dy((n, 2 * h, 3 * w, c), 57)
    if kind == "nearest":
        want = nearest_grad(dy, 2, 3)
        ints = (n, h, w, c, 2, 3)
    else:
        want = bilinear_grad(dy, h, w)
        ints = (n, h, w, c, 2 * h, 3 * w)
    got = run_row(f"upsample_{kind}_backward", {"x1": dy}, {"y": want.shape}, ints)["y"]
    assert np.array_equal(got, want)
    grad = (lambda: nearest_grad(dy, 2, 3)) if kind == "nearest" else (lambda: bilinear_grad(dy, h, w))
    assert_same_in_thread(grad, f"upsample_{kind}_grad")
