"""DepthwiseConv2D (direct, register-blocked channels, interior/border split) against the
float64 shifted-slice reference on an ncnn-style grid, with depth multipliers, padding
wider than the kernel reach, fused activations and validation."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import shapes
from edgecore import _kernels as K
from reference.activations import LIPSCHITZ
from reference.check import assert_close, assert_unchanged, frozen
from reference.dwconv2d import dwconv2d as ref_dwconv2d

CASES = shapes.dwconv_cases()


def _inputs(case, seed):
    rng = np.random.default_rng(seed)
    return frozen(rng.standard_normal((case.n, case.h, case.w, case.cin)),
                  rng.standard_normal((case.kh, case.kw, case.cin, case.cout)),
                  rng.standard_normal(case.cin * case.cout))


def _run(case, x, w, bias, act="linear", **params):
    y = np.full((case.n,) + case.out_hw + (case.cin * case.cout,), np.nan, np.float32)
    K.dwconv2d(x, w, y, bias=bias, act=K.ACTIVATION_CODES[act], **case.geometry, **params)
    return y


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_dwconv2d_matches_reference(case):
    (x, w, bias), copies = _inputs(case, 2024)
    y = _run(case, x, w, bias)
    ref = ref_dwconv2d(x, w, bias, **case.geometry)
    mag = ref_dwconv2d(x, w, bias, magnitude=True, **case.geometry)
    assert_close(y, ref, mag, what=f"dwconv2d {case.id}")
    assert_unchanged([x, w, bias], copies, "dwconv2d")


ACTS = [("relu", {"max_value": 6.0}), ("relu", {}), ("hard_swish", {}),
        ("leaky_relu", {"alpha": 0.1}), ("relu", {"alpha": 0.2, "threshold": -0.3})]


@pytest.mark.parametrize("act, params", ACTS, ids=[a + "".join(f"_{k}{v}" for k, v in p.items())
                                                   for a, p in ACTS])
@pytest.mark.parametrize("case", [CASES[0], CASES[9], CASES[-1]], ids=lambda c: c.id)
def test_dwconv2d_fused_activation(case, act, params):
    (x, w, bias), _ = _inputs(case, 3)
    y = _run(case, x, w, bias, act, **params)
    ref = ref_dwconv2d(x, w, bias, act=act, **case.geometry, **params)
    mag = ref_dwconv2d(x, w, bias, magnitude=True, **case.geometry) * LIPSCHITZ[act]
    assert_close(y, ref, mag, what=f"dwconv2d {act} {case.id}")


def test_dwconv2d_without_bias():
    case = CASES[4]
    (x, w, _), _ = _inputs(case, 4)
    y = _run(case, x, w, None)
    ref = ref_dwconv2d(x, w, None, **case.geometry)
    assert_close(y, ref, ref_dwconv2d(x, w, None, magnitude=True, **case.geometry), what="no bias")


def test_dwconv2d_mobilenet_shape():
    """A real MobileNetV2 block shape: 96 channels = 6 full register blocks, stride 2."""
    pads = shapes.same_pads(28, 28, 3, 3, 2, 2)
    case = shapes.ConvCase(1, 28, 28, 96, 1, 3, 3, 2, 2, 1, 1, "same", pads)
    (x, w, bias), _ = _inputs(case, 5)
    y = _run(case, x, w, bias, "relu", max_value=6.0)
    ref = ref_dwconv2d(x, w, bias, act="relu", max_value=6.0, **case.geometry)
    assert_close(y, ref, ref_dwconv2d(x, w, bias, magnitude=True, **case.geometry), what="mbv2")


def test_dwconv2d_validation():
    x = np.ones((1, 9, 7, 4), np.float32)
    w = np.ones((3, 3, 4, 2), np.float32)
    ok = np.empty((1, 7, 5, 8), np.float32)
    K.dwconv2d(x, w, ok)
    bad = [
        lambda: K.dwconv2d(x, w, np.empty((1, 7, 5, 4), np.float32)),          # C*M wrong
        lambda: K.dwconv2d(x, w, np.empty((1, 9, 7, 8), np.float32)),          # needs 'same'
        lambda: K.dwconv2d(x, np.ones((3, 3, 5, 2), np.float32), ok),          # C mismatch
        lambda: K.dwconv2d(x, w, ok, bias=np.ones(4, np.float32)),             # bias C, not C*M
        lambda: K.dwconv2d(x, w, ok, strides=(0, 1)),
        lambda: K.dwconv2d(x, w, ok, dilation=(1, 0)),
        lambda: K.dwconv2d(x, w, ok, pads=(0, 0, -1, 1)),
        lambda: K.dwconv2d(x, w, ok, pads=(0, 0, 0)),
        lambda: K.dwconv2d(x, np.ones((10, 3, 4, 2), np.float32), ok),         # kernel > image
        lambda: K.dwconv2d(np.ones((1, 0, 7, 4), np.float32), w, ok),
        lambda: K.dwconv2d(x, w, ok, act=-1),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


def test_dwconv2d_rejects_output_overlapping_input():
    buf = np.zeros(2 * 9 * 7 * 4, np.float32)
    x = buf[: 9 * 7 * 4].reshape(1, 9, 7, 4)
    y = buf[9 * 7 * 4 - 4: 9 * 7 * 4 - 4 + 7 * 5 * 4].reshape(1, 7, 5, 4)
    with pytest.raises(K.KernelShapeError):
        K.dwconv2d(x, np.ones((3, 3, 4, 1), np.float32), y)


@st.composite
def _geometries(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw, dh, dw = (draw(st.integers(1, 3)) for _ in range(4))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    pads = tuple(draw(st.integers(0, 5)) for _ in range(4))
    c, m = draw(st.sampled_from(DW_FUZZ_CHANNELS)), draw(st.integers(1, 3))
    case = shapes.ConvCase(draw(st.integers(1, 2)), h, w, c, m, kh, kw, sh, sw, dh, dw,
                           "explicit", pads)
    assume(min(case.out_hw) > 0)
    return case


DW_FUZZ_CHANNELS = [1, 2, 5, 15, 16, 17, 33]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(case=_geometries())
def test_dwconv2d_random_geometry(case):
    """Any kernel / stride / dilation / padding combination, including pads wider than the
    kernel reach and kernels wider than the image (all border, no interior)."""
    (x, w, bias), _ = _inputs(case, 0)
    y = _run(case, x, w, bias)
    ref = ref_dwconv2d(x, w, bias, **case.geometry)
    assert_close(y, ref, ref_dwconv2d(x, w, bias, magnitude=True, **case.geometry),
                 what=f"dwconv2d {case.id}")
