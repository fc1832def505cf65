"""Training, step for step, against Keras's own train_on_batch (weights/generate.py).

Each training fixture holds the initial model Keras saved and, per optimizer/loss
variant, what Keras 3 computed over 5 train_on_batch calls on fixed batches: the loss and
metric of each step and every layer's weights after steps 1 and 5.  edgecore replays the
same calls from the same file and must match the weights to 1e-4 relative after one step
and 1e-3 after five, the losses likewise, leave every frozen layer bit-for-bit untouched,
and agree with Keras's evaluate() afterwards.
"""
import hashlib
import json

import numpy as np
import pytest

import edgecore as ec
from fixtures import CASES, FIXTURES

TRAINING = sorted(name for name, case in CASES.items() if "training" in case.get("tags", ()))

KNOWN_DEVIATIONS = {}

# Variables whose true gradient is exactly zero, so Keras's and edgecore's are both float32
# round-off noise: a bias feeding a BatchNormalization on batch statistics through a linear
# per-channel map (the batch mean removes any per-channel constant).  Adam divides that
# noise by its own magnitude and steps by up to the learning rate either way, so these are
# held to Adam's step bound (steps x learning rate) instead of Keras's values.
ZERO_GRADIENT = {"train_bn_unfrozen": {("stem", 1)}}

OPTIMIZER_KEYS = {
    "SGD": ("learning_rate", "momentum", "nesterov", "weight_decay"),
    "Adam": ("learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad", "weight_decay"),
    "AdamW": ("learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad", "weight_decay"),
    "RMSprop": ("learning_rate", "rho", "momentum", "epsilon", "centered", "weight_decay"),
}
LOSS_KEYS = ("from_logits", "label_smoothing")


def variants():
    for case in TRAINING:
        ref = np.load(FIXTURES / f"{case}.k3.npz")
        names = sorted({key.split("/")[1] for key in ref.files
                        if key.startswith("train/") and key.endswith("/config")})
        for name in names:
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN_DEVIATIONS[case])] \
                if case in KNOWN_DEVIATIONS else []
            yield pytest.param(case, name, id=f"{case}-{name}", marks=marks)


def optimizer_from(config):
    cls = config["class_name"]
    kwargs = {k: v for k, v in config["config"].items() if k in OPTIMIZER_KEYS[cls] and v is not None}
    return getattr(ec.optimizers, cls)(**kwargs)


def loss_from(config):
    kwargs = {k: v for k, v in config["config"].items() if k in LOSS_KEYS}
    cls = getattr(ec.losses, config["class_name"])
    return cls(**{k: v for k, v in kwargs.items()
                  if k in cls.__init__.__code__.co_varnames})


def close(got, ref, rel):
    scale = max(float(np.abs(ref).max()), 1e-6)
    return float(np.abs(np.asarray(got, np.float64) - ref).max()) <= rel * scale


def digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("case,variant", list(variants()))
def test_train_on_batch_matches_keras(case, variant):
    ref = np.load(FIXTURES / f"{case}.k3.npz")
    config = json.loads(str(ref[f"train/{variant}/config"]))
    model = ec.load(FIXTURES / f"{case}.k3.h5")
    initial = {layer.name: layer.get_weights() for layer in model.layers}
    model.compile(optimizer=optimizer_from(config["optimizer"]), loss=loss_from(config["loss"]),
                  metrics=config.get("metrics"))
    xs, ys = ref["train/x"], ref[config["y"]]
    losses, metrics = [], []
    for step in range(len(xs)):
        result = model.train_on_batch(xs[step], ys[step], return_dict=True)
        losses.append(result["loss"])
        metrics.extend(v for k, v in result.items() if k != "loss")
        if step + 1 in (1, 5):
            rel = 1e-4 if step == 0 else 1e-3
            _check_weights(model, ref, variant, step + 1, rel, initial,
                           ZERO_GRADIENT.get(case, ()), config)
    assert close(losses[:1], ref[f"train/{variant}/loss"][:1], 1e-4), (losses, ref[f"train/{variant}/loss"])
    assert close(losses, ref[f"train/{variant}/loss"], 1e-3), (losses, ref[f"train/{variant}/loss"])
    if f"train/{variant}/metric" in ref.files:
        np.testing.assert_allclose(metrics, ref[f"train/{variant}/metric"], atol=1e-6)
    evaluated = model.evaluate(ref["train/xv"], ref[config["yv"]], return_dict=True)
    keras_eval = np.atleast_1d(ref[f"train/{variant}/eval"])
    assert close([evaluated["loss"]], keras_eval[:1], 1e-3), (evaluated, keras_eval)
    if len(keras_eval) > 1:
        np.testing.assert_allclose(list(evaluated.values())[1:], keras_eval[1:], atol=1e-6)


def _check_weights(model, ref, variant, step, rel, initial, zero_gradient=(), config=None):
    prefix = f"train/{variant}/step{step}/"
    lr = float(config["optimizer"]["config"]["learning_rate"]) if config else 0.0
    expected = {}
    for key in ref.files:
        if key.startswith(prefix):
            layer, index = key[len(prefix):].rsplit("/", 1)
            expected.setdefault(layer, {})[int(index)] = ref[key]
    for layer_name, arrays in expected.items():
        got = model.get_layer(layer_name).get_weights()
        for i, want in sorted(arrays.items()):
            assert got[i].shape == want.shape, (layer_name, i)
            if (layer_name, i) in zero_gradient:
                start = ref_initial(ref, layer_name, i)
                assert np.abs(got[i] - start).max() <= step * lr * (1 + 1e-3)
                continue
            assert close(got[i], want, rel), (
                f"{layer_name}[{i}] after step {step}: max abs error "
                f"{np.abs(got[i] - want).max():.3g} (max|ref| {np.abs(want).max():.3g})")
    digests = json.loads(str(ref[f"train/{variant}/sha256"]))[f"step{step}"] \
        if f"train/{variant}/sha256" in ref.files else {}
    for layer_name, hexdigest in digests.items():
        layer = model.get_layer(layer_name)
        if not layer.trainable or not _any_trainable(layer):
            assert digest(layer.get_weights()) == hexdigest, f"frozen {layer_name} changed"
    for layer in model.layers:
        if not _any_trainable(layer) and layer.name in initial:
            for a, b in zip(layer.get_weights(), initial[layer.name]):
                np.testing.assert_array_equal(a, b, err_msg=f"frozen {layer.name} changed")


def ref_initial(ref, layer_name, i):
    return ref[f"w/{layer_name}/{i}"]


def _any_trainable(layer):
    from edgecore.layers.model import ModelLayer

    if not layer.trainable:
        return False
    if isinstance(layer, ModelLayer):
        return any(_any_trainable(inner) for inner in layer.graph.layers)
    return bool(layer.trainable_variables())
