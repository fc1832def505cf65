"""ec.load(path, input_channels=1): the RGB model's first Conv2D folded over its input
channels, preprocessing included, gives the RGB model's output on the grey image
replicated to 3 channels (issue 14, point 4)."""
import os
import subprocess

import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES, REPO

BACKBONE = REPO / "weights" / "pretrained" / "mobilenet_v2_imagenet.h5"
GRAY_CASES = {  # case -> the fold it must take (edgecore/grayscale.py)
    "gray_rescaling_conv_same": "ones",
    "gray_rescaling_pad_conv": "offset",
    "gray_normalization_conv_valid": "bias",
    "gray_rescaling_normalization_conv": "ones",
    "gray_conv_same": "offset",
}
FLAVOURS = ("k3.h5", "keras", "k2.h5")


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="module")
def backbone_pair():
    return ec.load(BACKBONE), ec.load(BACKBONE, input_channels=1)


def test_bundled_backbone_grey_equals_rgb_replicated(backbone_pair):
    rgb, grey = backbone_pair
    assert grey.input_shape == (None, None, None, 1)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 80, 1)).astype(np.float32)
    # The folded kernel sums three weights before multiplying (one rounding where the RGB
    # model has three); through 52 layers that is ~1e-5 of the output scale.  The Keras
    # parity bound for this model (test_pretrained.py) is 1e-4.
    assert rel_err(grey.predict(x), rgb.predict(np.repeat(x, 3, axis=-1))) <= 5e-5


def test_bundled_backbone_on_real_photos(backbone_pair):
    rgb, grey = backbone_pair
    photos = np.load(REPO / "weights" / "pretrained" / "photos224_reference.npz")["x"][:3]
    g = np.round(photos.astype(np.float64) @ [0.299, 0.587, 0.114])[..., None].astype(np.float32)
    assert rel_err(grey.predict(g), rgb.predict(np.repeat(g, 3, axis=-1))) <= 1e-5


def test_first_layer_multiply_adds_measured_by_the_profiler(backbone_pair):
    """MobileNetV2's Conv1 reads [grey, 1] (its per-channel offsets meet the zero padding):
    2 input channels instead of 3, so two thirds of its multiply-adds."""
    rgb, grey = backbone_pair
    x = np.zeros((1, 96, 96, 1), np.float32)
    conv = lambda p: next(t for t in p.ops if t.layer == "Conv1")
    f_rgb = conv(rgb.profile(np.repeat(x, 3, -1), repeats=2, print_fn=False)).flops
    f_grey = conv(grey.profile(x, repeats=2, print_fn=False)).flops
    assert f_grey * 3 == f_rgb * 2


@pytest.mark.parametrize("case", sorted(GRAY_CASES))
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_fixture_grey_matches_keras_on_replicated_grey(case, flavour):
    path = FIXTURES / f"{case}.{flavour}"
    ref = np.load(FIXTURES / f"{case}.{'k2' if flavour == 'k2.h5' else 'k3'}.npz")
    grey = ec.load(path, input_channels=1)
    assert grey.grayscale_fold == GRAY_CASES[case]
    x = ref["gray/x"]
    assert x.shape[-1] == 1
    got = grey.predict(x)
    assert rel_err(got, ref["gray/y"]) <= 1e-5
    rgb = ec.load(path)
    assert rel_err(got, rgb.predict(np.repeat(x, 3, axis=-1))) <= 1e-5


def test_one_channel_fold_costs_a_third():
    """Where the fold is exact with one channel, the conv reads 1 of its 3 channels."""
    path = FIXTURES / "gray_normalization_conv_valid.k3.h5"
    x = np.zeros((1, 9, 7, 1), np.float32)
    f = lambda m, x: next(t for t in m.profile(x, repeats=2, print_fn=False).ops
                          if t.op == "conv2d").flops
    assert 3 * f(ec.load(path, input_channels=1), x) == f(ec.load(path), np.repeat(x, 3, -1))


def test_refuses_a_layer_it_cannot_fold():
    with pytest.raises(ec.errors.UnsupportedLayerError, match="input_channels=1"):
        ec.load(FIXTURES / "conv2d_groups2.k3.h5", input_channels=1)
    with pytest.raises(ValueError, match="input_channels"):
        ec.load(FIXTURES / "gray_conv_same.k3.h5", input_channels=2)


TRAIN_SCRIPT = """
import sys, numpy as np, edgecore as ec
path, out = sys.argv[1], sys.argv[2]
grey = ec.load(path, input_channels=1)
conv = next(l for l in grey.layers if l.class_name == "Conv2D")
before = conv.get_weights()[0].copy()
assert before.shape[2] == 2, before.shape  # [grey, ones]
x = np.random.default_rng(1).uniform(0, 255, (8, 9, 7, 1)).astype(np.float32)
y = grey.predict(x) * 0.5
grey.compile(optimizer=ec.optimizers.SGD(1e-7), loss="mse")
loss0 = grey.evaluate(x, y)
grey.fit(x, y, epochs=3, batch_size=4, verbose=0)
after = conv.get_weights()[0]
assert after.shape == before.shape and not np.array_equal(after, before)
assert grey.evaluate(x, y) < loss0
grey.save(out)
again = ec.load(out)
assert again.input_shape[-1] == 1
np.testing.assert_allclose(again.predict(x), grey.predict(x), rtol=1e-6, atol=1e-6)
print("trained")
"""


def test_trainable_first_conv_trains_the_folded_kernel(tmp_path):
    """In a fresh process: a heap corruption (as the feature-map loss once caused, see
    test_loss_feature_map.py) must not take the test session down."""
    import sys

    proc = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT,
                           str(FIXTURES / "gray_rescaling_conv_same.k3.h5"),
                           str(tmp_path / "grey.h5")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split()[-1:] == ["trained"], proc.stderr[-1500:]


def test_frozen_first_conv_fits_and_saves_one_channel(tmp_path):
    """The usual transfer setup on a grey backbone: a new head on the frozen, folded base."""
    grey = ec.load(BACKBONE, input_channels=1)
    model = ec.transfer.new_head(grey, classes=3, seed=0)
    x = np.random.default_rng(3).uniform(0, 255, (8, 48, 48, 1)).astype(np.float32)
    y = np.arange(8) % 3
    model.compile(optimizer=ec.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=3, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "grey_head.h5")
    again = ec.load(tmp_path / "grey_head.h5")
    assert again.input_shape == (None, None, None, 1)
    np.testing.assert_allclose(again.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)


@pytest.mark.keras
def test_saved_grey_model_opens_in_keras_with_one_channel(keras_py, tmp_path):
    x = np.random.default_rng(2).uniform(0, 255, (2, 40, 48, 1)).astype(np.float32)
    for name, path in (("backbone", BACKBONE),
                       ("normalization", FIXTURES / "gray_normalization_conv_valid.keras"),
                       ("offset", FIXTURES / "gray_rescaling_pad_conv.k2.h5")):
        grey = ec.load(path, input_channels=1)
        xi = x if name == "backbone" else x[:, :9, :7]
        grey.save(tmp_path / f"{name}.h5")
        np.save(tmp_path / f"{name}_x.npy", xi)
        np.save(tmp_path / f"{name}_ours.npy", grey.predict(xi))
    script = (
        "import sys, numpy as np, keras\n"
        "d = sys.argv[1]\n"
        "for name in ('backbone', 'normalization', 'offset'):\n"
        "    m = keras.models.load_model(f'{d}/{name}.h5', compile=False)\n"
        "    assert m.input_shape[-1] == 1, m.input_shape\n"
        "    np.save(f'{d}/{name}_keras.npy', m.predict(np.load(f'{d}/{name}_x.npy'), verbose=0))\n")
    proc = subprocess.run([keras_py, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("backbone", "normalization", "offset"):
        ours, theirs = np.load(tmp_path / f"{name}_ours.npy"), np.load(tmp_path / f"{name}_keras.npy")
        assert rel_err(ours, theirs) <= 1e-5, name
