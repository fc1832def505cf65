"""Keras's augmentation layers in fit (issue 14, point 5): the parameter distributions and
the transforms, against Keras 3.15 itself (keras-marked: runs Keras in its own venv).

  * distributions: 4000 draws of each layer's per-sample parameters by edgecore
    (train/augment.py) and by Keras's get_random_transformation, compared with a two-sample
    Kolmogorov-Smirnov statistic (critical value at alpha = 1e-3: 1.95 * sqrt(2 / 4000) =
    0.044) and, for RandomFlip, the flip frequency (4 standard errors);
  * transforms: Keras's own drawn transformation applied by Keras (transform_images) and by
    edgecore's kernels, compared within 1e-4 of the value range.
"""
import json
import os
import subprocess

import numpy as np
import pytest

import edgecore as ec
from edgecore.train.augment import _Transform
from fixtures import FIXTURES

N_DRAWS = 4000
KS_CRITICAL = 1.95 * np.sqrt(2.0 / N_DRAWS)

# (class, config) cases: the fixture's layers plus the other modes and fill modes.
EXTRA = [
    ("RandomFlip", {"mode": "horizontal"}),
    ("RandomFlip", {"mode": "vertical"}),
    ("RandomRotation", {"factor": [-0.1, 0.3], "fill_mode": "constant", "fill_value": 9.0,
                        "interpolation": "nearest"}),
    ("RandomRotation", {"factor": 0.5, "fill_mode": "nearest"}),
    ("RandomZoom", {"height_factor": [-0.4, 0.2], "width_factor": None, "fill_mode": "reflect"}),
    ("RandomTranslation", {"height_factor": 0.3, "width_factor": [-0.2, 0.0],
                           "fill_mode": "wrap", "interpolation": "nearest"}),
    ("RandomContrast", {"factor": [0.2, 0.6], "value_range": [0, 255]}),
    ("RandomContrast", {"factor": 0.3}),  # a bare float: Keras 3 reads it as (0, 0.3)
    ("RandomZoom", {"height_factor": 0.3, "width_factor": 0.1, "interpolation": "nearest",
                    "fill_mode": "constant"}),
    ("RandomBrightness", {"factor": 0.2, "value_range": [0, 255]}),
    ("RandomBrightness", {"factor": [-0.3, 0.1], "value_range": [-1, 1]}),
]

KERAS_SCRIPT = r"""
import json, sys, numpy as np, keras
d = sys.argv[1]
cases = json.load(open(d + "/cases.json"))
x = np.load(d + "/x.npy")
out = {}
for i, (cls, cfg) in enumerate(cases):
    layer = getattr(keras.layers, cls).from_config(cfg)
    keras.utils.set_random_seed(i)
    draws = layer.get_random_transformation(np.zeros((%d, 12, 10, 3), "float32"), training=True)
    t = layer.get_random_transformation(x, training=True)
    y = np.asarray(layer.transform_images(keras.ops.convert_to_tensor(x), t, training=True))
    def arr(v):
        return np.asarray(v, np.float64)
    keys = {"RandomFlip": ["flips"], "RandomRotation": ["angle"],
            "RandomZoom": ["width_zoom", "height_zoom"], "RandomTranslation": ["translations"],
            "RandomContrast": ["contrast_factor"], "RandomBrightness": ["rgb_delta"]}[cls]
    for k in keys:
        np.save(f"{d}/{i}_draws_{k}.npy", arr(draws[k]))
        np.save(f"{d}/{i}_t_{k}.npy", arr(t[k]))
    np.save(f"{d}/{i}_y.npy", y)
print("ok")
""" % N_DRAWS


def _cases():
    model = ec.load(FIXTURES / "aug_random_chain.k3.h5")
    from edgecore.layers.augmentation import RandomAugmentation

    cases = [(l.class_name, {k: v for k, v in l.config.items() if k not in ("dtype", "seed")})
             for l in model.layers if isinstance(l, RandomAugmentation)]
    return cases + EXTRA


class _Stub:
    """What _Transform reads of a layer."""

    def __init__(self, cls, cfg):
        self.class_name, self.name, self.config = cls, cls.lower(), cfg

    def unsupported(self, reason):
        return ec.errors.UnsupportedLayerError(reason, layer=self.name)


def _ks(a, b):
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, "right") / a.size
                               - np.searchsorted(b, grid, "right") / b.size)))


def _ours_from_keras(cls, t):
    """Keras's transformation as edgecore's per-sample parameters."""
    if cls == "RandomFlip":
        return t["flips"].reshape(-1) > 0.5
    if cls == "RandomRotation":
        return t["angle"].reshape(-1)
    if cls == "RandomZoom":
        return np.stack([t["width_zoom"].reshape(-1), t["height_zoom"].reshape(-1)], axis=1)
    if cls == "RandomTranslation":
        return t["translations"].reshape(-1, 2)
    if cls == "RandomContrast":
        return t["contrast_factor"].reshape(-1)
    return t["rgb_delta"].reshape(-1)


@pytest.fixture(scope="module")
def keras_runs(keras_py, tmp_path_factory):
    d = tmp_path_factory.mktemp("augment")
    cases = _cases()
    x = np.random.default_rng(0).uniform(0, 255, (16, 12, 10, 3)).astype(np.float32)
    np.save(d / "x.npy", x)
    (d / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run([keras_py, "-c", KERAS_SCRIPT, str(d)], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d, cases, x


def _load(d, i, prefix, cls):
    keys = {"RandomFlip": ["flips"], "RandomRotation": ["angle"],
            "RandomZoom": ["width_zoom", "height_zoom"], "RandomTranslation": ["translations"],
            "RandomContrast": ["contrast_factor"], "RandomBrightness": ["rgb_delta"]}[cls]
    return {k: np.load(d / f"{i}_{prefix}_{k}.npy") for k in keys}


@pytest.mark.keras
def test_parameter_distributions_match_keras(keras_runs):
    d, cases, _ = keras_runs
    rng = np.random.default_rng(123)
    for i, (cls, cfg) in enumerate(cases):
        ours = _Transform(_Stub(cls, cfg)).draw(rng, N_DRAWS, 12, 10)
        theirs = _ours_from_keras(cls, _load(d, i, "draws", cls))
        if cls == "RandomFlip":
            p_ours, p_theirs = ours.mean(), theirs.mean()
            assert abs(p_ours - p_theirs) <= 4 * np.sqrt(0.25 * 2 / N_DRAWS), (cfg, p_ours, p_theirs)
            continue
        ours = ours.reshape(N_DRAWS, -1)
        theirs = theirs.reshape(N_DRAWS, -1)
        for j in range(ours.shape[1]):
            stat = _ks(ours[:, j], theirs[:, j])
            assert stat <= KS_CRITICAL, (cls, cfg, j, stat)
        # and the same support: Keras's factor semantics, not just the same shape
        assert np.allclose([ours.min(), ours.max()], [theirs.min(), theirs.max()],
                           atol=0.02 * (theirs.max() - theirs.min() + 1e-9)), (cls, cfg)


@pytest.mark.keras
def test_transforms_match_keras_for_kerass_own_draws(keras_runs):
    d, cases, x = keras_runs
    for i, (cls, cfg) in enumerate(cases):
        t = _Transform(_Stub(cls, cfg))
        params = _ours_from_keras(cls, _load(d, i, "t", cls))
        if cls == "RandomTranslation":
            params = params.astype(np.float64)
        y = np.empty_like(x)
        t.apply(x, y, params)
        want = np.load(d / f"{i}_y.npy")
        scale = 255.0 if cls != "RandomBrightness" else float(np.ptp(cfg["value_range"]))
        err = np.abs(y - want)
        # nearest interpolation may round a coordinate at a tie differently (float32 vs
        # TF's float32 with another operation order): allow 0.5% of pixels to differ there
        if cfg.get("interpolation") == "nearest":
            assert np.mean(err <= 1e-4 * scale) >= 0.995, (cls, cfg, float(np.mean(err <= 1e-4 * scale)))
        else:
            assert err.max() <= 1e-4 * scale, (cls, cfg, float(err.max()))


def test_fit_augments_with_the_models_own_layers_and_says_the_cache_is_bypassed(capsys):
    base = ec.load(FIXTURES / "aug_random_chain.k3.h5")
    model = ec.transfer.new_head(base, classes=3, seed=0)
    x = np.random.default_rng(0).uniform(0, 255, (16, 12, 10, 3)).astype(np.float32)
    y = np.arange(16) % 3
    model.compile(optimizer=ec.optimizers.SGD(1e-4), loss="sparse_categorical_crossentropy")
    ec.utils.set_random_seed(7)
    h1 = model.fit(x, y, epochs=2, batch_size=8, verbose=2, shuffle=False)
    printed = capsys.readouterr().out
    assert "Feature cache bypassed" in printed and "RandomFlip 'random_flip'" in printed
    assert "Caching the frozen layers' output" not in printed
    # seeded: the same seed gives the same run; another seed another one
    again = ec.transfer.new_head(base, classes=3, seed=0)
    again.compile(optimizer=ec.optimizers.SGD(1e-4), loss="sparse_categorical_crossentropy")
    ec.utils.set_random_seed(7)
    h2 = again.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    assert h1.history["loss"] == h2.history["loss"]
    other = ec.transfer.new_head(base, classes=3, seed=0)
    other.compile(optimizer=ec.optimizers.SGD(1e-4), loss="sparse_categorical_crossentropy")
    ec.utils.set_random_seed(8)
    h3 = other.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    assert h3.history["loss"] != h1.history["loss"]


def test_without_augmentation_the_cache_is_used(capsys):
    base = ec.load(FIXTURES / "conv2d_3x3_same_s1_d1.k3.h5")
    model = ec.transfer.new_head(base, classes=3, seed=0)
    x = np.random.default_rng(0).standard_normal((8, 9, 7, 5)).astype(np.float32)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, verbose=2)
    printed = capsys.readouterr().out
    assert "Caching the frozen layers' output" in printed and "bypassed" not in printed
