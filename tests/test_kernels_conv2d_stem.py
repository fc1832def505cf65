"""The first convolution of a CNN (3 input channels, 3x3 or 7x7, stride 2): im2col copies
each kernel row's KW*3 contiguous floats as one run when the window is inside the image,
tap by tap at the border.  Against the float64 reference on odd sizes, same and valid,
every Cout tail, at 1-4 threads with the same bits."""
import numpy as np
import pytest

import shapes
from edgecore import _kernels as K
from reference.check import assert_close
from reference.conv2d import conv2d as ref_conv2d

ROWS = [(3, 3, 2, 2, 1, 1, "same"), (3, 3, 2, 2, 1, 1, "valid"), (7, 7, 2, 2, 1, 1, "same"),
        (7, 7, 2, 2, 1, 1, "valid"), (3, 3, 1, 1, 1, 1, "same"), (5, 5, 2, 2, 1, 1, "same")]
CASES = [c for c in (shapes._case(n, hw, 3, co, row) for row in ROWS
                     for n, hw, co in [(1, (1, 1), 16), (1, (23, 21), 32), (2, (11, 16), 17),
                                       (1, (19, 18), 64)]) if c is not None]


@pytest.fixture(autouse=True)
def small_work_runs_in_parallel():
    previous = K._set_parallel_grain(1 << 30)
    yield
    K._set_parallel_grain(previous)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conv2d_three_channel_stem(case):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((case.n, case.h, case.w, 3)).astype(np.float32)
    w = rng.standard_normal((case.kh, case.kw, 3, case.cout)).astype(np.float32)
    b = rng.standard_normal(case.cout).astype(np.float32)
    ws, bs = K.conv2d_packed_sizes(case.kh, case.kw, 3, case.cout, 1)
    wp, bp = np.empty(ws, np.float32), np.empty(bs, np.float32)
    K.conv2d_pack_weights(w, 1, wp)
    K.conv2d_pack_bias(b, 1, bp)
    first = None
    for t in (1, 2, 3, 4):
        size = K.conv2d_scratch_size(x.shape, w.shape, **case.geometry, groups=1, nthreads=t)
        y = np.full((case.n,) + case.out_hw + (case.cout,), np.nan, np.float32)
        K.conv2d(x, w.shape, wp, y, np.empty(size, np.float32), bias_packed=bp,
                 act=K.ACTIVATION_CODES["relu"], max_value=6.0, nthreads=t, **case.geometry)
        if first is None:
            first = y
        assert np.array_equal(first.view(np.uint32), y.view(np.uint32)), f"{t} threads"
    ref = ref_conv2d(x, w, b, act="relu", max_value=6.0, **case.geometry)
    assert_close(first, ref, ref_conv2d(x, w, b, magnitude=True, **case.geometry),
                 what=f"stem {case.id}")
