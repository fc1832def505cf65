"""LayerNormalization (Keras 3 formula, rms_scaling quirk, gamma/beta optional) against the
float64 reference, including rows whose mean dwarfs their spread."""
import numpy as np
import pytest

from edgecore import _kernels as K
from reference.check import assert_close, assert_unchanged, frozen
from reference.normalization import layernorm as ref_layernorm
from reference.normalization import rms_normalization as ref_rms_normalization

SHAPES = [(1, 1), (5, 3), (7, 16), (3, 33), (56, 96), (2, 768)]


def _tol(x, gamma, beta):
    # The output is (x - mean) * inv * gamma + beta in float32: a few roundings of the
    # normalised value (inv is rounded once), plus beta's own.
    x = x.astype(np.float64)
    z = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-30)
    g = 1.0 if gamma is None else np.abs(gamma)
    b = 0.0 if beta is None else np.abs(beta)
    return np.abs(z) * g + b


# Keras creates no beta with rms_scaling, so that combination does not exist.
VARIANTS = [("gamma_beta", False), ("gamma", False), ("none", False), ("gamma", True),
            ("none", True)]


@pytest.mark.parametrize("affine, rms", VARIANTS, ids=[f"{a}{'_rms' if r else ''}" for a, r in VARIANTS])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_layernorm_matches_reference(shape, affine, rms):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    (x, gamma, beta), copies = frozen(rng.standard_normal(shape) * 3 + 1,
                                      rng.standard_normal(shape[1]), rng.standard_normal(shape[1]))
    g = gamma if affine != "none" else None
    b = beta if affine == "gamma_beta" else None
    y = np.full(shape, np.nan, np.float32)
    K.layernorm(x, y, g, b, epsilon=1e-3, mode=K.NORM_MODES["layer_rms_scaling" if rms else "layer"])
    ref = ref_layernorm(x, g, b, 1e-3, rms)
    mag = np.abs(ref) if rms else _tol(x, g, b)
    assert_close(y, ref, mag, rtol=5e-7, atol=1e-7, what=f"layernorm {shape} {affine} rms={rms}")
    assert_unchanged([x, gamma, beta], copies, "layernorm")


def test_layernorm_large_mean_does_not_cancel():
    """Rows of mean 1e4 and spread 1: Keras's x*inv - mean*inv would lose ~1e4 ulp."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((4, 64)) + 1e4).astype(np.float32)
    y = np.empty_like(x)
    K.layernorm(x, y, epsilon=1e-6)
    ref = ref_layernorm(x, epsilon=1e-6)
    assert_close(y, ref, np.abs(ref) + 1, rtol=2e-6, atol=0, what="large mean")


def test_layernorm_in_place():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((9, 24)).astype(np.float32)
    gamma, beta = rng.standard_normal(24).astype(np.float32), rng.standard_normal(24).astype(np.float32)
    y = np.empty_like(x)
    K.layernorm(x, y, gamma, beta)
    K.layernorm(x, x, gamma, beta)
    assert np.array_equal(x, y)


def test_layernorm_validation():
    x = np.ones((3, 4), np.float32)
    y = np.empty((3, 4), np.float32)
    v4 = np.ones(4, np.float32)
    bad = [
        lambda: K.layernorm(x, np.empty((3, 5), np.float32)),
        lambda: K.layernorm(x, y, np.ones(3, np.float32)),
        lambda: K.layernorm(x, y, v4, np.ones(5, np.float32)),
        lambda: K.layernorm(x, y, v4, v4, mode=K.NORM_MODES["layer_rms_scaling"]),
        lambda: K.layernorm(x, y, epsilon=-1.0),
        lambda: K.layernorm(np.ones((0, 4), np.float32), np.empty((0, 4), np.float32)),
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


@pytest.mark.parametrize("with_scale", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_rms_normalization_matches_reference(shape, with_scale):
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    (x, scale), copies = frozen(rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape[1]))
    y = np.empty(shape, np.float32)
    s = scale if with_scale else None
    K.layernorm(x, y, s, None, epsilon=1e-6, mode=K.NORM_MODES["rms"])
    ref = ref_rms_normalization(x, s, 1e-6)
    # A few roundings of x * inv * scale: bounded by the magnitude of the result.
    assert_close(y, ref, np.abs(ref), rtol=5e-7, atol=1e-7, what=f"rms_normalization {shape}")
    assert_unchanged([x, scale], copies, "rms_normalization")
