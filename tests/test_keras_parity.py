"""edgecore against Keras on every committed fixture, in every committed file flavour.

For each model file Keras wrote (weights/generate.py), edgecore must load it, run the
reference inputs and match Keras's `model(x, training=False)` to
max|err| <= 1e-4 * max(1, max|ref|), count parameters as Keras does, and return each
layer's get_weights() in Keras order and shapes.
"""
import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES, NOT_COMMITTED, inputs_outputs, model_files, reference

FILES = list(model_files())
IDS = [path.name for _, _, path in FILES]

# What must be in git: every application runs in the default suite.
REQUIRED = ["mobilenet_v2.k3.h5", "mobilenet_v2.keras", "mobilenet_v2.k2.h5",
            "mobilenet_v3_small.k3.h5", "mobilenet_v3_small.k2.h5", "efficientnet_b0.k3.h5",
            "resnet_small.k3.h5", "resnet_small.keras", "resnet_small.k2.h5",
            "transfer_mobilenet_v2.k3.h5", "transfer_mobilenet_v2.keras",
            "transfer_mobilenet_v2.k2.h5"]


def tolerance(ref):
    return 1e-4 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize("name", REQUIRED)
def test_required_fixtures_are_committed(name):
    assert (FIXTURES / name).exists()


def test_only_the_listed_flavours_are_left_out():
    missing = {path.name for _, _, path in model_files(include_missing=True)
               if not path.exists()}
    assert missing <= NOT_COMMITTED


@pytest.mark.parametrize("case,flavour,path", FILES, ids=IDS)
def test_predict_matches_keras(case, flavour, path):
    ref = reference(case, flavour)
    xs, ys = inputs_outputs(ref)
    model = ec.load(path)
    got = model.predict(xs if len(xs) > 1 else xs[0])
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(ys)
    for i, (g, y) in enumerate(zip(got, ys)):
        assert g.shape == y.shape, (i, g.shape, y.shape)
        err = float(np.abs(g - y).max())
        assert err <= tolerance(y), f"output {i}: max abs error {err:.3g} (max|ref| {np.abs(y).max():.3g})"


@pytest.mark.parametrize("case,flavour,path", FILES, ids=IDS)
def test_param_counts_match_keras(case, flavour, path):
    ref = reference(case, flavour)
    model = ec.load(path)
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    total, trainable = int(ref["params_total"]), int(ref["params_trainable"])
    assert model.count_params() == total
    assert f"Total params: {total:,} " in text
    assert f"Trainable params: {trainable:,} " in text
    assert f"Non-trainable params: {total - trainable:,} " in text


WEIGHT_FILES = [(c, f, p) for c, f, p in FILES
                if any(k.startswith("w/") for k in reference(c, f).files)]


@pytest.mark.parametrize("case,flavour,path", WEIGHT_FILES, ids=[p.name for _, _, p in WEIGHT_FILES])
def test_get_weights_matches_keras(case, flavour, path):
    ref = reference(case, flavour)
    model = ec.load(path)
    expected = {}
    for key in ref.files:
        if key.startswith("w/"):
            layer = key[2:key.rindex("/")]
            expected.setdefault(layer, {})[int(key.rsplit("/", 1)[1])] = ref[key]
    assert expected
    for layer_name, arrays in expected.items():
        got = model.get_layer(layer_name).get_weights()
        assert len(got) == len(arrays), layer_name
        for i, array in sorted(arrays.items()):
            assert got[i].shape == array.shape, (layer_name, i)
            np.testing.assert_array_equal(got[i], array.astype(np.float32), err_msg=layer_name)
