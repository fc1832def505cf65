"""fit(checkpoint=...): an atomic .h5 checkpoint after every epoch, and resume.

A checkpoint is an ordinary Keras-loadable .h5 (formats/save_hdf5.py) holding the model
with its trained weights, the optimizer's variables in Keras's order and names
(`<optimizer>/iteration`, `<optimizer>/learning_rate`, then per trainable variable its
slots, e.g. `adam/dense_kernel_momentum`), and one extra root attribute,
`edgecore_training_state` (JSON: epochs done, optimizer step, history, shuffle/dropout
generator state).  save_hdf5 writes to a temporary file and renames it over the old
checkpoint, so a process killed at any moment leaves the last complete checkpoint intact:
an interrupted run loses at most the epoch in progress.
"""
import json

import h5py
import numpy as np

STATE_ATTR = "edgecore_training_state"


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
    """Temporary files a killed run left beside its checkpoint (save writes
    `<path>.tmp-<pid>` and renames it; a kill between the two leaves it behind)."""
    import glob
    import os

    for stale in glob.glob(glob.escape(os.fspath(path)) + ".tmp-*"):
        try:
            os.remove(stale)
        except OSError:
            pass


def save(model, path, epochs_done, history):
    from ..formats.save_hdf5 import check_save_path, save_hdf5

    trainer = model.trainer
    state = {"epoch": epochs_done, "iterations": trainer.optimizer.iterations,
             "history": history.history, "rng": trainer.rng.bit_generator.state}
    path = check_save_path(path)
    with model._weights_reader() as weights_of:
        save_hdf5(model, path, weights_of=weights_of,
                  training_config=training_config(model),
                  optimizer_weights=optimizer_weights(model),
                  extra_attrs={STATE_ATTR: json.dumps(state)})
    model._adopt(path)


def restore(model, path, history):
    """Load weights, optimizer state and history from a checkpoint; returns the number of
    epochs already done (fit's next epoch)."""
    from ..errors import ModelFormatError
    from ..formats import open_model_file
    from ..loader import file_reader

    trainer = model.trainer
    with h5py.File(path, "r") as f:
        if STATE_ATTR not in f.attrs:
            raise ModelFormatError("not an edgecore training checkpoint (no training state)",
                                   path=path)
        state = json.loads(f.attrs[STATE_ATTR])
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in f["optimizer_weights"].attrs["weight_names"]]
        slots = {name: np.asarray(f["optimizer_weights"][name]) for name in names}
    checkpoint = open_model_file(path)
    try:
        read = file_reader(checkpoint, model.graph)
        for layer in trainer.setup.live:
            layer.live_pack(read(layer), trainer.views(layer))
    finally:
        checkpoint.close()
    optimizer = trainer.optimizer
    prefix = optimizer.keras_name.lower()
    for layer, name, region in _variables(model):
        for slot, buffer in optimizer.slots.items():
            key = f"{prefix}/{layer.name}_{name}_{slot}"
            if key not in slots:
                raise ModelFormatError(f"checkpoint has no optimizer slot {key!r} (was it "
                                       f"written with another optimizer?)", path=path)
            buffer[region.offset:region.offset + region.size] = slots[key].ravel()
    optimizer.iterations = int(state["iterations"])
    trainer.rng.bit_generator.state = state["rng"]
    history.history = {k: list(v) for k, v in state["history"].items()}
    history.epoch = list(range(int(state["epoch"])))
    return int(state["epoch"])
