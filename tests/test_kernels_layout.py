"""Zero padding / cropping (one window-copy kernel), concatenation, nearest and bilinear
upsampling (TF half-pixel rule) and transposition."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgecore import _kernels as K
from reference import layout as ref
from reference.check import assert_close, assert_unchanged, frozen

WINDOWS = {  # (h, w, oh, ow, top, left)
    "zero_pad_1111": (9, 7, 11, 9, 1, 1),
    "zero_pad_asym": (9, 7, 12, 8, 2, 0),
    "crop_1221": (9, 7, 6, 4, -1, -2),
    "crop_to_one": (9, 7, 1, 1, -4, -3),
    "pad_rows_crop_cols": (5, 6, 9, 2, 2, -3),
    "all_padding": (3, 3, 4, 4, 10, -10),
    "identity": (4, 5, 4, 5, 0, 0),
}


@pytest.mark.parametrize("case", list(WINDOWS))
def test_window_copy(case):
    h, w, oh, ow, top, left = WINDOWS[case]
    rng = np.random.default_rng(1)
    (x,), copies = frozen(rng.standard_normal((2, h, w, 3)))
    y = np.full((2, oh, ow, 3), np.nan, np.float32)
    K.window_copy(x, y, top, left)
    assert np.array_equal(y, ref.window_copy(x, oh, ow, top, left).astype(np.float32))
    assert_unchanged([x], copies, "window_copy")


def test_concat_channels():
    """Concatenate along channels of NHWC: outer = N*H*W, one call per input."""
    rng = np.random.default_rng(2)
    parts = [rng.standard_normal((2, 5, 3, c)).astype(np.float32) for c in (3, 1, 13)]
    y = np.full((2, 5, 3, 17), np.nan, np.float32)
    offset = 0
    for p in parts:
        (fp,), copies = frozen(p.reshape(-1))
        K.concat(fp, y.reshape(-1), 2 * 5 * 3, offset)
        assert_unchanged([fp], copies, "concat")
        offset += p.shape[-1]
    assert np.array_equal(y, ref.concat(parts, axis=3).astype(np.float32))


def test_concat_outer_axis():
    """Concatenate along H: outer = N, inner = H*W*C."""
    a = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    b = -np.arange(2 * 5 * 3 * 4, dtype=np.float32).reshape(2, 5, 3, 4)
    y = np.empty((2, 7, 3, 4), np.float32)
    K.concat(a.reshape(-1), y.reshape(-1), 2, 0)
    K.concat(b.reshape(-1), y.reshape(-1), 2, 2 * 3 * 4)
    assert np.array_equal(y, np.concatenate([a, b], axis=1))


@pytest.mark.parametrize("fh, fw", [(2, 2), (1, 3), (3, 1), (1, 1)])
def test_upsample_nearest(fh, fw):
    rng = np.random.default_rng(3)
    (x,), copies = frozen(rng.standard_normal((2, 5, 4, 7)))
    y = np.empty((2, 5 * fh, 4 * fw, 7), np.float32)
    K.upsample_nearest(x, y, fh, fw)
    assert np.array_equal(y, ref.upsample_nearest(x, fh, fw).astype(np.float32))
    assert_unchanged([x], copies, "upsample_nearest")


@pytest.mark.parametrize("hw, ohw", [((5, 7), (10, 14)), ((5, 7), (15, 21)), ((4, 6), (9, 13)),
                                     ((1, 1), (2, 3)), ((5, 7), (3, 4)), ((6, 6), (6, 6))],
                         ids=lambda v: f"{v[0]}x{v[1]}")
def test_upsample_bilinear(hw, ohw):
    rng = np.random.default_rng(4)
    (x,), copies = frozen(rng.standard_normal((2,) + hw + (5,)))
    y = np.empty((2,) + ohw + (5,), np.float32)
    K.upsample_bilinear(x, y)
    # Two lerps of values bounded by max|x|; TF-style float32 coordinates vs float64 ones
    # move the weights by ~1e-7.
    assert_close(y, ref.upsample_bilinear(x, *ohw), np.abs(x).max(), rtol=1e-6, atol=0,
                 what=f"bilinear {hw}->{ohw}")
    assert_unchanged([x], copies, "upsample_bilinear")


PERMS = [((2, 3, 4), (0, 2, 1)), ((2, 5, 3, 4), (0, 2, 1, 3)), ((2, 5, 3, 4), (0, 3, 1, 2)),
         ((3, 4), (1, 0)), ((7,), (0,)), ((2, 1, 3, 1, 2, 3), (0, 5, 3, 4, 1, 2)),
         ((1, 6, 1, 5), (0, 3, 2, 1))]


@pytest.mark.parametrize("shape, perm", PERMS, ids=[f"{'x'.join(map(str, s))}_{''.join(map(str, p))}"
                                                    for s, p in PERMS])
def test_transpose(shape, perm):
    rng = np.random.default_rng(5)
    (x,), copies = frozen(rng.standard_normal(shape))
    y = np.empty(int(np.prod(shape)), np.float32)
    K.transpose(x.reshape(-1), y, shape, perm)
    assert np.array_equal(y, ref.transpose(x, perm).astype(np.float32).reshape(-1))
    assert_unchanged([x], copies, "transpose")


def test_layout_validation():
    x = np.ones((1, 4, 4, 3), np.float32)
    flat = np.ones(12, np.float32)
    bad = [
        lambda: K.window_copy(x, np.empty((1, 4, 4, 2), np.float32), 0, 0),
        lambda: K.window_copy(x, np.empty((2, 4, 4, 3), np.float32), 0, 0),
        lambda: K.window_copy(x, x, 0, 0),
        lambda: K.concat(flat, np.empty(20, np.float32), 3, 0),        # 20 not 3 rows
        lambda: K.concat(flat, np.empty(18, np.float32), 3, 3),        # columns overflow
        lambda: K.concat(flat, np.empty(18, np.float32), 3, -1),
        lambda: K.concat(flat, np.empty(18, np.float32), 0, 0),
        lambda: K.upsample_nearest(x, np.empty((1, 8, 8, 3), np.float32), 2, 3),
        lambda: K.upsample_nearest(x, np.empty((1, 4, 4, 3), np.float32), 0, 1),
        lambda: K.upsample_bilinear(x, np.empty((1, 0, 8, 3), np.float32)),
        lambda: K.transpose(flat, np.empty(12, np.float32), (3, 4), (0, 0)),
        lambda: K.transpose(flat, np.empty(12, np.float32), (3, 5), (1, 0)),
        lambda: K.transpose(flat, np.empty(11, np.float32), (3, 4), (1, 0)),
        lambda: K.transpose(flat, np.empty(12, np.float32), (1,) * 6 + (12,), tuple(range(7))),
        lambda: K.transpose(flat, flat, (3, 4), (1, 0)),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


@st.composite
def _shape_and_perm(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=6)))
    return shape, tuple(draw(st.permutations(range(len(shape)))))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(case=_shape_and_perm())
def test_transpose_random(case):
    shape, perm = case
    x = np.arange(int(np.prod(shape)), dtype=np.float32)
    y = np.empty_like(x)
    K.transpose(x, y, shape, perm)
    assert np.array_equal(y, x.reshape(shape).transpose(perm).reshape(-1))
