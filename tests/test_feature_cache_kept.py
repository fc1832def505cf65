"""model.cache_features: the frozen prefix's output kept across fit/evaluate calls (and
across processes through a .npy file), so a later call trains only the head."""
import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES

BASE = FIXTURES / "train_transfer_frozen_base.k3.h5"


def _model(seed=1):
    ec.utils.set_random_seed(seed)
    model = ec.transfer.new_head(ec.load(BASE), classes=3, seed=seed)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((24, 32, 32, 3)).astype(np.float32), rng.integers(0, 3, 24)


def test_fit_on_kept_features_matches_fit_on_images():
    x, y = _data()
    a, b = _model(), _model()
    features = b.cache_features(x, batch_size=8)
    assert features.nbytes == 24 * 4 * int(np.prod(features.caches[0].shape[1:]))
    for _ in range(2):  # two "rounds": the second reuses the features
        ha = a.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
        hb = b.fit(features, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
        np.testing.assert_allclose(hb.history["loss"], ha.history["loss"], rtol=1e-6)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wb, wa, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.evaluate(features, y), a.evaluate(x, y), rtol=1e-6)


def test_kept_features_are_refused_once_stale():
    x, y = _data()
    model = _model()
    features = model.cache_features(x)
    head = model.layers[-1]
    head.set_weights([w * 0.5 for w in head.get_weights()])  # the head: still valid
    model.fit(features, y, epochs=1, verbose=0)
    frozen = model.layers[1]  # the nested, frozen MobileNetV2
    assert frozen.class_name == "Functional" and not frozen.trainable
    frozen.set_weights(frozen.get_weights())
    with pytest.raises(ValueError, match="frozen weights changed"):
        model.fit(features, y, epochs=1, verbose=0)
    other = _model()
    with pytest.raises(ValueError, match="another model"):
        other.evaluate(model.cache_features(x), y)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(model.cache_features(x), y, validation_data=(x, y))


def test_kept_features_file_is_reused_and_checked(tmp_path):
    x, y = _data()
    path = tmp_path / "features.npy"
    first = _model().cache_features(x, path=path)
    assert path.exists() and not list(tmp_path.glob(".*tmp"))
    model = _model()
    model.trainer.boundary_of = None  # the prefix must not run again
    second = model.cache_features(x, path=path)
    np.testing.assert_array_equal(second.caches[0].array, first.caches[0].array)
    model.fit(second, y, epochs=1, verbose=0)
    with pytest.raises(ec.errors.ShapeError, match="features.npy"):
        _model().cache_features(x[:5], path=path)
    path.write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="not a feature cache"):
        _model().cache_features(x, path=path)
