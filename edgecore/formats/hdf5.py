"""Legacy Keras HDF5 (`model.save("x.h5")`), as written by Keras 2 / tf.keras and Keras 3.

Layout (verified facts in shared KERAS-FORMATS.md): root attrs `keras_version`,
`model_config` (JSON), optional `training_config`; group `model_weights` with one group
per top-level layer listing its variables in attr `weight_names` (the order that counts,
never the alphabetical group listing).  A nested model is ONE group holding every variable
of every inner layer, so inner layers are found by the layer name inside each weight name
(Keras 2 `conv/kernel:0`, Keras 3 `seq_name/conv/kernel` or `conv/kernel`) and, where a
version writes no layer name (Keras 2 Normalization: `mean:0`), by order.
"""
import json

import numpy as np

from ..errors import ModelFormatError
from . import h5native
from .h5guard import read_attr
from .weights import HDF5_ERRORS, WeightRef, assign_by_name, hdf5_errors, read_dataset


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _attr_list(group, name, path):
    """A list attribute; Keras splits one longer than an HDF5 object header holds (64 KB)
    into name0, name1, ... (legacy_h5_format.py), which are joined back here."""
    value = read_attr(group, name, path)
    if value is None:
        parts, chunk = [], 0
        while True:
            piece = read_attr(group, f"{name}{chunk}", path)
            if piece is None:
                break
            parts.extend(np.atleast_1d(piece).ravel())
            chunk += 1
        return [_text(v) for v in parts]
    return [_text(v) for v in np.atleast_1d(value).ravel()]


class HDF5Model:
    """An open legacy .h5 model file: config, version and a weight source."""

    def __init__(self, path, h5file):
        self.path = path
        model_config = read_attr(h5file, "model_config", path)
        if model_config is None:
            raise ModelFormatError(
                "HDF5 file has no 'model_config' attribute: it holds weights only "
                "(model.save_weights) or is not a Keras model", path=path)
        self.keras_version = _text(read_attr(h5file, "keras_version", path) or "2")
        self.keras_major = 3 if self.keras_version.startswith("3") else 2
        self.model_config = _json_attr(model_config, "model_config", path)
        training_config = read_attr(h5file, "training_config", path)
        self.training_config = (None if training_config is None
                                else _json_attr(training_config, "training_config", path))
        self.flavour = f"h5-keras{self.keras_major}"
        self.weights = HDF5WeightSource(path, h5file)

    def close(self):
        self.weights.file.close()


def _json_attr(value, name, path):
    try:
        return json.loads(_text(value))
    except RecursionError:
        raise ModelFormatError(f"attribute {name!r} is JSON nested too deeply", path=path) from None
    except (ValueError, TypeError) as exc:
        raise ModelFormatError(f"attribute {name!r} is not valid JSON ({exc})", path=path) from None


class HDF5WeightSource:
    def __init__(self, path, h5file):
        self.path = path
        self.file = h5file
        self.root = h5file.get("model_weights")
        if not isinstance(self.root, h5native.Group):
            raise ModelFormatError("file has a model config but no 'model_weights' group",
                                   path=path)

    def index(self, leaves):
        """Map every leaf layer (WeightSlots) to its WeightRefs in Keras order."""
        by_group = {}
        for slots in leaves:
            by_group.setdefault(slots.path[0], []).append(slots)
        result = {}
        for group_name, group_leaves in by_group.items():
            with hdf5_errors(self.path, "cannot read the layer's weight group",
                             layer=group_name, layer_class=group_leaves[0].class_name):
                refs = self._group_refs(group_name, group_leaves)
            if len(group_leaves) == 1 and len(group_leaves[0].path) == 1:
                slots = group_leaves[0]
                result[slots.path] = assign_by_name(slots, refs, self.path)
            else:
                result.update(_assign_nested(group_leaves, refs, self.path))
        return result

    def _group_refs(self, group_name, leaves):
        expected = sum(len(s.variables) for s in leaves)
        group = self.root.get(group_name)
        if not isinstance(group, h5native.Group):
            if expected == 0:
                return []
            raise ModelFormatError(
                "the config has this layer but 'model_weights' holds no group for it",
                path=self.path, layer=group_name, layer_class=leaves[0].class_name)
        names = _attr_list(group, "weight_names", self.path)
        refs = []
        for name in names:
            var = name[:-2] if name.endswith(":0") else name
            refs.append(WeightRef(f"model_weights/{group_name}/{name}", var))
        return refs

    def read(self, ref, expected_shape, slots, out=None):
        return read_dataset(self.file, ref, expected_shape, self.path, slots, out)


def _split(var_path):
    prefix, _, var = var_path.rpartition("/")
    return prefix, var


def _assign_nested(leaves, refs, path):
    """Distribute the refs of a nested model's group over its leaf layers."""
    placed = {s.path: {} for s in leaves}
    leftovers = []
    for ref in refs:
        prefix, var = _split(ref.var_name)
        best = None
        for slots in leaves:
            name = slots.name
            if prefix != name and not prefix.endswith("/" + name):
                continue
            slot = slots.slot_of(var, placed[slots.path])
            if slot is None:
                continue
            if best is None or len(name) > len(best[0].name):
                best = (slots, slot)
        if best is None:
            leftovers.append((var, ref))
        else:
            placed[best[0].path][best[1]] = WeightRef(ref.dataset, var)
    for var, ref in leftovers:
        for slots in leaves:
            slot = slots.slot_of(var, placed[slots.path])
            if slot is not None:
                placed[slots.path][slot] = WeightRef(ref.dataset, var)
                break
        else:
            raise ModelFormatError(f"weight {ref.var_name!r} belongs to no layer of this model",
                                   path=path, layer=leaves[0].path[0])
    result = {}
    for slots in leaves:
        got = placed[slots.path]
        if len(got) != len(slots.variables):
            missing = [slots.variables[i][0] for i in range(len(slots.variables)) if i not in got]
            raise ModelFormatError(f"the file has no weights {missing} for this layer",
                                   path=path, layer="/".join(slots.path),
                                   layer_class=slots.class_name)
        result[slots.path] = [got[i] for i in range(len(slots.variables))]
    return result


def open_hdf5(path):
    try:
        h5file = h5native.File(path, "r")
    except ModelFormatError:
        raise
    except HDF5_ERRORS as exc:
        raise ModelFormatError(f"cannot open as HDF5 (truncated or corrupt?): {exc}",
                               path=path) from None
    try:
        with hdf5_errors(path, "cannot read the model's attributes and groups"):
            return HDF5Model(path, h5file)
    except BaseException:
        h5file.close()
        raise
