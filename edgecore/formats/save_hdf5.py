"""`save_hdf5`: write a loaded (and possibly trained) model as a legacy Keras `.h5`.

The file is what Keras 3.15.1 `model.save("x.h5")` writes (KERAS-FORMATS.md), so
`keras.models.load_model` opens it and edgecore reads it back as a Keras 3 file:

    /                 attrs keras_version "3.15.1", backend "tensorflow", model_config
                      (Keras 3 spelling, keras3_config.py), training_config if compiled
    /model_weights    attrs layer_names (Keras's model.layers: Functional with its
                      InputLayers, Sequential without), backend, keras_version
      /<layer>        attr weight_names; datasets at /<layer>/<weight name>; a nested
                      model is one group listing every inner variable
      /top_level_model_weights   empty, as Keras writes it
    /optimizer_weights  attr weight_names + datasets, only when given

Keras 3 reads a group's weights by position in `weight_names`, in its legacy order
(`layer.trainable_weights + layer.non_trainable_weights`), which for a nested model puts
every trainable variable before every frozen one; that order depends on the trainable
flags this file's config carries, so it is computed from the same flags.  Weight names
follow Keras 3: `<layer>/<var>`, prefixed `<sequential>/` inside a Sequential.

Atomic: written to a hidden temporary file in the same directory (temporary_path), fsynced,
closed, then renamed over `path` (os.replace), so a crash or an exception mid-save leaves any existing
file at `path` untouched and no temporary file behind.

Non-goal: the `.keras` zip format (Keras 3 loads this .h5 format; see Model.save).
"""
import contextlib
import hashlib
import json
import os

import h5py
import numpy as np

from ..errors import ModelFormatError
from .keras3_config import KERAS_VERSION, keras3_model_config, keras3_name

BACKEND = "tensorflow"  # what Keras writes under its default backend; readers ignore it
# HDF5 keeps attributes in the object header, at most 64 KB; Keras splits longer name
# lists into `weight_names0`, `weight_names1`, ... (legacy_h5_format.py), and so do we.
HDF5_OBJECT_HEADER_LIMIT = 64512
# Variables Keras keeps in another dtype than float32 (edgecore holds them as float32).
_VARIABLE_DTYPES = {("Normalization", "count"): np.int64}


def check_save_path(path):
    """ValueError unless path names a legacy HDF5 file (.h5 / .hdf5)."""
    path = os.fspath(path)
    if str(path).endswith(".keras"):
        raise ValueError(f"cannot save {path!r}: edgecore writes the legacy Keras HDF5 "
                         f"format (.h5), which Keras 3 loads with keras.models.load_model; "
                         f"use a path ending in .h5")
    if not str(path).endswith((".h5", ".hdf5")):
        raise ValueError(f"cannot save {path!r}: the path must end in .h5 or .hdf5 "
                         f"(edgecore writes the legacy Keras HDF5 format)")
    return path


def save_hdf5(model, path, weights_of, training_config=None, optimizer_weights=None,
              extra_attrs=None):
    """Write `model` to `path` as a Keras 3 legacy .h5.

    weights_of(layer) -> list of arrays: a leaf layer's current weights in Keras order
    (layer.get_weights() for an untrained model).  training_config: the Keras 3
    `training_config` dict of a compiled model (loss, metrics, optimizer_config, ...).
    optimizer_weights: [(name, array), ...] in the optimizer's variable order (Keras sets
    them by position: iteration, learning_rate, then each trainable variable's slots), e.g.
    ("adam/iteration", np.int64(10)), ("adam/head_kernel_momentum", ...).
    extra_attrs: {name: str} written as further root attributes (Keras ignores them;
    fit's checkpoints keep their training state there).
    """
    path = os.fspath(path)
    raw_config = _raw_model_config(model)
    model_config, top_layers = keras3_model_config(model, raw_config)
    with atomic_h5(path) as f:
        f.attrs["keras_version"] = KERAS_VERSION
        f.attrs["backend"] = BACKEND
        f.attrs["model_config"] = json.dumps(model_config).encode("utf8")
        if training_config is not None:
            f.attrs["training_config"] = json.dumps(
                training_config, default=_json_default).encode("utf8")
        _write_model_weights(f.create_group("model_weights"), model, top_layers, weights_of)
        if optimizer_weights:
            _write_optimizer_weights(f, optimizer_weights)
        for name, value in (extra_attrs or {}).items():
            f.attrs[name] = str(value).encode("utf8")


def temporary_path(path):
    """Where an atomic write of `path` goes first: beside it (a rename within one file
    system), hidden, and short whatever the name's length (`<path>.tmp-<pid>` made a legal
    253-character name too long to save).  The hash ties it to `path` for cleanup."""
    directory, name = os.path.split(os.path.abspath(path))
    digest = hashlib.sha1(name.encode("utf8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(directory, f".{digest}.{os.getpid()}.edgecore-tmp")


def stale_temporaries(path):
    """Temporary files of earlier writes of `path` that a killed process left behind."""
    import glob

    directory, name = os.path.split(os.path.abspath(path))
    digest = hashlib.sha1(name.encode("utf8", "surrogateescape")).hexdigest()[:16]
    return glob.glob(os.path.join(glob.escape(directory), f".{digest}.*.edgecore-tmp"))


@contextlib.contextmanager
def atomic_h5(path):
    """An h5py.File to fill; on success it is flushed, fsynced and renamed over `path`
    (os.replace), so a crash or an exception mid-write leaves any existing file at `path`
    untouched and no temporary file behind."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)  # as Keras's save does
    tmp = temporary_path(path)
    try:
        with h5py.File(tmp, "w") as f:
            yield f
            f.flush()
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _raw_model_config(model):
    """The config the model was built from, as the loader kept it (LoadContext), else
    read again from the model's file if that is still the same flavour (a file saved
    over in between holds another spelling of the config, which would be misread)."""
    raw = getattr(model.ctx, "model_config", None)
    if raw is not None:
        return raw
    from . import open_model_file

    model_file = open_model_file(model.ctx.path)
    try:
        if model_file.flavour != model.ctx.flavour:
            raise ModelFormatError("the model's config is no longer in its file (saved over "
                                   "since it was loaded?)", path=model.ctx.path)
        return model_file.model_config
    finally:
        model_file.close()


# --- model_weights ---------------------------------------------------------------------
def _write_model_weights(group, model, top_layers, weights_of):
    _save_attributes(group, "layer_names", [s.name.encode("utf8") for s in top_layers])
    group.attrs["backend"] = BACKEND.encode("utf8")
    group.attrs["keras_version"] = KERAS_VERSION.encode("utf8")
    # Keras creates the groups sorted by name ("so that group names are strictly growing").
    # Weights of a top-level Sequential's layers carry its name: `seq/conv2d/kernel`.
    prefix = keras3_name(model.name) + "/" if model.graph.kind == "sequential" else ""
    auto = _auto_variable_names(model)
    for saved in sorted(top_layers, key=lambda s: s.name):
        weights = _group_weights(saved, prefix, weights_of, model.ctx.path, auto)
        _write_subset(group.create_group(saved.name), weights)
    _write_subset(group.create_group("top_level_model_weights"), [])


def _write_subset(group, weights):
    """weights: [(name, array)]; one dataset per name (a `/` makes nested groups)."""
    _save_attributes(group, "weight_names", [name.encode("utf8") for name, _ in weights])
    for name, value in weights:
        dataset = group.create_dataset(name, value.shape, dtype=value.dtype)
        if value.shape:
            dataset[:] = value
        else:
            dataset[()] = value


def _save_attributes(group, name, data):
    """Keras's save_attributes_to_hdf5_group: one attribute, or chunks name0, name1, ...
    when the list exceeds the object header limit."""
    too_long = [x for x in data if len(x) > HDF5_OBJECT_HEADER_LIMIT]
    if too_long:
        raise ValueError(f"names longer than {HDF5_OBJECT_HEADER_LIMIT} bytes: {too_long[:1]}")
    array = np.asarray(data)
    chunks = 1
    pieces = np.array_split(array, chunks)
    while any(p.nbytes > HDF5_OBJECT_HEADER_LIMIT for p in pieces):
        chunks += 1
        pieces = np.array_split(array, chunks)
    if chunks > 1:
        for i, piece in enumerate(pieces):
            group.attrs[f"{name}{i}"] = piece
    else:
        group.attrs[name] = data


def _auto_variable_names(model):
    """{(id(layer), "variable"): written name} for Keras 3's unnamed variables (LayerScale's
    gamma): Keras names them "variable", "variable_1", ... in the order the layers were
    built, i.e. the models' layer order, nested models where they stand."""
    names, count = {}, 0

    def walk(graph, seen):
        nonlocal count
        for layer in graph.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if getattr(layer, "graph", None) is not None:
                walk(layer.graph, seen)
                continue
            for var, _ in layer.variables():
                if var == "variable":
                    names[(id(layer), var)] = var if count == 0 else f"{var}_{count}"
                    count += 1

    walk(model.graph, set())
    return names


def _group_weights(saved, prefix, weights_of, path, auto):
    """[(weight name, array)] of one top-level layer, in Keras's legacy order."""
    layer = saved.layer
    if layer is None:
        return []
    if getattr(layer, "graph", None) is None:  # a leaf layer
        return [(f"{prefix}{saved.name}/{var}", array) for var, array, _
                in _leaf_weights(layer, saved.name, prefix, weights_of, path, auto)]
    entries = list(_nested_weights(layer, saved.names, weights_of, path, auto))
    if layer.trainable:
        entries = ([e for e in entries if e[2]] + [e for e in entries if not e[2]])
    return [(name, array) for name, array, _ in entries]


def _nested_weights(model_layer, names, weights_of, path, auto, seen=None):
    """(name, array, trainable) for every variable inside a nested model, in Keras's
    `model.weights` order (its layers in order, shared layers once).  A variable is
    trainable when Keras will create it trainable: its own layer is (the flags of
    models in between are not consulted by Keras's legacy order)."""
    seen = set() if seen is None else seen
    sequential = model_layer.graph.kind == "sequential"
    prefix = names.get(id(model_layer), model_layer.name) + "/" if sequential else ""
    for layer in model_layer.graph.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if getattr(layer, "graph", None) is not None:
            yield from _nested_weights(layer, names, weights_of, path, auto, seen)
            continue
        name = names.get(id(layer), layer.name)
        yield from ((f"{prefix}{name}/{var}", array, trainable) for var, array, trainable
                    in _leaf_weights(layer, name, prefix, weights_of, path, auto))


def _leaf_weights(layer, name, prefix, weights_of, path, auto):
    """(variable name, array in Keras's dtype, trainable) of one leaf layer."""
    variables = [v for v, _ in layer.variables()]
    if not variables or getattr(layer, "var_shapes", None) is None:
        return []
    arrays = list(weights_of(layer))
    if len(arrays) != len(variables):
        raise ModelFormatError(f"weights_of returned {len(arrays)} arrays, the layer has "
                               f"{len(variables)} variables {variables}", path=path,
                               layer=prefix + name, layer_class=layer.class_name)
    frozen = set(layer.non_trainable_variables())
    out = []
    for var, array, shape in zip(variables, arrays, layer.var_shapes):
        dtype = _VARIABLE_DTYPES.get((layer.class_name, var), np.float32)
        array = np.asarray(array)
        if tuple(array.shape) != tuple(shape):
            raise ModelFormatError(f"weight {var!r} has shape {array.shape}, the layer "
                                   f"needs {tuple(shape)}", path=path, layer=prefix + name,
                                   layer_class=layer.class_name)
        out.append((auto.get((id(layer), var), var), np.array(array, dtype=dtype, order="C"),
                    bool(layer.trainable) and var not in frozen))
    return out


# --- optimizer ---------------------------------------------------------------------------
def _write_optimizer_weights(f, optimizer_weights):
    items = list(optimizer_weights.items() if isinstance(optimizer_weights, dict)
                 else optimizer_weights)
    group = f.create_group("optimizer_weights")
    _save_attributes(group, "weight_names", [str(n).encode("utf8") for n, _ in items])
    for name, value in items:
        value = np.asarray(value)
        dataset = group.create_dataset(str(name), value.shape, dtype=value.dtype)
        if value.shape:
            dataset[:] = value
        else:
            dataset[()] = value


def _json_default(value):
    """numpy scalars and arrays in a training config (Keras's json_utils does the same)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"training_config holds a {type(value).__name__}, not JSON")


# --- durability --------------------------------------------------------------------------
def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); where directories cannot be opened
    (Windows) the rename is still atomic, only not yet flushed."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
