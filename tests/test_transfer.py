"""edgecore.transfer.new_head: a new classification head on a loaded model, trained on the
device and saved as a Keras file."""
import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES, REPO

MOBILENET = REPO / "weights/pretrained/mobilenet_v2_imagenet.h5"


def test_new_head_replaces_the_classifier_and_freezes_the_base():
    base = ec.load(MOBILENET)
    model = ec.transfer.new_head(base, classes=7, seed=0)
    assert model.output_shape == (None, 7)
    assert model.layers[-1].name == "head" and model.layers[-1].trainable
    assert not any(layer.trainable for layer in model.layers[:-1] if layer.variables())
    assert "predictions" not in [layer.name for layer in model.layers]
    # The base computes what it computed before: the pooled features are unchanged.
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    kernel, bias = model.get_layer("head").get_weights()
    features = np.log(model.predict(x))  # softmax(f @ k + b) up to a constant per row
    limit = np.sqrt(6 / (1280 + 7))
    assert kernel.shape == (1280, 7) and np.abs(kernel).max() <= limit and not bias.any()
    assert np.isfinite(features).all()


def test_new_head_on_a_feature_map_adds_global_pooling():
    base = ec.load(FIXTURES / "resnet_small.k3.h5")
    conv = [l.name for l in base.layers if l.class_name == "Add"][-1]
    model = ec.transfer.new_head(base, classes=3, at=conv, dropout=0.3)
    classes = [l.class_name for l in model.layers[-3:]]
    assert classes == ["GlobalAveragePooling2D", "Dropout", "Dense"]


def test_trained_head_saves_to_a_file_that_loads_and_predicts_the_same(tmp_path):
    ec.utils.set_random_seed(1)
    model = ec.transfer.new_head(ec.load(FIXTURES / "train_transfer_frozen_base.k3.h5"),
                                 classes=3, seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    path = tmp_path / "mine.h5"
    model.save(path)
    np.testing.assert_array_equal(ec.load(path).predict(x), model.predict(x))


def test_new_head_refuses_a_bad_attach_point():
    with pytest.raises(ValueError, match="no layer named"):
        ec.transfer.new_head(ec.load(MOBILENET), classes=2, at="nope")


def test_resize_images_keeps_uint8_and_makes_rgb():
    gray = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    out = ec.utils.resize_images(gray, 8)
    assert out.shape == (2, 8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    # Half-pixel bilinear: a constant image stays constant, corners keep their values.
    assert (ec.utils.resize_images(np.full((1, 5, 3, 3), 7.0), (9, 4)) == 7.0).all()
    assert out[0, 0, 0, 0] == gray[0, 0, 0, 0] and out[0, -1, -1, 0] == gray[0, -1, -1, 0]


def test_the_demo_runs_end_to_end(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "edgecore", "demo", "--epochs", "1",
                           "--size", "32", "--verbose", "0", "--out", str(tmp_path / "d.h5"),
                           "--model", str(MOBILENET),
                           "--data", str(REPO / "weights/datasets/fashion_mnist_small.npz")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and "identical predictions" in proc.stdout
    accuracy = float(proc.stdout.split("test accuracy ")[1].split(" %")[0])
    assert accuracy > 50  # one epoch at 32x32 already learns the classes well above chance
