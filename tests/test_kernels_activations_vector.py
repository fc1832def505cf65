"""The float32 vector activations (kernels/f32_vector_math.h) against the exact functions in
float64 (reference/vmath.py), for every ISA variant this CPU runs (forced with
set_activation_isa, as EDGECORE_ACTIVATION_ISA does for a process), single- and
multi-threaded.

Stated bounds, in float32 ulps of the exact result (denormal results: ulps of 2^-149), over
every finite float32 input (here: a sample of every range plus a dense [-32, 32];
bench/measure_activations.py --step 97 measures a denser sample):
    sigmoid 3, swish 3.5, tanh 3, elu / celu 1.5, selu 2.5, softplus / log_sigmoid 4.5,
    mish 5, exponential 1.5, gelu 7.5, gelu_tanh 4 + 3 |2u| (u its tanh argument; the
    rounding of u is amplified by the function's own condition number in u for x < 0).
hard_sigmoid (Keras 3 and 2), hard_swish, softsign, leaky_relu, hard_tanh, hard_shrink,
soft_shrink and sparse_sigmoid are bit for bit the scalar path (act_scalar, double rounded
once).  NaN and +-inf give the scalar path's results; every kernel is lane-wise, so an
element's bits depend neither on where it sits (main loop or tail) nor on the thread count.
"""
import math

import numpy as np
import pytest

from edgecore import _kernels as K
from reference.vmath import exact, finite_float32, ulp_error

VECTOR_ISAS = [i for i in K.available_activation_isas() if i != "scalar"]
PARAMS = {"elu": {"alpha": 1.0}, "celu": {"alpha": 1.0}, "leaky_relu": {"alpha": 0.3},
          "hard_shrink": {"threshold": 0.5}, "soft_shrink": {"threshold": 0.5}}
BOUNDS = {"sigmoid": 3.0, "swish": 3.5, "tanh": 3.0, "elu": 1.5, "celu": 1.5, "selu": 2.5,
          "softplus": 4.5, "log_sigmoid": 4.5, "mish": 5.0, "exponential": 1.5, "gelu": 7.5}
EXACT_ONES = ["hard_sigmoid", "hard_sigmoid_k2", "hard_swish", "softsign", "leaky_relu",
              "hard_tanh", "hard_shrink", "soft_shrink", "sparse_sigmoid"]
APPROX = sorted(BOUNDS) + ["gelu_tanh"]
F32 = np.finfo(np.float32)

# Where the kernels switch formula or clamp (f32_vector_math_body.h), and their neighbours.
SWITCH_POINTS = [0.0, 112.0, 9.1, 18.0, 14.5, 89.0, 88.72283, 87.33654, 103.97208, 108.4,
                 17.33, 9.01, 1.0, 3.0, 2.5, 0.5, 40.0, 150.0]


@pytest.fixture(params=VECTOR_ISAS)
def isa(request):
    K.set_activation_isa(request.param)
    yield request.param
    K.set_activation_isa(None)


def _around(points):
    out = []
    for p in points:
        v = np.float32(p)
        out += [v, np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(-np.inf))]
    out = np.array(out, np.float32)
    return np.concatenate([out, -out])


def _inputs():
    """Every 4099th finite float32 (all ranges: denormals, tiny, huge), the dense middle
    (|x| in [2^-8, 32) with the low 10 mantissa bits zero) and the switch points."""
    lo = np.float32(2.0 ** -8).view(np.uint32)
    hi = np.float32(32).view(np.uint32)
    dense = np.arange(lo, hi, 1024, dtype=np.uint32).view(np.float32)
    denormals = np.arange(1, 0x00800000, 40961, dtype=np.uint32).view(np.float32)
    extremes = np.array([F32.max, F32.tiny, np.float32(1e-45), 1e30, 1e10, 1e5], np.float32)
    x = np.concatenate([finite_float32(4099), dense, -dense, denormals, -denormals,
                        extremes, -extremes, _around(SWITCH_POINTS)])
    return np.ascontiguousarray(x)


X = _inputs()


def _run(x, name, nthreads=1):
    y = np.full_like(x, np.nan)
    K.activation(x, y, K.ACTIVATION_CODES[name], nthreads=nthreads, **PARAMS.get(name, {}))
    return y


def _scalar(x, name):
    y = np.full_like(x, np.nan)
    K.activation_scalar(x, y, K.ACTIVATION_CODES[name], **PARAMS.get(name, {}))
    return y


def test_every_isa_listed():
    assert K.available_activation_isas()[-1] == "scalar"
    assert K.activation_isa() in VECTOR_ISAS            # the best one by default
    with pytest.raises(ValueError, match="not available"):
        K.set_activation_isa("sve1024")


@pytest.mark.parametrize("name", APPROX)
def test_error_within_stated_bound(isa, name):
    y = _run(X, name)
    ref = exact(X, name)
    err = ulp_error(y, ref)
    if name == "gelu_tanh":
        x64 = X.astype(np.float64)
        u2 = 2 * math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)
        bound = 4.0 + 3.0 * np.abs(u2)
    else:
        bound = BOUNDS[name]
    bad = ~(err <= bound)                                # NaN error counts as bad
    assert not bad.any(), (f"{isa} {name}: {bad.sum()} beyond the bound, worst "
                           f"x={X[bad][:4]} got={y[bad][:4]} exact={ref[bad][:4]} "
                           f"ulp={err[bad][:4]}")


@pytest.mark.parametrize("name", EXACT_ONES)
def test_exact_ones_are_the_scalar_path(isa, name):
    x = np.concatenate([X, np.array([np.nan, np.inf, -np.inf, -0.0], np.float32)])
    y, want = _run(x, name), _scalar(x, name)
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32)) or \
        np.array_equal(y, want, equal_nan=True), name


@pytest.mark.parametrize("name", APPROX)
def test_nonfinite_and_zero_give_the_scalar_results(isa, name):
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, F32.max, -F32.max], np.float32)
    y, want = _run(x, name), _scalar(x, name)
    assert np.array_equal(np.isnan(y), np.isnan(want)), (name, y, want)
    fin = ~np.isnan(want)
    # zeros keep their sign where the scalar path's has one (tanh(-0) = -0 ...)
    assert np.array_equal(y[fin], want[fin]) and \
        np.array_equal(np.signbit(y[fin][want[fin] == 0]), np.signbit(want[fin][want[fin] == 0])), \
        (name, x[fin], y[fin], want[fin])


@pytest.mark.parametrize("name", APPROX + EXACT_ONES)
def test_position_and_length_do_not_change_bits(isa, name):
    """Tails of every vector width: each prefix length 1..70 and each offset 0..17 gives
    the bits the whole array gives."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(200) * 6).astype(np.float32)
    whole = _run(x, name)
    for n in range(1, 71):
        assert np.array_equal(_run(x[:n].copy(), name), whole[:n]), (name, n)
    for off in range(18):
        assert np.array_equal(_run(x[off:].copy(), name), whole[off:]), (name, off)
    inplace = x.copy()
    K.activation(inplace, inplace, K.ACTIVATION_CODES[name], **PARAMS.get(name, {}))
    assert np.array_equal(inplace, whole)


@pytest.mark.parametrize("nthreads", [2, 3, 4])
def test_threads_give_the_same_bits(isa, nthreads):
    """Small work forced parallel (the test-only grain) on awkward lengths, and a length
    big enough to split as shipped."""
    rng = np.random.default_rng(nthreads)
    previous = K._set_parallel_grain(4096)
    try:
        for name in ["swish", "hard_swish", "sigmoid", "gelu", "relu", "mish"]:
            for n in (1, 17, 1001, 40000 + 13):
                x = (rng.standard_normal(n) * 5).astype(np.float32)
                assert np.array_equal(_run(x, name, nthreads), _run(x, name, 1)), (name, n)
    finally:
        K._set_parallel_grain(previous)
    x = (rng.standard_normal(3 * 65536 + 5) * 5).astype(np.float32)
    assert np.array_equal(_run(x, "swish", nthreads), _run(x, "swish", 1))


def test_scalar_isa_is_the_reference_path():
    x = X[:5000]
    try:
        K.set_activation_isa("scalar")
        assert K.activation_isa() == "scalar"
        for name in ["swish", "gelu", "tanh"]:
            assert np.array_equal(_run(x, name), _scalar(x, name), equal_nan=True)
    finally:
        K.set_activation_isa(None)
