"""Activation strings at the model level: every name Keras 3.15.1's keras.activations.get
accepts loads and runs except `threshold` (refused, with its reason); glu's shape rule;
sparsemax's threshold follows the Keras version that wrote the file.  The outputs of each
string against Keras itself are the act_* / dense_act_* / conv2d_act_* fixtures
(test_keras_parity.py)."""
import json
import shutil

import numpy as np
import pytest

import edgecore as ec
from badfiles import edit_config, expect_error, layer_entry, rewrite_zip, zip_member
from edgecore.layers.activations import SUPPORTED_ACTIVATIONS
from fixtures import FIXTURES, inputs_outputs, reference
from reference import rowact

# keras/src/activations/__init__.py of Keras 3.15.1: ALL_OBJECTS by __name__, plus the aliases
# swish and hard_swish.
KERAS_3_15_GET = [
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish",
    "relu", "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softmax", "softplus",
    "softsign", "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus", "swish", "tanh",
    "tanh_shrink", "threshold"]
# The strings tf_keras 2.21's get turns into activation functions (its module's public
# functions; it also turns the layer class names ELU, LeakyReLU, PReLU, ReLU, Softmax and
# ThresholdedReLU into layer objects, which files record as objects, not strings).
TF_KERAS_2_21_GET = [
    "elu", "exponential", "gelu", "hard_sigmoid", "leaky_relu", "linear", "log_softmax", "mish",
    "relu", "relu6", "selu", "sigmoid", "silu", "softmax", "softplus", "softsign", "swish",
    "tanh"]


def test_every_keras_string_but_threshold_is_supported():
    assert set(KERAS_3_15_GET) - set(SUPPORTED_ACTIVATIONS) == {"threshold"}
    assert set(TF_KERAS_2_21_GET) <= set(SUPPORTED_ACTIVATIONS)
    assert set(SUPPORTED_ACTIVATIONS) <= set(KERAS_3_15_GET)


def _copy(tmp_path, case, flavour="k3.h5"):
    path = tmp_path / f"{case}.{flavour}"
    shutil.copy(FIXTURES / f"{case}.{flavour}", path)
    return path


def _set_activation(name):
    def edit(config):
        layer_entry(config, "Activation")["config"]["activation"] = name
        return layer_entry(config, "Activation")["config"]["name"]
    return edit


@pytest.mark.parametrize("name", [n for n in KERAS_3_15_GET if n != "threshold"])
def test_each_string_loads_and_runs_in_an_activation_layer(tmp_path, name):
    path = _copy(tmp_path, "act_relu")
    edit_config(path, _set_activation(name))
    x = inputs_outputs(reference("act_relu", "k3.h5"))[0][0]
    y = ec.load(path).predict(x)
    assert y.shape == (x.shape[:-1] + (2,) if name == "glu" else x.shape)
    assert np.isfinite(y).all(), name


def test_threshold_is_refused_with_its_reason(tmp_path):
    path = _copy(tmp_path, "act_relu")
    layer = edit_config(path, _set_activation("threshold"))
    expect_error(path, ec.UnsupportedLayerError, layer=layer,
                 words=("threshold", "default_value"))


def test_glu_needs_an_even_last_axis(tmp_path):
    path = _copy(tmp_path, "act_glu")

    def odd(config):
        layer_entry(config, "InputLayer")["config"]["batch_shape"] = [None, 6, 5, 5]
        return layer_entry(config, "Activation")["config"]["name"]
    layer = edit_config(path, odd)
    expect_error(path, ec.ShapeError, layer=layer, words=("glu", "5"))


@pytest.mark.parametrize("case,shape", [("dense_act_glu", (None, 3)), ("dense_act_glu_3d", (None, 5, 4)),
                                        ("conv2d_act_glu", (None, 9, 7, 2)),
                                        ("dwconv_act_glu", (None, 9, 7, 5))])
def test_glu_halves_what_keras_reports(case, shape):
    # Keras's own output_shapes in the npz still say units/filters (its Dense and Conv
    # layers do not account for glu), its outputs are half that: edgecore reports those.
    ref = reference(case, "k3.h5")
    keras_says = tuple(json.loads(str(ref["output_shapes"])))
    assert keras_says[-1] == 2 * shape[-1]
    model = ec.load(FIXTURES / f"{case}.k3.h5")
    assert tuple(model.output_shape) == shape
    assert model.predict(inputs_outputs(ref)[0][0]).shape[1:] == shape[1:]


def test_sparsemax_follows_the_keras_version(tmp_path):
    """Keras <= 3.15 sums the cumulative sums for the threshold (keras-team/keras#23425); a
    file from a later Keras (with the fix, #23469) gets the simplex projection."""
    ref = reference("dense_act_sparsemax", "keras")
    (x,), (y,) = inputs_outputs(ref)
    model = ec.load(FIXTURES / "dense_act_sparsemax.keras")
    assert np.abs(model.predict(x) - y).max() <= 1e-6
    kernel, bias = model.get_layer("dense").get_weights()
    z = x.astype(np.float64) @ kernel + bias
    assert np.abs(rowact.sparsemax(z, "keras_3_15") - y).max() <= 1e-6
    path = _copy(tmp_path, "dense_act_sparsemax", "keras")
    meta = json.loads(zip_member(path, "metadata.json"))
    meta["keras_version"] = "3.16.0"
    rewrite_zip(path, {"metadata.json": json.dumps(meta).encode()})
    later = ec.load(path).predict(x)
    assert np.abs(later - rowact.sparsemax(z, "simplex")).max() <= 1e-6
    assert np.abs(later.sum(axis=1) - 1).max() <= 1e-5
    assert np.abs(later - y).max() > 0.1                    # the two thresholds differ here
