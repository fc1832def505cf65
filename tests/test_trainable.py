"""Keras's `trainable` rule, replayed from what Keras itself recorded (trainable_rule).

The generator set flags on a functional model holding a nested functional base and a
nested Sequential (the script: the base off, one layer inside it back on, the base on
again, the whole model off and on, the head off, a BatchNormalization inside the
Sequential off) and recorded, after each step, the parameter counts, the numbers of
trainable and non-trainable weight arrays, every layer's flag and which layers train.
edgecore replays the script on each flavour of the saved file and must agree at every
step: the setter on a model sets every layer inside (both Kerases), and a layer set
trainable again inside a frozen nested model trains in Keras 3 but not in tf.keras.
"""
import json
import re

import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES

FLAVOURS = [("k3.h5", "k3"), ("keras", "k3"), ("k2.h5", "k2")]


def _layer(model, path):
    if path == "":
        return model
    layer = None
    for name in path.split("/"):
        layer = (model if layer is None else layer).get_layer(name)
    return layer


def _paths(model):
    """{path: layer} of every layer at every depth (InputLayers excluded), "" the model."""
    from edgecore.layers.core import InputLayer

    out = {"": model}

    def walk(container, prefix):
        for layer in container.layers:
            if isinstance(layer, InputLayer):
                continue
            path = prefix + layer.name
            out[path] = layer
            if hasattr(layer, "graph"):
                walk(layer, path + "/")

    walk(model, "")
    return out


def _summary_counts(model):
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    numbers = [int(re.search(rf"{what} params: ([\d,]+)", text).group(1).replace(",", ""))
               for what in ("Total", "Trainable", "Non-trainable")]
    return numbers


def _trained_paths(model):
    from edgecore.layers.model import walk_layers

    paths = {layer: "/".join(scope + (layer.name,)) for scope, layer in walk_layers(model.graph)}
    try:
        model.compile(optimizer="sgd", loss="mse")
    except ValueError as exc:
        assert "nothing to train" in str(exc)
        return []
    return [paths[layer] for layer in model.trainer.trained]


@pytest.mark.parametrize("flavour,framework", FLAVOURS, ids=[f for f, _ in FLAVOURS])
def test_trainable_flags_counts_and_training_follow_keras(flavour, framework):
    ref = np.load(FIXTURES / f"trainable_rule.{framework}.npz")
    script = json.loads(str(ref["trainable/script"]))
    counts = ref["trainable/counts"]
    n_trainable = ref["trainable/n_trainable_weights"]
    n_frozen = ref["trainable/n_non_trainable_weights"]
    flags = json.loads(str(ref["trainable/flags"]))
    trained = json.loads(str(ref["trainable/trained"]))
    model = ec.load(FIXTURES / f"trainable_rule.{flavour}")
    for step in range(len(script) + 1):
        if step:
            path, value = script[step - 1]
            _layer(model, path).trainable = value
        where = f"after {script[step - 1]}" if step else "as loaded"
        assert _summary_counts(model) == counts[step].tolist(), where
        assert model.count_params() == counts[step][0]
        assert len(model.trainable_weights) == n_trainable[step], where
        assert len(model.non_trainable_weights) == n_frozen[step], where
        assert sum(w.size for w in model.trainable_weights) == counts[step][1], where
        layers = _paths(model)
        assert {p: bool(layers[p].trainable) for p in flags[step]} == flags[step], where
        assert sorted(_trained_paths(model)) == sorted(trained[step]), where


def test_a_nested_model_setter_reaches_every_depth_and_trains_it():
    # The issue: base.trainable = True on the transfer model's frozen MobileNetV2 flipped
    # only the outer flag; Keras's setter sets every layer inside.
    model = ec.load(FIXTURES / "train_transfer_frozen_base.k3.h5")
    base = next(layer for layer in model.layers if hasattr(layer, "graph"))
    _, before, _ = _summary_counts(model)[0], _summary_counts(model)[1], None
    base.trainable = True
    assert all(layer.trainable for layer in base.layers)
    total, trainable, frozen = _summary_counts(model)
    bn_stats = sum(2 * layer.var_shapes[-1][0] for layer in base.layers
                   if layer.class_name == "BatchNormalization")
    assert frozen == bn_stats and trainable == total - bn_stats and trainable > before
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert len(model.trainer.trained) > 100
