"""Fine-tuning as in the second phase of Keras's transfer-learning guide: unfreeze the top
of a pretrained base (open input size), train with a small learning rate, the frozen part
through the feature cache; BatchNormalization on batch statistics; what edgecore cannot
train is refused at compile, naming the layer."""
import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES, REPO

MOBILENET = REPO / "weights/pretrained/mobilenet_v2_imagenet.h5"  # input (None, None, None, 3)


def data(n, shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n,) + shape).astype(np.float32), rng.integers(0, classes, n)


@pytest.fixture(scope="module")
def base():
    return ec.load(MOBILENET)


def test_the_bundled_backbone_fine_tunes_its_top_block_with_an_open_input(base, tmp_path):
    model = ec.transfer.new_head(base, classes=4)
    assert model.input_shape == (None, None, None, 3)
    for layer in model.layers:
        if layer.name.startswith("block_16") or layer.name.startswith("Conv_1"):
            layer.trainable = True
    model.compile(optimizer=ec.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    setup = model.trainer.setup
    assert {layer.name for layer in setup.trained} == {
        "block_16_expand", "block_16_expand_BN", "block_16_depthwise", "block_16_depthwise_BN",
        "block_16_project", "block_16_project_BN", "Conv_1", "Conv_1_bn", "head"}
    assert setup.prefix.nodes and setup.cacheable
    x, y = data(24, (64, 64, 3), 4)
    frozen = {layer.name: layer.get_weights() for layer in model.layers
              if layer.name.startswith("block_15")}
    calls = []
    original = model.trainer.boundary_of
    model.trainer.boundary_of = lambda inputs: calls.append(len(inputs[0])) or original(inputs)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert sum(calls) == 24  # the frozen blocks ran once per sample: cached
    assert history.history["loss"][-1] < history.history["loss"][0]
    for name, weights in frozen.items():
        for a, b in zip(model.get_layer(name).get_weights(), weights):
            np.testing.assert_array_equal(a, b)
    moved = model.get_layer("block_16_project_BN").get_weights()
    loaded = base.get_layer("block_16_project_BN").get_weights()
    assert not np.array_equal(moved[2], loaded[2])  # moving mean: batch statistics in fit
    path = tmp_path / "fine_tuned.h5"
    model.save(path)
    again = ec.load(path)
    np.testing.assert_allclose(again.predict(x[:4]), model.predict(x[:4]), atol=1e-6)
    assert again.predict(np.zeros((1, 96, 80, 3), np.float32)).shape == (1, 4)


def test_freeze_base_false_trains_everything(base):
    model = ec.transfer.new_head(base, classes=3, freeze_base=False)
    model.compile(optimizer=ec.optimizers.SGD(1e-4), loss="sparse_categorical_crossentropy")
    prefix = model.trainer.setup.prefix.nodes  # only the input Rescaling stays frozen
    assert [node.layer.class_name for node in prefix] == ["Rescaling"]
    x, y = data(4, (32, 32, 3), 3)
    before = model.get_layer("Conv1").get_weights()[0].copy()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert not np.array_equal(model.get_layer("Conv1").get_weights()[0], before)


def test_the_feature_cache_stays_exact_with_batch_statistics_after_it():
    # train_bn_last_block: a frozen stem, then a block whose BatchNormalizations train on
    # batch statistics.  The cache holds the stem's output; the block runs every step.
    ref = np.load(FIXTURES / "train_bn_last_block.k3.npz")
    x = ref["train/x"].reshape((-1,) + ref["train/x"].shape[2:])
    y = ref["train/y"].reshape(-1)
    results = []
    for cache in (True, False):
        ec.utils.set_random_seed(3)
        model = ec.load(FIXTURES / "train_bn_last_block.k3.h5")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        assert model.trainer.setup.cacheable
        history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, feature_cache=cache)
        results.append((history.history, model.predict(x), model.get_weights()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    for a, b in zip(results[0][2], results[1][2]):
        np.testing.assert_array_equal(a, b)


def test_a_model_compiled_again_after_training_keeps_the_trained_values():
    model = ec.load(FIXTURES / "train_bn_last_block.k3.h5")
    model.compile(optimizer=ec.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    ref = np.load(FIXTURES / "train_bn_last_block.k3.npz")
    model.fit(ref["train/x"][0], ref["train/y"][0], epochs=2, verbose=0)
    trained = model.get_weights()
    predicted = model.predict(ref["train/xv"])
    for layer in model.layers:  # freeze everything but the head: the block leaves the
        layer.trainable = layer.name == "head"  # live set and is packed (BN folded)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    for a, b in zip(model.get_weights(), trained):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(model.predict(ref["train/xv"]), predicted, atol=1e-6)


def test_what_cannot_train_is_refused_at_compile_naming_the_layer():
    model = ec.load(FIXTURES / "gaussian_noise.k3.h5")  # GaussianNoise is active in fit
    with pytest.raises(ec.UnsupportedLayerError) as info:
        model.compile(optimizer="sgd", loss="mse")
    assert "GaussianNoise" in str(info.value) and str(FIXTURES / "gaussian_noise.k3.h5") in str(info.value)
    shared = ec.load(FIXTURES / "graph_shared_dense_twice.k3.h5")
    with pytest.raises(ec.UnsupportedLayerError, match="called more than once"):
        shared.compile(optimizer="sgd", loss="mse")
