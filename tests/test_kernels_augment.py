"""kernels/augment.pxi against float64 NumPy references on awkward shapes (1-pixel rows,
odd sizes, one and several channels), every fill mode and both interpolations."""
import math

import numpy as np
import pytest

from edgecore import _kernels as K
from reference import augment as ref
from reference.check import assert_close, assert_unchanged, frozen

SHAPES = {"9x7x3": (2, 9, 7, 3), "1x5x1": (3, 1, 5, 1), "6x1x2": (2, 6, 1, 2),
          "13x4x5": (1, 13, 4, 5), "2x2x1": (2, 2, 2, 1)}


def _transforms(rng, n, h, w):
    """Rotation, zoom, translation (as Keras builds them) and a projective one."""
    out = []
    for b in range(n):
        kind = b % 4
        if kind == 0:
            a = rng.uniform(-math.pi, math.pi)
            cx, cy = (w - 1) / 2, (h - 1) / 2
            out.append([math.cos(a), -math.sin(a), cx - cx * math.cos(a) + cy * math.sin(a),
                        math.sin(a), math.cos(a), cy - cx * math.sin(a) - cy * math.cos(a), 0, 0])
        elif kind == 1:
            zx, zy = rng.uniform(0.3, 2.5, 2)
            out.append([zx, 0, (w - 1) / 2 * (1 - zx), 0, zy, (h - 1) / 2 * (1 - zy), 0, 0])
        elif kind == 2:
            out.append([1, 0, -rng.uniform(-2 * w, 2 * w), 0, 1, -rng.uniform(-2 * h, 2 * h), 0, 0])
        else:
            out.append([1.1, 0.2, -0.7, -0.1, 0.9, 0.4, 0.01, -0.02])
    return np.array(out, np.float32)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", ["reflect", "wrap", "constant", "nearest"])
@pytest.mark.parametrize("interp", ["bilinear", "nearest"])
def test_projective_warp(shape, mode, interp):
    n, h, w, c = SHAPES[shape]
    rng = np.random.default_rng(hash((shape, mode, interp)) % 2**32)
    (x,), copies = frozen(rng.uniform(0, 255, (4 * n, h, w, c)))
    t = _transforms(rng, 4 * n, h, w)
    y = np.full(x.shape, np.nan, np.float32)
    K.projective_warp(x, y, t, interp == "bilinear", mode, 7.5)
    want = ref.projective_warp(x, t, interp == "bilinear", mode, 7.5)
    # float32 coordinates (as TF computes them) against float64 ones: a bilinear weight
    # moves by ~1e-6 of a pixel step, times values up to 255; nearest may round a
    # coordinate within that of .5 differently, so compare where the reference is not
    # at a tie.
    if interp == "bilinear":
        assert_close(y, want, magnitude=255.0, rtol=2e-5, atol=0, what=f"warp {mode}")
    else:
        assert np.mean(np.isclose(y, want, rtol=0, atol=1e-3)) >= 0.99, f"warp nearest {mode}"
    assert_unchanged([x], copies, "projective_warp")


def test_projective_warp_identity_is_a_copy():
    x = np.random.default_rng(0).uniform(0, 1, (2, 5, 4, 3)).astype(np.float32)
    y = np.empty_like(x)
    K.projective_warp(x, y, np.tile(np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float32), (2, 1)))
    assert np.array_equal(x, y)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", [(True, False), (False, True), (True, True)])
def test_flip(shape, mode):
    n, h, w, c = SHAPES[shape]
    rng = np.random.default_rng(3)
    (x,), copies = frozen(rng.standard_normal((n, h, w, c)))
    flips = (np.arange(n) % 2 == 0).astype(np.uint8)
    y = np.empty_like(x)
    K.flip(x, y, flips, *mode)
    assert np.array_equal(y, ref.flip(x, flips, *mode).astype(np.float32))
    assert_unchanged([x], copies, "flip")


@pytest.mark.parametrize("shape", list(SHAPES))
def test_contrast_and_brightness(shape):
    n, h, w, c = SHAPES[shape]
    rng = np.random.default_rng(4)
    (x,), copies = frozen(rng.uniform(0, 255, (n, h, w, c)))
    factors = rng.uniform(0.5, 1.5, n).astype(np.float32)
    y = np.empty_like(x)
    K.contrast(x, y, factors, 0.0, 255.0, np.empty(c, np.float64))
    assert_close(y, ref.contrast(x, factors, 0, 255), magnitude=255.0, rtol=1e-6, atol=0,
                 what="contrast")
    deltas = rng.uniform(-60, 60, n).astype(np.float32)
    K.brightness(x, y, deltas, 0.0, 255.0)
    assert_close(y, ref.brightness(x, deltas, 0, 255), magnitude=255.0, rtol=1e-7, atol=0,
                 what="brightness")
    assert_unchanged([x], copies, "contrast/brightness")


def test_random_crop():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 9, 7, 2)).astype(np.float32)
    starts = np.array([[0, 0], [4, 3], [2, 1]], np.intp)
    y = np.empty((3, 5, 4, 2), np.float32)
    K.random_crop(x, y, starts)
    assert np.array_equal(y, ref.random_crop(x, starts, 5, 4).astype(np.float32))
    with pytest.raises(ValueError, match="out of range"):
        K.random_crop(x, y, np.array([[5, 0], [0, 0], [0, 0]], np.intp))


def test_bad_arguments_are_refused():
    x = np.zeros((2, 3, 3, 1), np.float32)
    with pytest.raises(ValueError, match="per-sample"):
        K.flip(x, np.empty_like(x), np.zeros(3, np.uint8), True, False)
    with pytest.raises(ValueError, match="fill_mode"):
        K.projective_warp(x, np.empty_like(x), np.zeros((2, 8), np.float32), True, "mirror")
    with pytest.raises(ValueError, match="overlaps"):
        K.brightness(x, x, np.zeros(2, np.float32), 0.0, 1.0)


@pytest.mark.parametrize("sizes", [(9, 7, 4, 3), (9, 7, 17, 13), (1, 5, 3, 11), (6, 1, 6, 4),
                                   (13, 4, 13, 4), (5, 5, 1, 1)])
def test_resize_nearest(sizes):
    h, w, oh, ow = sizes
    rng = np.random.default_rng(6)
    (x,), copies = frozen(rng.standard_normal((2, h, w, 3)))
    y = np.full((2, oh, ow, 3), np.nan, np.float32)
    K.resize_nearest(x, y)
    assert np.array_equal(y, ref.resize_nearest(x, oh, ow).astype(np.float32))
    assert_unchanged([x], copies, "resize_nearest")
