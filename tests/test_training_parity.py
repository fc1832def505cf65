"""Training, step for step, against Keras's own train_on_batch (weights/generate.py).

Each training fixture holds the initial model Keras saved and, per optimizer/loss variant,
what Keras computed over 5 train_on_batch calls on fixed batches: the loss and metric of
each step and the weights (BatchNormalization's moving statistics included) after steps 1
and 5 — from Keras 3 in the k3 npz and, for the newer cases, from tf.keras in the k2 npz.
edgecore replays the same calls from the same file of that framework and must match the
weights to 1e-4 relative after one step and 1e-3 after five, the losses likewise, leave
every frozen layer bit-for-bit untouched, and agree with Keras's evaluate() afterwards.
Layers inside nested models are recorded by their path (train/paths).
"""
import json

import numpy as np
import pytest

import edgecore as ec
from fixtures import CASES, FIXTURES
from training_traces import FILES, close, loss_from, optimizer_from, replay, variants

TRAINING = sorted(name for name, case in CASES.items()
                  if "training" in case.get("tags", ()) and not case.get("large"))


@pytest.mark.parametrize("case,framework,variant", list(variants(FIXTURES, TRAINING)))
def test_train_on_batch_matches_keras(case, framework, variant):
    replay(FIXTURES, case, framework, variant)


FIT = "train_fit_conventions"


@pytest.mark.parametrize("framework", ["k3", "k2"])
def test_fit_matches_keras_fit(framework):
    """Keras's own fit(): labels of shape (N,) and (N, 1), validation_split (the last
    quarter), shuffle=False, per-epoch history including val_*, and the final weights."""
    ref = np.load(FIXTURES / f"{FIT}.{framework}.npz")
    args = json.loads(str(ref["fit/args"]))
    runs = sorted({key.split("/")[1] for key in ref.files
                   if key.startswith("fit/") and key.endswith("/config")})
    assert runs
    for run in runs:
        config = json.loads(str(ref[f"fit/{run}/config"]))
        model = ec.load(FIXTURES / f"{FIT}.{FILES[framework]}")
        model.compile(optimizer=optimizer_from(config["optimizer"]),
                      loss=loss_from(config["loss"]), metrics=config.get("metrics"))
        y = ref["fit/y"].reshape(config["y_shape"])  # (N,) and (N, 1) runs
        history = model.fit(ref["fit/x"], y, **args)
        keys = json.loads(str(ref[f"fit/{run}/history_keys"]))
        assert sorted(history.history) == sorted(keys)
        for key in keys:
            assert close(history.history[key], ref[f"fit/{run}/history/{key}"], 1e-4), \
                (run, key, history.history[key], ref[f"fit/{run}/history/{key}"])
        for name in {k.split("/")[3] for k in ref.files if k.startswith(f"fit/{run}/weights/")}:
            got = model.get_layer(name).get_weights()
            for i, array in enumerate(got):
                want = ref[f"fit/{run}/weights/{name}/{i}"]
                assert close(array, want, 1e-4), (run, name, i)
