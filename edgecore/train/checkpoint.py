"""fit(checkpoint=...): an atomic checkpoint after every epoch that costs what changed, a
full Keras file at the end, and resume.

Per epoch, the checkpoint holds what training changed and nothing else: the values of the
layers that differ from the model's source file (trained layers, BatchNormalization moving
statistics, a new head), the optimizer's variables in Keras's order and names
(`<optimizer>/iteration`, `<optimizer>/learning_rate`, then per trainable variable its
slots), the model's config, the training state (`edgecore_training_state`: epochs done,
optimizer step, history, shuffle/dropout generator state), and a verified reference to
the source file for everything frozen: its path and its identity (device, inode, size,
mtime).  A MobileNetV2 transfer run writes tens of KB an epoch instead of the whole 9 MB
model.  edgecore loads such a checkpoint (`ec.load`) from it and its source; Keras cannot.

When fit ends (all epochs, or stopped early), the checkpoint is rewritten once as an
ordinary Keras-loadable .h5 (formats/save_hdf5.py) with the training state in it, and
becomes the model's source.  Every write goes to a temporary file renamed over the old
checkpoint, so a process killed at any moment leaves the last complete checkpoint: an
interrupted run loses at most the epoch in progress.
"""
import json
import os

import numpy as np

from ..errors import ModelFormatError
from ..formats import h5native

STATE_ATTR = "edgecore_training_state"
DELTA_ATTR = "edgecore_checkpoint"  # JSON {"kind": "delta", "source": ..., "identity": ...}
DELTA_GROUP = "changed_weights"


def _variables(model):
    """[(layer, var_name, Region)] of the trained variables, in params order."""
    out = []
    trainer = model.trainer
    for layer in trainer.setup.trained:
        for name, region in sorted(trainer.live[layer].grads.items(), key=lambda kv: kv[1].offset):
            out.append((layer, name, region))
    return sorted(out, key=lambda item: item[2].offset)


def optimizer_weights(model):
    optimizer = model.trainer.optimizer
    prefix = optimizer.keras_name.lower()
    items = [(f"{prefix}/iteration", np.asarray(optimizer.iterations, np.int64)),
             (f"{prefix}/learning_rate", np.asarray(optimizer.learning_rate, np.float32))]
    for layer, name, region in _variables(model):
        shape = layer.var_shapes[[v for v, _ in layer.variables()].index(name)]
        for slot, buffer in optimizer.slots.items():
            items.append((f"{prefix}/{layer.name}_{name}_{slot}",
                          buffer[region.offset:region.offset + region.size].reshape(shape)))
    return items


def training_config(model):
    trainer = model.trainer
    return {"loss": trainer.loss.get_config()["name"], "loss_weights": None,
            "metrics": list(trainer.metric_names) or None, "weighted_metrics": None,
            "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False,
            "optimizer_config": {"class_name": trainer.optimizer.keras_name,
                                 "config": trainer.optimizer.get_config()}}


def remove_stale_temporaries(path):
    """Temporary files a killed run left beside its checkpoint (a kill between a write
    and its rename leaves one behind)."""
    from ..formats.save_hdf5 import stale_temporaries

    for stale in stale_temporaries(path):
        try:
            os.remove(stale)
        except OSError:
            pass


def _state(model, epochs_done, history):
    trainer = model.trainer
    return {"epoch": epochs_done, "iterations": trainer.optimizer.iterations,
            "history": history.history, "rng": trainer.rng.bit_generator.state}


def layer_key(scope, layer):
    """A layer's path of Keras 3 names, as the delta records it."""
    from ..formats.keras3_config import keras3_name

    return "/".join(keras3_name(n) for n in scope + (layer.name,))


def _changed_values(model):
    """{layer: Keras-order arrays} of every layer whose values are not its source file's:
    trained or moving in the trainer, or held in memory (a new head, set_weights)."""
    store, trainer = model.store, model.trainer
    values = {layer: store.weights_of(layer) for layer in trainer.changed_layers()}
    for layer, arrays in store.memory.items():
        values.setdefault(layer, trainer.weights_of(layer) or arrays)
    return values


def save(model, path, epochs_done, history, full=False):
    """Write the checkpoint: only what changed (full=False), or the whole model as a
    Keras-loadable .h5 that then becomes the model's source (full=True)."""
    from ..formats.save_hdf5 import check_save_path, save_hdf5

    path = check_save_path(path)
    state = json.dumps(_state(model, epochs_done, history))
    if full:
        with model._weights_reader() as weights_of:
            save_hdf5(model, path, weights_of=weights_of, training_config=training_config(model),
                      optimizer_weights=optimizer_weights(model), extra_attrs={STATE_ATTR: state})
        model._adopt(path)
        return
    _save_delta(model, path, state)


def _save_delta(model, path, state):
    from ..formats.keras3_config import keras3_model_config
    from ..formats.save_hdf5 import _raw_model_config, _write_optimizer_weights, atomic_h5
    from ..layers.model import walk_layers

    store = model.store
    store.check_unchanged()  # the reference must name the file the values came from
    config, _ = keras3_model_config(model, _raw_model_config(model))
    keys = {layer: layer_key(scope, layer) for scope, layer in walk_layers(model.graph)}
    changed = _changed_values(model)
    with atomic_h5(path) as f:
        f.attrs["model_config"] = json.dumps(config).encode("utf8")
        f.attrs[STATE_ATTR] = state.encode("utf8")
        f.attrs[DELTA_ATTR] = json.dumps({
            "kind": "delta", "source": os.path.abspath(store.path),
            "identity": list(store.fingerprint)}).encode("utf8")
        group = f.create_group(DELTA_GROUP)
        group.attrs["layers"] = json.dumps(
            {keys[layer]: len(arrays) for layer, arrays in changed.items()}).encode("utf8")
        for layer, arrays in changed.items():
            for i, array in enumerate(arrays):
                group.create_dataset(f"{keys[layer]}/{i}", data=np.asarray(array, np.float32))
        _write_optimizer_weights(f, optimizer_weights(model))


def read_delta(path):
    """(reference {"source", "identity"}, {layer key: arrays}) of a delta checkpoint, or
    None for anything else (a full checkpoint, any model file: the loader reports what is
    wrong with a damaged one)."""
    from ..formats.weights import HDF5_ERRORS, hdf5_errors

    try:
        f = h5native.File(path, "r")
    except HDF5_ERRORS:
        return None
    with f:
        try:
            if DELTA_ATTR not in f.attrs:
                return None
        except HDF5_ERRORS:
            return None
        with hdf5_errors(path, "cannot read the checkpoint's changed weights"):
            meta = json.loads(f.attrs[DELTA_ATTR])
            group = f[DELTA_GROUP]
            counts = json.loads(group.attrs["layers"])
            values = {key: [np.asarray(group[f"{key}/{i}"]) for i in range(n)]
                      for key, n in counts.items()}
    return meta, values


def check_reference(meta, path):
    """ModelFormatError unless the delta's source file is there, unchanged."""
    from ..loader import file_fingerprint

    source = meta["source"]
    try:
        now = list(file_fingerprint(source))
    except OSError:
        now = None
    if now != list(meta["identity"]):
        raise ModelFormatError(
            f"this checkpoint holds only what training changed, and refers for the rest to "
            f"{source!r}, which is missing or was modified since; load that file's model "
            f"again, or use a full checkpoint", path=path)
    return source


def restore(model, path, history):
    """Load weights, optimizer state and history from a checkpoint; returns the number of
    epochs already done (fit's next epoch)."""
    from ..formats import open_model_file
    from ..layers.model import walk_layers
    from ..loader import file_reader

    trainer = model.trainer
    with h5native.File(path, "r") as f:
        if STATE_ATTR not in f.attrs:
            raise ModelFormatError("not an edgecore training checkpoint (no training state)",
                                   path=path)
        state = json.loads(f.attrs[STATE_ATTR])
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in f["optimizer_weights"].attrs["weight_names"]]
        slots = {name: np.asarray(f["optimizer_weights"][name]) for name in names}
    delta = read_delta(path)
    if delta is not None:
        meta, values = delta
        source = check_reference(meta, path)
        if (os.path.realpath(source) != os.path.realpath(model.store.path)
                or list(model.store.fingerprint) != list(meta["identity"])):
            raise ModelFormatError(f"this checkpoint was made from a model loaded from "
                                   f"{source!r}, not from {model.store.path!r}", path=path)
        keys = {layer_key(scope, layer): layer for scope, layer in walk_layers(model.graph)}
        changed = {keys[k]: v for k, v in values.items() if k in keys}
        live = {layer: v for layer, v in changed.items() if layer in trainer.live}
        for layer, arrays in live.items():
            layer.live_pack(arrays, trainer.views(layer))
        others = {layer: v for layer, v in changed.items() if layer not in trainer.live}
        if others:
            model.store.memory.update(others)
            model._apply_weights(others)
    else:
        checkpoint = open_model_file(path)
        try:
            read = file_reader(checkpoint, model.graph)
            for layer in trainer.setup.live:
                layer.live_pack(read(layer), trainer.views(layer))
        finally:
            checkpoint.close()
    _restore_optimizer(model, path, slots)
    optimizer = trainer.optimizer
    optimizer.iterations = int(state["iterations"])
    trainer.rng.bit_generator.state = state["rng"]
    history.history = {k: list(v) for k, v in state["history"].items()}
    history.epoch = list(range(int(state["epoch"])))
    return int(state["epoch"])


def _restore_optimizer(model, path, slots):
    optimizer = model.trainer.optimizer
    prefix = optimizer.keras_name.lower()
    for layer, name, region in _variables(model):
        for slot, buffer in optimizer.slots.items():
            key = f"{prefix}/{layer.name}_{name}_{slot}"
            if key not in slots:
                raise ModelFormatError(f"checkpoint has no optimizer slot {key!r} (was it "
                                       f"written with another optimizer?)", path=path)
            buffer[region.offset:region.offset + region.size] = slots[key].ravel()
