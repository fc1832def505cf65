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
    names = list(photos["names"])
    probs = model.predict(photos["x"][[names.index("coffee.png"), names.index("orange.jpg")]])
    decoded = ec.utils.decode_predictions(probs, top=3)
    assert [d[0][1] for d in decoded] == ["espresso", "orange"]
    assert [d[0][0] for d in decoded] == ["n07920052", "n07747607"]
    for rows, p in zip(decoded, probs):
        assert [score for _, _, score in rows] == sorted(p, reverse=True)[:3]


def test_decode_predictions_follows_keras():
    probs = np.zeros((2, 1000), np.float32)
    probs[0, [0, 2, 999]] = (0.1, 0.7, 0.2)
    probs[1, 1] = 1.0
    decoded = ec.utils.decode_predictions(probs, top=2)
    assert decoded[0] == [("n01484850", "great_white_shark", np.float32(0.7)),
                          ("n15075141", "toilet_tissue", np.float32(0.2))]
    assert decoded[1][0][:2] == ("n01443537", "goldfish") and len(decoded[1]) == 2
    for bad in (np.zeros((2, 10)), np.zeros(1000)):
        with pytest.raises(ValueError, match="1000"):
            ec.utils.decode_predictions(bad)
