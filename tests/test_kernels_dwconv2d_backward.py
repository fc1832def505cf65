"""DepthwiseConv2D backward against the float64 tap-by-tap reference on the forward grid
(channel tails around the 16-channel block, depth multipliers, strides, dilation, pads
beyond the kernel reach), several channel blocks, the large-kernel fallback, depth
multipliers 2 and 3 with strides, dilation and batches, finite differences of the forward
kernel, optional outputs, NaN propagation, the plan runner's row, a second thread and bad
shapes."""
import numpy as np
import pytest

import shapes
from edgecore import _kernels as K
from oprow import run_row
from reference.check import assert_grads_close, assert_same_in_thread, assert_unchanged, frozen
from reference.dwconv2d import dwconv2d_backward as ref_backward
from reference.finite_diff import assert_bilinear_grads

CASES = shapes.dwconv_cases()


def _inputs(case, seed):
    rng = np.random.default_rng(seed)
    oh, ow = case.out_hw
    return frozen(rng.standard_normal((case.n, case.h, case.w, case.cin)),
                  rng.standard_normal((case.kh, case.kw, case.cin, case.cout)),
                  rng.standard_normal((case.n, oh, ow, case.cin * case.cout)))


def run_grad(case, x, w, dy, want=("dx", "dw", "db")):
    outs = {"dx": np.full(x.shape, np.nan, np.float32) if "dx" in want else None,
            "dw": np.full(w.shape, np.nan, np.float32) if "dw" in want else None,
            "db": np.full(dy.shape[3], np.nan, np.float32) if "db" in want else None}
    K.dwconv2d_grad(x, w, dy, outs["dx"], outs["dw"], outs["db"], **case.geometry)
    return outs


def check(case, x, w, dy, got, what):
    assert_grads_close(got, ref_backward, x, w, dy, f"{what} {case.id}", **case.geometry)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_dwconv2d_grad_matches_reference(case):
    (x, w, dy), copies = _inputs(case, 21)
    check(case, x, w, dy, run_grad(case, x, w, dy), "dwconv2d_grad")
    assert_unchanged([x, w, dy], copies, "dwconv2d_grad")


BLOCK_CASES = [
    shapes._case(2, (9, 7), 300, 1, shapes.DW_TABLE[0]),     # 3x3: blocks of 224 channels
    shapes._case(1, (14, 14), 48, 1, shapes.DW_TABLE[-2]),   # 7x7: blocks of 32 channels
    shapes._case(1, (9, 7), 40, 3, shapes.DW_TABLE[1]),      # M = 3: blocks of 64 channels
    shapes._case(1, (35, 34), 3, 2, (33, 33, 1, 1, 1, 1, "valid")),   # 33x33x2 taps: direct
]


@pytest.mark.parametrize("case", BLOCK_CASES, ids=[c.id for c in BLOCK_CASES])
def test_dwconv2d_grad_channel_blocks_and_large_kernels(case):
    (x, w, dy), _ = _inputs(case, 22)
    check(case, x, w, dy, run_grad(case, x, w, dy), "dwconv2d_grad")


@pytest.mark.parametrize("want", [("dx",), ("dw",), ("db",), ("dw", "db")])
def test_dwconv2d_grad_optional_outputs(want):
    case = CASES[2]
    (x, w, dy), _ = _inputs(case, 23)
    got = run_grad(case, x, w, dy, want)
    assert all((got[k] is None) == (k not in want) for k in got)
    check(case, x, w, dy, got, f"dwconv2d_grad only {want}")


@pytest.mark.parametrize("case", [CASES[2], CASES[-5], BLOCK_CASES[2]], ids=lambda c: c.id)
def test_dwconv2d_grad_matches_finite_differences(case):
    """<grad, v> against the directional derivative of sum(dy * dwconv(x, w)) through the
    forward kernel (linear in x and in w: a large step leaves only rounding)."""
    (x, w, dy), _ = _inputs(case, 24)
    _check_finite_differences(case, x, w, dy, run_grad(case, x, w, dy), 25)


def _check_finite_differences(case, x, w, dy, got, seed):
    dy64 = dy.astype(np.float64)

    def loss(xv, wv):
        y = np.empty(dy.shape, np.float32)
        K.dwconv2d(np.ascontiguousarray(xv), np.ascontiguousarray(wv), y, **case.geometry)
        return float((y * dy64).sum())

    mag = float((ref_backward(x, w, dy, magnitude=True, **case.geometry)[1] * np.abs(w)).sum())
    assert_bilinear_grads(loss, x, w, got["dx"], got["dw"], mag, np.random.default_rng(seed))


def test_dwconv2d_grad_validation():
    case = shapes.ConvCase(1, 9, 7, 4, 2, 3, 3, 1, 1, 1, 1, "valid", (0, 0, 0, 0))
    (x, w, dy), _ = _inputs(case, 1)
    dx, dw, db = np.empty(x.shape, np.float32), np.empty(w.shape, np.float32), np.empty(8, np.float32)
    K.dwconv2d_grad(x, w, dy, dx, dw, db)
    bad = [
        lambda: K.dwconv2d_grad(x, w, np.ascontiguousarray(dy[..., :4]), dx, dw, db),
        lambda: K.dwconv2d_grad(x, w, dy, dx[:, :8], dw, db),
        lambda: K.dwconv2d_grad(x, w, dy, dx, dw[:2], db),
        lambda: K.dwconv2d_grad(x, w, dy, dx, dw, db[:4]),
        lambda: K.dwconv2d_grad(x, np.ascontiguousarray(w[:, :, :3]), dy, dx, dw, db),
        lambda: K.dwconv2d_grad(x, w, dy, dx, dw, db, strides=(1, 0)),
        lambda: K.dwconv2d_grad(x, w, dy, dx, dw, db, pads=(0, 0, 0)),
        lambda: K.dwconv2d_grad(x, w, dy, dx, dw, dw.reshape(-1)[:8]),     # db inside dw
        lambda: K.dwconv2d_grad(x, w, dy, dx, dw, np.empty(8, np.float64)),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


# Depth multipliers > 1 away from the 9x7 grid rows: batch 2 with stride 2, dilation 2
# valid, stride and dilation 2 together, 5x5, the 1x1 image.
M_CASES = [
    shapes._case(2, (18, 17), 13, 2, shapes.DW_TABLE[1]),
    shapes._case(1, (18, 17), 4, 3, shapes.DW_TABLE[5]),
    shapes._case(1, (9, 7), 17, 3, shapes.DW_TABLE[-1]),
    shapes._case(1, (18, 17), 16, 2, shapes.DW_TABLE[11]),
    shapes._case(1, (1, 1), 3, 2, shapes.DW_TABLE[0]),
]


@pytest.mark.parametrize("case", M_CASES, ids=[c.id for c in M_CASES])
def test_dwconv2d_grad_depth_multiplier(case):
    (x, w, dy), copies = _inputs(case, 26)
    got = run_grad(case, x, w, dy)
    check(case, x, w, dy, got, "dwconv2d_grad")
    assert_unchanged([x, w, dy], copies, "dwconv2d_grad")
    _check_finite_differences(case, x, w, dy, got, 27)


def _nan_only_within(arr, index):
    """Some NaN in arr[index] and none elsewhere."""
    inside = np.isnan(arr[index]).sum()
    return inside > 0 and np.isnan(arr).sum() == inside


def test_dwconv2d_grad_propagates_nan():
    """M = 2: a NaN dy at output channel c*M + m reaches db there, dw[..., c, m] and dx of
    channel c only; a NaN x reaches dw of its channel only."""
    case = M_CASES[0]
    (x, w, dy), _ = _inputs(case, 28)
    dy = dy.copy()
    dy[1, 2, 3, 2 * 5 + 1] = np.nan
    got = run_grad(case, x, w, dy)
    assert _nan_only_within(got["db"], 11)
    assert _nan_only_within(got["dw"], np.s_[..., 5, 1])
    assert _nan_only_within(got["dx"], np.s_[1, ..., 5])
    (x, w, dy), _ = _inputs(case, 28)
    x = x.copy()
    x[0, 4, 4, 7] = np.nan
    got = run_grad(case, x, w, dy)
    assert _nan_only_within(got["dw"], np.s_[:, :, 7, :])
    assert not np.isnan(got["dx"]).any() and not np.isnan(got["db"]).any()


@pytest.mark.parametrize("case", [CASES[2], M_CASES[0], M_CASES[2]], ids=lambda c: c.id)
def test_dwconv2d_grad_runner_row_and_second_thread(case):
    """OP_DWCONV2D_BACKWARD (y = dx, x0 = x, x1 = dy, w = HWCM kernel, y2 = dw, b = db; ints
    the DwConvGeom fields) gives the wrapper's result bit for bit; so does another thread."""
    (x, w, dy), _ = _inputs(case, 29)
    want = run_grad(case, x, w, dy)
    oh, ow = case.out_hw
    ints = (case.n, case.h, case.w, case.cin, case.kh, case.kw, case.sh, case.sw, case.dh,
            case.dw, case.pads[0], case.pads[2], oh, ow, case.cout)
    got = run_row("dwconv2d_backward", {"x0": x, "x1": dy, "w": w},
                  {"y": x.shape, "y2": w.shape, "b": (dy.shape[3],)}, ints)
    for name, col in (("dx", "y"), ("dw", "y2"), ("db", "b")):
        assert np.array_equal(got[col], want[name]), name
    assert_same_in_thread(lambda: tuple(run_grad(case, x, w, dy).values()),
                          f"dwconv2d_grad {case.id}")
