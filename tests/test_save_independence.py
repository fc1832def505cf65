"""A saved model is the model in memory, whatever happens to the file it came from.

edgecore keeps frozen weights packed (BatchNormalization folded in) and reads their Keras
form from the model file when it needs it (save, compile, get_weights).  So: a save makes
the written file the model's source (the old one may then go); before any save, a source
file replaced or modified after loading is detected (device, inode, size, mtime) and
refused with a clear error instead of silently mixing two models; saving over the source
itself works in every flavour.
"""
import shutil

import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES

FLAVOURS = ["mobilenet_v3_small.k2.h5", "mobilenet_v3_small.k3.h5", "mobilenet_v2.keras",
            "train_mobilenet_v2_finetune.k2.h5"]


def _x(model, seed=0):
    shape = tuple(d or 32 for d in model.input_shape[1:])
    return np.random.default_rng(seed).uniform(-1, 1, (2,) + shape).astype(np.float32)


def _same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("name", FLAVOURS)
def test_saving_over_the_source_keeps_everything_working(name, tmp_path):
    source = tmp_path / name
    shutil.copy(FIXTURES / name, source)
    model = ec.load(source)
    x = _x(model)
    weights, predicted = model.get_weights(), model.predict(x)
    target = source if name.endswith(".h5") else tmp_path / "saved.h5"
    model.save(target)
    if target != source:
        source.unlink()  # the .keras source is gone: the model lives on from its save
    _same(model.get_weights(), weights)
    np.testing.assert_array_equal(model.predict(x), predicted)
    model.save(tmp_path / "again.h5")  # and saves again
    _same(ec.load(tmp_path / "again.h5").get_weights(), weights)
    model.compile(optimizer=ec.optimizers.SGD(1e-3), loss="mse")
    np.testing.assert_allclose(model.predict(x), predicted, atol=1e-5 * max(1, np.abs(predicted).max()))
    model.fit(x, predicted, epochs=1, verbose=0)
    model.save(target)  # the reloaded model folds what the compiled one runs unfolded
    now = model.predict(x)
    np.testing.assert_allclose(ec.load(target).predict(x), now, atol=1e-5 * max(1, np.abs(now).max()))


def test_a_source_replaced_before_any_save_is_refused_clearly(tmp_path):
    source = tmp_path / "model.h5"
    shutil.copy(FIXTURES / "mobilenet_v3_small.k3.h5", source)
    model = ec.load(source)
    x = _x(model)
    predicted = model.predict(x)
    shutil.copy(FIXTURES / "mobilenet_v3_small.k2.h5", tmp_path / "other.h5")
    (tmp_path / "other.h5").replace(source)  # an updated backbone lands at the same path
    with pytest.raises(ec.ModelFormatError, match="replaced or modified after the model was loaded"):
        model.save(tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()
    with pytest.raises(ec.ModelFormatError, match=str(source)):
        model.get_weights()
    np.testing.assert_array_equal(model.predict(x), predicted)  # inference is unaffected


def test_a_source_modified_in_place_is_refused(tmp_path):
    source = tmp_path / "model.h5"
    shutil.copy(FIXTURES / "resnet_small.k3.h5", source)
    model = ec.load(source)
    with open(source, "r+b") as f:
        f.seek(0, 2)
        f.write(b"\0")  # any write changes size or mtime
    with pytest.raises(ec.ModelFormatError, match="replaced or modified"):
        model.compile(optimizer="sgd", loss="mse")


def test_after_a_save_the_old_source_may_change(tmp_path):
    source = tmp_path / "model.h5"
    shutil.copy(FIXTURES / "mobilenet_v3_small.k3.h5", source)
    model = ec.transfer.new_head(ec.load(source), classes=3)
    x = _x(model)
    model.compile(optimizer=ec.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, np.array([0, 2]), epochs=2, verbose=0)
    model.save(tmp_path / "trained.h5")
    weights, predicted = model.get_weights(), model.predict(x)
    source.unlink()
    _same(model.get_weights(), weights)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")  # re-packs
    np.testing.assert_allclose(model.predict(x), predicted, atol=1e-6)
    assert not model.store.memory  # the trained head lives in the saved file now


def test_checkpoints_become_the_source_too(tmp_path):
    source = tmp_path / "model.h5"
    shutil.copy(FIXTURES / "train_transfer_frozen_base.k3.h5", source)
    model = ec.load(source)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = _x(model)
    model.fit(x, np.array([0, 1]), epochs=2, verbose=0, checkpoint=tmp_path / "ckpt.h5")
    source.unlink()
    weights = model.get_weights()
    model.save(tmp_path / "final.h5")
    _same(ec.load(tmp_path / "final.h5").get_weights(), weights)
