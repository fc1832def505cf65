"""The layers keras.applications defines in its own modules: ConvNeXt's LayerScale and
StochasticDepth, InceptionResNetV2's CustomScaleLayer.

Their forward passes and LayerScale's training are checked against Keras by the fixtures
(layer_scale*, stochastic_depth, custom_scale*, convnext_mini, inception_resnet_mini,
train_layer_scale: test_keras_parity.py, test_training_parity.py); here what those cannot
show: the refusals, the config checks, and what a save writes for Keras 3.
"""
import json

import h5py
import numpy as np
import pytest

import edgecore as ec
from badfiles import copy_fixture, edit_config, expect_error, layer_entry, reference_input
from fixtures import FIXTURES, inputs_outputs, reference


def test_stochastic_depth_is_the_identity_at_inference():
    model = ec.load(FIXTURES / "stochastic_depth.k3.h5")
    assert model.get_layer("stochastic_depth").identity_at_inference
    xs, ys = inputs_outputs(reference("stochastic_depth", "k3.h5"))
    # the conv's output is the model's output: Keras's, to round-off
    np.testing.assert_allclose(model.predict(xs[0]), ys[0], atol=1e-5)


@pytest.mark.parametrize("flavour", ["k3.h5", "keras", "k2.h5"])
def test_training_through_active_stochastic_depth_is_refused_at_compile(flavour):
    """Keras's fit drops whole samples' residual paths there (drop_path_rate > 0): refused
    at compile like GaussianNoise, naming the layer and the way out."""
    path = FIXTURES / f"convnext_mini.{flavour}"
    model = ec.load(path)
    with pytest.raises(ec.UnsupportedLayerError) as info:
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    text = str(info.value)
    assert "StochasticDepth" in text and "drop_path_rate=0" in text and str(path) in text
    assert info.value.layer.endswith("_stochastic_depth")


def test_stochastic_depth_at_rate_zero_trains():
    """train_layer_scale (Keras 3) holds a StochasticDepth(0.0): the identity in fit too."""
    model = ec.load(FIXTURES / "train_layer_scale.k3.h5")
    assert model.get_layer("stochastic_depth").rate == 0.0
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    ref = np.load(FIXTURES / "train_layer_scale.k3.npz")
    model.train_on_batch(ref["train/x"][0], ref["train/y"][0])


@pytest.mark.parametrize("case,class_name", [("layer_scale", "LayerScale"),
                                             ("custom_scale", "CustomScaleLayer"),
                                             ("stochastic_depth", "StochasticDepth")])
def test_a_same_named_class_from_another_module_is_refused(tmp_path, case, class_name):
    """A .keras file names each layer's module: a user's own LayerScale is not Keras's."""
    path = copy_fixture(tmp_path, case, "keras")

    def edit(config):
        entry = layer_entry(config, class_name)
        entry["module"], entry["registered_name"] = "my_project.layers", f"MyProject>{class_name}"
        return entry["config"]["name"]

    layer = edit_config(path, edit)
    expect_error(path, ec.UnsupportedLayerError, layer=layer, words=("my_project.layers", "custom"))


@pytest.mark.parametrize("flavour", ["k3.h5", "keras", "k2.h5"])
@pytest.mark.parametrize("case,class_name,key,value,exc_type,words", [
    ("layer_scale", "LayerScale", "projection_dim", 0, ec.ModelFormatError, ("projection_dim",)),
    ("layer_scale", "LayerScale", "projection_dim", "4", ec.ModelFormatError, ("projection_dim",)),
    ("layer_scale", "LayerScale", "projection_dim", 5, ec.ShapeError, ("broadcast",)),
    ("custom_scale", "CustomScaleLayer", "scale", "0.17", ec.ModelFormatError, ("scale",)),
    ("custom_scale", "CustomScaleLayer", "scale", None, ec.ModelFormatError, ("scale",)),
])
def test_bad_options_are_refused(tmp_path, flavour, case, class_name, key, value, exc_type, words):
    path = copy_fixture(tmp_path, case, flavour)
    names = ("CustomScaleLayer", "Custom>CustomScaleLayer") if class_name == "CustomScaleLayer" \
        else (class_name,)

    def edit(config):
        entry = next(e for e in config["config"]["layers"] if e["class_name"] in names)
        entry["config"][key] = value
        return entry["config"]["name"]

    layer = edit_config(path, edit)
    expect_error(path, exc_type, layer=layer, words=words, x=reference_input(case, flavour))


@pytest.mark.parametrize("case,flavour", [("train_layer_scale", "k2.h5"),
                                          ("convnext_mini", "k3.h5")])
def test_saved_h5_names_the_application_modules_for_keras3(tmp_path, case, flavour):
    """Keras 3 cannot reload its own .h5 of these layers, nor tf_keras's (which spells one
    Custom>CustomScaleLayer and calls LayerScale's variable gamma): edgecore's save writes
    each with its module, as .keras does, and LayerScale's variables as Keras 3 names them
    (variable, variable_1, ... in build order).  test_save_keras.py has Keras open them."""
    model = ec.load(FIXTURES / f"{case}.{flavour}")
    out = tmp_path / "saved.h5"
    model.save(out)
    with h5py.File(out, "r") as f:
        config = json.loads(f.attrs["model_config"])
        names = []
        f["model_weights"].visit(names.append)
    entries = {e["class_name"]: e for e in config["config"]["layers"]}
    assert entries["LayerScale"]["module"] == "keras.src.applications.convnext"
    assert entries["LayerScale"]["registered_name"] == "LayerScale"
    if case == "train_layer_scale":
        assert "Custom>CustomScaleLayer" not in entries
        assert entries["CustomScaleLayer"]["module"] == "keras.src.applications.inception_resnet_v2"
        assert "layer_scale/layer_scale/variable" in names
    else:
        scales = sorted(n.rsplit("/", 1)[1] for n in names if n.endswith(("variable",))
                        or "/variable_" in n)
        assert scales == ["variable", "variable_1", "variable_2", "variable_3", "variable_4"]
    again = ec.load(out)
    xs, ys = inputs_outputs(reference(case, flavour))
    np.testing.assert_array_equal(again.predict(xs[0]), model.predict(xs[0]))
