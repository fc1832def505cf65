"""Conv2D (im2col + packed GEMM, groups, dilation, asymmetric pads, fused activation)
against the float64 im2col reference, under every GEMM variant, on ncnn-style grids."""
import subprocess
import sys

import numpy as np
import pytest

import shapes
from edgecore import _kernels as K
from reference.activations import LIPSCHITZ
from reference.check import assert_close, assert_unchanged, frozen
from reference.conv2d import conv2d as ref_conv2d

CASES = shapes.conv_cases()


def run_conv(case, x, w_hwio, bias, act="linear", **act_params):
    """Pack for the current variant and run the checked wrapper; returns y."""
    wsize, bsize = K.conv2d_packed_sizes(case.kh, case.kw, case.cin // case.groups, case.cout,
                                         case.groups)
    wp = np.empty(wsize, np.float32)
    K.conv2d_pack_weights(w_hwio, case.groups, wp)
    bp = np.empty(bsize, np.float32)
    K.conv2d_pack_bias(bias, case.groups, bp)
    wp.setflags(write=False)        # packed weights are frozen at load
    bp.setflags(write=False)
    geom = dict(case.geometry, groups=case.groups)
    scratch = np.empty(max(K.conv2d_scratch_size(x.shape, w_hwio.shape, **geom), 1), np.float32)
    y = np.full((case.n,) + case.out_hw + (case.cout,), np.nan, np.float32)
    K.conv2d(x, w_hwio.shape, wp, y, scratch, bias_packed=bp, act=K.ACTIVATION_CODES[act],
             **geom, **act_params)
    return y


def _inputs(case, seed):
    rng = np.random.default_rng(seed)
    return frozen(rng.standard_normal((case.n, case.h, case.w, case.cin)),
                  rng.standard_normal((case.kh, case.kw, case.cin // case.groups, case.cout)),
                  rng.standard_normal(case.cout))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conv2d_matches_reference(gemm_isa, case):
    (x, w, bias), copies = _inputs(case, 99)
    y = run_conv(case, x, w, bias)
    geom = dict(case.geometry, groups=case.groups)
    ref = ref_conv2d(x, w, bias, **geom)
    mag = ref_conv2d(x, w, bias, magnitude=True, **geom)
    assert_close(y, ref, mag, what=f"conv2d {gemm_isa[0]} {case.id}")
    assert_unchanged([x, w, bias], copies, "conv2d")


ACT_CASES = [("relu", {}), ("relu", {"max_value": 6.0}), ("swish", {}), ("elu", {"alpha": 1.0}),
             ("hard_sigmoid", {})]


@pytest.mark.parametrize("act, params", ACT_CASES, ids=[a + "".join(f"_{k}{v}" for k, v in p.items())
                                                    for a, p in ACT_CASES])
@pytest.mark.parametrize("case", [CASES[3 * 6 + 2], CASES[0]], ids=lambda c: c.id)
def test_conv2d_fused_activation(gemm_isa, case, act, params):
    """Pointwise (GEMM only) and im2col paths, clamp-fused and epilogue activations."""
    _check_activation(case, act, params, seed=5)


def _check_activation(case, act, params, seed):
    (x, w, bias), _ = _inputs(case, seed)
    y = run_conv(case, x, w, bias, act, **params)
    geom = dict(case.geometry, groups=case.groups)
    ref = ref_conv2d(x, w, bias, act=act, **geom, **params)
    mag = ref_conv2d(x, w, bias, magnitude=True, **geom) * LIPSCHITZ[act]
    assert_close(y, ref, mag, what=f"conv2d {act} {case.id}")


def test_conv2d_validation(gemm_isa):
    case = shapes.ConvCase(1, 9, 7, 4, 8, 3, 3, 1, 1, 1, 1, "valid", (0, 0, 0, 0))
    (x, w, bias), _ = _inputs(case, 1)
    wsize, _ = K.conv2d_packed_sizes(3, 3, 4, 8, 1)
    wp = np.empty(wsize, np.float32)
    K.conv2d_pack_weights(w, 1, wp)
    scratch = np.empty(K.conv2d_scratch_size(x.shape, w.shape), np.float32)
    ok = np.empty((1, 7, 5, 8), np.float32)
    K.conv2d(x, w.shape, wp, ok, scratch)
    bad_calls = [
        lambda: K.conv2d(x, w.shape, wp, np.empty((1, 7, 5, 7), np.float32), scratch),
        lambda: K.conv2d(x, w.shape, wp, np.empty((1, 9, 7, 8), np.float32), scratch),
        lambda: K.conv2d(x, (3, 3, 5, 8), wp, ok, scratch),                 # cin mismatch
        lambda: K.conv2d(x, w.shape, wp[:-1], ok, scratch),
        lambda: K.conv2d(x, w.shape, wp, ok, scratch[:-1]),
        lambda: K.conv2d(x, w.shape, wp, ok, scratch, pads=(0, 0, -1, 0)),
        lambda: K.conv2d(x, w.shape, wp, ok, scratch, strides=(0, 1)),
        lambda: K.conv2d(x, w.shape, wp, ok, scratch, groups=3),
        lambda: K.conv2d(x, (11, 3, 4, 8), wp, ok, scratch),                 # kernel > image
        lambda: K.conv2d(x, w.shape, wp, ok, scratch, bias_packed=np.ones(3, np.float32)),
    ]
    for i, call in enumerate(bad_calls):
        with pytest.raises(K.KernelShapeError):
            call()


_SHORT_PADS = """
import numpy as np
from edgecore import _kernels as K
x = np.ones((1, 9, 7, 4), np.float32)
w = np.ones((3, 3, 4, 8), np.float32)
wp = np.empty(K.conv2d_packed_sizes(3, 3, 4, 8, 1)[0], np.float32)
K.conv2d_pack_weights(w, 1, wp)
scratch = np.empty(K.conv2d_scratch_size(x.shape, w.shape), np.float32)
try:
    K.conv2d(x, w.shape, wp, np.empty((1, 7, 5, 8), np.float32), scratch, pads=(0, 0, 0))
except K.KernelShapeError:
    raise SystemExit(0)
raise SystemExit("accepted a 3-element pads")
"""


def test_conv2d_short_pads_raise_instead_of_crashing(tmp_path):
    # In a subprocess: before the length check, a short pads read past the tuple and
    # segfaulted (boundscheck is off in the kernels).  cwd is a temp dir so the child
    # imports the installed edgecore, not the source tree.
    proc = subprocess.run([sys.executable, "-c", _SHORT_PADS], cwd=tmp_path, capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.decode()[-300:]}"


BIG_K = [shapes._case(1, (9, 8), 70, 37, (3, 3, 1, 1, 1, 1, "same")),    # K = 630: blocked
         shapes._case(1, (5, 5), 600, 40, (1, 1, 1, 1, 1, 1, "valid"))]  # pointwise, K = 600


@pytest.mark.parametrize("act, params", [("linear", {}), ("relu", {"max_value": 6.0}),
                                         ("swish", {})], ids=["linear", "relu6", "swish"])
@pytest.mark.parametrize("case", BIG_K, ids=lambda c: c.id)
def test_conv2d_with_k_blocked_gemm(gemm_isa, case, act, params):
    """K past the GEMM's blocking threshold: slices accumulate onto the output, the clamp
    and epilogue run after the last (tests/test_kernels_gemm.py checks the bits across
    tiles and threads)."""
    _check_activation(case, act, params, seed=8)
