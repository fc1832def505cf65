"""Conv2D backward (plain HWIO kernel, groups 1 and grouped): dx, dw, db against the
float64 im2col / col2im reference on the forward tests' ncnn-style grid (strides,
dilation, same / valid / asymmetric pads, channel tails) and a grouped grid, a subset under
every GEMM variant, finite differences of the forward kernel, optional outputs,
multi-block batches, NaN propagation, the plan runner's row, a second thread, bad shapes."""
import numpy as np
import pytest

import shapes
from edgecore import _kernels as K
from oprow import run_row
from reference.check import (assert_close, assert_grads_close, assert_same_in_thread,
                             assert_unchanged, frozen)
from reference.conv2d import conv2d_backward as ref_backward, conv2d_backward_fast
from reference.finite_diff import assert_bilinear_grads

CASES = [c for c in shapes.conv_cases() if c.groups == 1]
GROUPED = shapes.grouped_conv_cases()
# Under every GEMM variant: pointwise, strided pointwise, 3x3 same, dilated, asymmetric pads.
ISA_CASES = [CASES[0], CASES[7], CASES[18], CASES[45], CASES[-1], CASES[-4]]


def _inputs(case, seed):
    rng = np.random.default_rng(seed)
    oh, ow = case.out_hw
    return frozen(rng.standard_normal((case.n, case.h, case.w, case.cin)),
                  rng.standard_normal((case.kh, case.kw, case.cin // case.groups, case.cout)),
                  rng.standard_normal((case.n, oh, ow, case.cout)))


def run_grad(case, x, w, dy, want=("dx", "dw", "db")):
    outs = {"dx": np.full(x.shape, np.nan, np.float32) if "dx" in want else None,
            "dw": np.full(w.shape, np.nan, np.float32) if "dw" in want else None,
            "db": np.full(w.shape[3], np.nan, np.float32) if "db" in want else None}
    size = K.conv2d_grad_scratch_size(x.shape, w.shape, groups=case.groups, **case.geometry)
    store = np.full(size + 256, np.nan, np.float32)
    K.conv2d_grad(x, w, dy, outs["dx"], outs["dw"], outs["db"], store[:size],
                  groups=case.groups, **case.geometry)
    assert np.isnan(store[size:]).all(), "conv2d_grad wrote past its scratch size"
    return outs


def check_against_reference(case, x, w, dy, got, what):
    assert_grads_close(got, ref_backward, x, w, dy, f"{what} {case.id}", groups=case.groups,
                       **case.geometry)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conv2d_grad_matches_reference(case):
    (x, w, dy), copies = _inputs(case, 7)
    got = run_grad(case, x, w, dy)
    check_against_reference(case, x, w, dy, got, "conv2d_grad")
    assert_unchanged([x, w, dy], copies, "conv2d_grad")


@pytest.mark.parametrize("case", GROUPED, ids=[c.id for c in GROUPED])
def test_grouped_conv2d_grad_matches_reference(case):
    (x, w, dy), copies = _inputs(case, 17)
    check_against_reference(case, x, w, dy, run_grad(case, x, w, dy), "grouped conv2d_grad")
    assert_unchanged([x, w, dy], copies, "grouped conv2d_grad")


@pytest.mark.parametrize("case", ISA_CASES + GROUPED[2:5], ids=lambda c: c.id)
def test_conv2d_grad_every_gemm_variant(gemm_isa, case):
    (x, w, dy), _ = _inputs(case, 8)
    check_against_reference(case, x, w, dy, run_grad(case, x, w, dy), f"conv2d_grad {gemm_isa[0]}")


def test_conv2d_grad_many_row_blocks():
    """Batch 4 of 18x17 with a 3x3x40 kernel: ~1200 output rows, several weight-gradient
    blocks (the last partial), so dw accumulates across blocks and dx scatters per block."""
    case = shapes._case(4, (18, 17), 40, 24, shapes.CONV_TABLE[3])
    (x, w, dy), _ = _inputs(case, 9)
    check_against_reference(case, x, w, dy, run_grad(case, x, w, dy), "conv2d_grad blocks")
    case = shapes._case(4, (18, 17), 48, 24, shapes.CONV_TABLE[3], groups=3)
    (x, w, dy), _ = _inputs(case, 9)
    check_against_reference(case, x, w, dy, run_grad(case, x, w, dy), "grouped conv2d_grad blocks")


@pytest.mark.parametrize("want", [("dx",), ("dw",), ("db",), ("dw", "db")])
@pytest.mark.parametrize("case", [CASES[0], CASES[18], GROUPED[2]], ids=lambda c: c.id)
def test_conv2d_grad_optional_outputs(case, want):
    (x, w, dy), _ = _inputs(case, 10)
    got = run_grad(case, x, w, dy, want)
    assert all((got[k] is None) == (k not in want) for k in got)
    check_against_reference(case, x, w, dy, got, f"conv2d_grad only {want}")


def _forward_loss(case, dy64):
    """sum(dy * conv(x, w)) through the forward kernel (packing w for the current GEMM)."""
    g = case.groups

    def loss(x, w):
        wp = np.empty(K.conv2d_packed_sizes(case.kh, case.kw, case.cin // g, case.cout, g)[0],
                      np.float32)
        K.conv2d_pack_weights(np.ascontiguousarray(w), g, wp)
        scratch = np.empty(max(K.conv2d_scratch_size(x.shape, w.shape, groups=g,
                                                     **case.geometry), 1), np.float32)
        y = np.empty(dy64.shape, np.float32)
        K.conv2d(np.ascontiguousarray(x), w.shape, wp, y, scratch, groups=g, **case.geometry)
        return float((y * dy64).sum())
    return loss


@pytest.mark.parametrize("case", [CASES[0], CASES[18], CASES[45], CASES[-1], GROUPED[2],
                                  GROUPED[13], GROUPED[-1]], ids=lambda c: c.id)
def test_conv2d_grad_matches_finite_differences(case):
    """<grad, v> against the directional derivative of sum(dy * conv(x, w)); linear in x
    and in w, so a large step leaves only the rounding of the float32 forward."""
    (x, w, dy), _ = _inputs(case, 11)
    got = run_grad(case, x, w, dy)
    dy64 = dy.astype(np.float64)
    loss = _forward_loss(case, dy64)
    mag = float((ref_backward(x, w, dy, magnitude=True, groups=case.groups,
                              **case.geometry)[1] * np.abs(w)).sum())
    rng = np.random.default_rng(12)
    assert_bilinear_grads(loss, x, w, got["dx"], got["dw"], mag, rng)
    bias_fd = dy64.sum(axis=(0, 1, 2))          # the bias adds to every output pixel
    assert_close(got["db"], bias_fd, np.abs(dy64).sum(axis=(0, 1, 2)), what="conv2d db")


def test_conv2d_grad_validation():
    case = shapes.ConvCase(1, 9, 7, 4, 8, 3, 3, 1, 1, 1, 1, "valid", (0, 0, 0, 0))
    (x, w, dy), _ = _inputs(case, 1)
    scratch = np.empty(K.conv2d_grad_scratch_size(x.shape, w.shape), np.float32)
    dx, dw, db = np.empty(x.shape, np.float32), np.empty(w.shape, np.float32), np.empty(8, np.float32)
    K.conv2d_grad(x, w, dy, dx, dw, db, scratch)
    bad = [
        lambda: K.conv2d_grad(x, w, np.ascontiguousarray(dy[:, :, :4]), dx, dw, db, scratch),
        lambda: K.conv2d_grad(x, w, dy, dx[:, :8], dw, db, scratch),
        lambda: K.conv2d_grad(x, w, dy, dx, dw[:2], db, scratch),
        lambda: K.conv2d_grad(x, w, dy, dx, dw, db[:7], scratch),
        lambda: K.conv2d_grad(x, w, dy, dx, dw, db, scratch[:-1]),
        lambda: K.conv2d_grad(x, np.ascontiguousarray(w[:, :, :3]), dy, dx, dw, db, scratch),
        lambda: K.conv2d_grad(x, w, dy, dx, dw, db, scratch, groups=2),        # depth 4 != 4 / 2
        lambda: K.conv2d_grad(x, w, dy, dx, dw, db, scratch, strides=(0, 1)),
        lambda: K.conv2d_grad(x, w, dy, dx, dw, db, scratch, pads=(0, 0, 0)),
        lambda: K.conv2d_grad(x, w, dy, dx, dw, dw.reshape(-1)[:8], scratch),  # db inside dw
        lambda: K.conv2d_grad(x, w, dy, dx, dw, db, dx.reshape(-1)),           # scratch is dx
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


@pytest.mark.parametrize("case", [CASES[0], CASES[18], CASES[45], CASES[-1]], ids=lambda c: c.id)
def test_numpy_backward_used_by_the_benchmark_is_right(case):
    (x, w, dy), _ = _inputs(case, 13)
    got = conv2d_backward_fast(x, w, dy, **case.geometry)
    mags = ref_backward(x, w, dy, magnitude=True, **case.geometry)
    for name, g, r, m in zip(("dx", "dw", "db"), got, ref_backward(x, w, dy, **case.geometry), mags):
        assert_close(g, r, m, what=f"numpy conv2d backward {name} {case.id}")


def test_grouped_conv2d_grad_validation():
    case = shapes._case(1, (9, 7), 6, 9, shapes.CONV_TABLE[3], groups=3)
    (x, w, dy), _ = _inputs(case, 2)                      # w (3, 3, 2, 9)
    geom = dict(groups=3, **case.geometry)
    size = K.conv2d_grad_scratch_size(x.shape, w.shape, **geom)
    scratch = np.empty(size, np.float32)
    dx, dw, db = np.empty(x.shape, np.float32), np.empty(w.shape, np.float32), np.empty(9, np.float32)
    K.conv2d_grad(x, w, dy, dx, dw, db, scratch, **geom)
    bad = [
        lambda: K.conv2d_grad(x, w, dy, dx, dw, db, scratch[:-1], **geom),
        lambda: K.conv2d_grad(x, w, dy, dx, np.empty((3, 3, 6, 9), np.float32), db, scratch, **geom),
        lambda: K.conv2d_grad(x, w, dy, dx, dw, db, scratch, groups=2, **case.geometry),
        lambda: K.conv2d_grad(x, np.ascontiguousarray(w[..., :8]), dy, dx, dw, db, scratch, **geom),
        lambda: K.conv2d_grad_scratch_size(x.shape, w.shape, groups=4, **case.geometry),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


@pytest.mark.parametrize("case", [CASES[18], GROUPED[2]], ids=lambda c: c.id)
def test_conv2d_grad_propagates_nan(case):
    """A NaN in dy reaches db, dw and dx of its own group only; a NaN in x reaches dw of
    its group only (dx does not depend on x)."""
    (x, w, dy), _ = _inputs(case, 14)
    cig, cog = case.cin // case.groups, case.cout // case.groups
    dy = dy.copy()
    dy[0, 1, 1, cog - 1] = np.nan                              # group 0's last filter
    got = run_grad(case, x, w, dy)
    assert np.isnan(got["db"][cog - 1]) and np.isnan(got["db"]).sum() == 1
    assert np.isnan(got["dw"][..., cog - 1]).all() and not np.isnan(got["dw"][..., cog:]).any()
    assert np.isnan(got["dx"][..., :cig]).any() and not np.isnan(got["dx"][..., cig:]).any()
    (x, w, dy), _ = _inputs(case, 14)
    x = x.copy()
    x[0, 2, 2, 0] = np.nan                                     # group 0's first channel
    got = run_grad(case, x, w, dy)
    assert np.isnan(got["dw"][:, :, 0, :cog]).any() and not np.isnan(got["dw"][..., cog:]).any()
    assert not np.isnan(got["dx"]).any() and not np.isnan(got["db"]).any()


@pytest.mark.parametrize("case", [CASES[18], GROUPED[2], GROUPED[-1]], ids=lambda c: c.id)
def test_conv2d_grad_runner_row_and_second_thread(case):
    """OP_CONV2D_BACKWARD (y = dx, x0 = x, x1 = dy, w = HWIO kernel, y2 = dw, b = db,
    scratch; ints the ConvGeom fields, groups last) gives the wrapper's result bit for bit,
    with the scratch conv2d_grad_scratch_size sizes for the groups; so does another thread."""
    (x, w, dy), _ = _inputs(case, 15)
    want = run_grad(case, x, w, dy)
    oh, ow = case.out_hw
    ints = (case.n, case.h, case.w, case.cin, case.kh, case.kw, case.sh, case.sw, case.dh,
            case.dw, case.pads[0], case.pads[2], oh, ow, case.cout, case.groups)
    size = K.conv2d_grad_scratch_size(x.shape, w.shape, groups=case.groups, **case.geometry)
    got = run_row("conv2d_backward", {"x0": x, "x1": dy, "w": w},
                  {"y": x.shape, "y2": w.shape, "b": (case.cout,), "scratch": (size,)}, ints)
    for name, col in (("dx", "y"), ("dw", "y2"), ("db", "b")):
        assert np.array_equal(got[col], want[name]), name
    assert_same_in_thread(lambda: tuple(run_grad(case, x, w, dy).values()),
                          f"conv2d_grad {case.id}")
