"""Every activation code against the Keras formula in float64, including relu's
negative_slope / max_value / threshold combinations and in-place use."""
import zlib

import numpy as np
import pytest

from edgecore import _kernels as K
from reference.activations import ACTIVATIONS, ACTIVATIONS_K3, activation as ref_activation
from reference.check import assert_close, assert_unchanged, frozen


def _inputs(name):
    # Dense near the kinks (0, +-3 for the hard ones, the relu threshold) plus a wide spread;
    # exponential stays where exp is finite in float32.
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    grid = np.linspace(-8, 8, 1601)
    wide = rng.standard_normal(500) * 20
    x = np.concatenate([grid, wide, [0.0, -0.0, 3.0, -3.0, 1e-30, -1e-30, 60.0, -60.0]])
    if name == "exponential":
        x = np.clip(x, -80, 80)
    return x


def test_every_code_has_a_reference():
    # the Keras-3-only codes are tested in test_kernels_activations_k3.py
    assert set(K.ACTIVATION_CODES) == set(ACTIVATIONS) | set(ACTIVATIONS_K3)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_keras_formula(name):
    params = {"elu": {"alpha": 1.0}, "leaky_relu": {"alpha": 0.3}}.get(name, {})
    (x,), copies = frozen(_inputs(name))
    y = np.full_like(x, np.nan)
    # the reference path; the vector kernels K.activation runs are held to their stated
    # bounds against exact functions in test_kernels_activations_vector.py
    K.activation_scalar(x, y, K.ACTIVATION_CODES[name], **params)
    ref = ref_activation(x, name, **params)
    # Computed in double and rounded once: half an ulp of the result, plus a little for the
    # library functions (erf, expm1, log1p) differing by an ulp of double.  gelu_tanh is
    # 0.5 x (1 + tanh(..)) in Keras's own form, which cancels for x << 0: there the error
    # is bounded by double rounding of the terms, ~1e-16 |x|, not by the tiny result.
    mag = np.abs(ref) + (np.abs(x) * 1e-9 if name == "gelu_tanh" else 0)
    assert_close(y, ref, mag, rtol=1.2e-7, atol=1e-37, what=f"activation {name}")
    assert_unchanged([x], copies, name)


RELU_PARAMS = [dict(alpha=0.0, max_value=6.0, threshold=0.0), dict(alpha=0.0, max_value=2.5),
               dict(alpha=0.1), dict(alpha=0.1, max_value=4.0), dict(threshold=0.5),
               dict(threshold=-0.5), dict(alpha=0.2, threshold=1.0, max_value=3.0),
               dict(alpha=0.2, threshold=-1.0)]


@pytest.mark.parametrize("params", RELU_PARAMS, ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()))
def test_relu_parameters(params):
    x = _inputs("relu").astype(np.float32)
    y = np.empty_like(x)
    K.activation(x, y, K.ACTIVATION_CODES["relu"], **params)
    ref = ref_activation(x, "relu", **params)
    assert_close(y, ref, rtol=1.2e-7, atol=1e-37, what=f"relu {params}")


def test_activation_in_place():
    x = _inputs("swish").astype(np.float32)
    for run in (K.activation_scalar, K.activation):
        want = np.empty_like(x)
        run(x, want, K.ACTIVATION_CODES["swish"])
        y = x.copy()
        run(y, y, K.ACTIVATION_CODES["swish"])
        assert np.array_equal(y, want)


def test_activation_validation():
    x = np.ones(5, np.float32)
    with pytest.raises(K.KernelShapeError):
        K.activation(x, np.empty(4, np.float32), 0)
    with pytest.raises(K.KernelShapeError):
        K.activation(x, np.empty(5, np.float32), len(K.ACTIVATION_CODES))
    with pytest.raises(K.KernelShapeError):
        K.activation(x, np.empty(5, np.float32), -1)
    K.activation(np.empty(0, np.float32), np.empty(0, np.float32), 0)   # empty is a no-op
