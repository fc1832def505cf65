"""Real ImageNet weights against Keras's own outputs on real photos (no TensorFlow needed).

weights/pretrained/photos224_reference.npz holds the 21 photos as model inputs and the
probabilities Keras computed for them with this very file.
"""
from pathlib import Path

import numpy as np
import pytest

import edgecore as ec

PRETRAINED = Path(__file__).resolve().parent.parent / "weights" / "pretrained"


@pytest.fixture(scope="module")
def photos():
    return np.load(PRETRAINED / "photos224_reference.npz")


def test_mobilenet_v2_imagenet_matches_keras_on_real_photos(photos):
    model = ec.load(PRETRAINED / "mobilenet_v2_imagenet.h5")
    ref = photos["probs_mobilenet_v2"]
    got = model.predict(photos["x"].astype(np.float32), batch_size=8)
    assert got.shape == ref.shape and got.dtype == np.float32
    err = np.abs(got - ref).max()
    assert err <= 1e-4 * max(1.0, np.abs(ref).max()), err
    np.testing.assert_array_equal(got.argmax(axis=1), ref.argmax(axis=1))


def test_mobilenet_v2_top1_labels_are_the_photographed_objects(photos):
    model = ec.load(PRETRAINED / "mobilenet_v2_imagenet.h5")
    labels = [line.split("\t")[1].strip() for line in
              (PRETRAINED / "imagenet1k_labels.txt").read_text().splitlines()]
    names = list(photos["names"])
    probs = model.predict(photos["x"][[names.index("coffee.png"), names.index("orange.jpg")]])
    top1 = [labels[i] for i in probs.argmax(axis=1)]
    assert top1 == ["espresso", "orange"]
