"""get_weights / set_weights on Model and Layer, in Keras's order and shapes: new values
reach predict, fit, save and memory_plan (frozen layers re-packed and re-folded with
their BatchNormalization in place; live layers in the trainer's params)."""
import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES

V3 = FIXTURES / "mobilenet_v3_small.k3.h5"   # squeeze-excite, hard-swish, folded BNs
RESNET = FIXTURES / "resnet_small.k3.h5"


def _x(model, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (3,) + model.input_shape[1:]).astype(np.float32)


def _perturbed(weights, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for w in weights:
        w = np.asarray(w, np.float32)
        # positive factors keep BN variances positive
        out.append((w * rng.uniform(0.9, 1.1, w.shape)).astype(np.float32))
    return out


def _reference(tmp_path, weights):
    """The model with these weights as Keras would have it: set, saved, loaded anew."""
    model = ec.load(V3)
    model.set_weights(weights)
    model.save(tmp_path / "reference.h5")
    return ec.load(tmp_path / "reference.h5")


def test_set_weights_of_another_model_predicts_like_it(tmp_path):
    a, b = ec.load(V3), ec.load(FIXTURES / "mobilenet_v3_small.k2.h5")
    new = _perturbed(a.get_weights())
    b.set_weights(new)
    x = _x(a)
    a.set_weights(b.get_weights())
    for got, want in zip(a.get_weights(), new):
        np.testing.assert_array_equal(got, want)
    reference = _reference(tmp_path, new)
    scale = max(1.0, float(np.abs(reference.predict(x)).max()))
    assert np.abs(a.predict(x) - reference.predict(x)).max() <= 1e-5 * scale
    assert np.abs(a.predict(x) - b.predict(x)).max() <= 1e-4 * scale  # k2 vs k3 rounding
    a.save(tmp_path / "a.h5")
    np.testing.assert_array_equal(ec.load(tmp_path / "a.h5").predict(x), a.predict(x))


def test_a_layer_set_refolds_its_batchnormalization():
    model = ec.load(RESNET)
    plain = ec.load(RESNET, _rewrites=())  # nothing folded: the reference
    x = _x(model)
    bn = next(l for l in model.layers if l.class_name == "BatchNormalization")
    assert any(n.folded_bn is bn for n in model.flat.nodes)  # it is folded into its conv
    values = _perturbed(bn.get_weights(), 2)
    bn.set_weights(values)
    plain.get_layer(bn.name).set_weights(values)
    np.testing.assert_allclose(model.predict(x), plain.predict(x), atol=1e-5)
    for got, want in zip(bn.get_weights(), values):
        np.testing.assert_array_equal(got, want)


def test_set_weights_on_a_compiled_model_reaches_the_trained_and_the_frozen_layers():
    model = ec.load(FIXTURES / "train_bn_last_block.k3.h5")
    model.compile(optimizer=ec.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    twin = ec.load(FIXTURES / "train_bn_last_block.k3.h5")
    twin.compile(optimizer=ec.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    new = _perturbed(model.get_weights(), 3)
    model.set_weights(new)  # the stem is frozen (packed, folded), the block is live
    twin.set_weights(new)
    ref = np.load(FIXTURES / "train_bn_last_block.k3.npz")
    x, y = ref["train/x"][0], ref["train/y"][0]
    np.testing.assert_array_equal(model.predict(x), twin.predict(x))
    model.fit(x, y, epochs=2, verbose=0, shuffle=False)
    twin.fit(x, y, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
    fresh = ec.load(FIXTURES / "train_bn_last_block.k3.h5")
    fresh.set_weights(new)
    fresh.compile(optimizer=ec.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    fresh.fit(x, y, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_memory_plan_is_unchanged_by_set_weights():
    model = ec.load(V3)
    before = model.memory_plan(print_fn=lambda s: None)
    model.set_weights(_perturbed(model.get_weights()))
    after = model.memory_plan(print_fn=lambda s: None)
    assert (before.arena_bytes, before.weights_bytes) == (after.arena_bytes, after.weights_bytes)


def test_wrong_weights_are_refused_naming_the_layer_and_change_nothing():
    model = ec.load(RESNET)
    x = _x(model)
    predicted, weights = model.predict(x), model.get_weights()
    conv = next(l for l in model.layers if l.class_name == "Conv2D")
    with pytest.raises(ec.ShapeError, match=conv.name):
        conv.set_weights([w[..., :1] for w in conv.get_weights()])
    with pytest.raises(ec.ShapeError, match="arrays"):
        conv.set_weights(conv.get_weights() * 2)
    bad = list(weights)
    bad[-1] = bad[-1][:1]
    with pytest.raises(ec.ShapeError):
        model.set_weights(bad)
    with pytest.raises(ec.ShapeError, match="expects"):
        model.set_weights(weights[:-1])
    np.testing.assert_array_equal(model.predict(x), predicted)
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
