"""The interface every weight source implements, and the shared read/validation step.

A source is indexed once with the model's leaf layers (`WeightSlots`: the variables each
layer expects, in Keras order, with the alternative names other Keras versions use), using
names only; afterwards `read` fetches one dataset at a time, checking its shape before any
data is read, so a hostile file declaring a 10^12-element dataset costs nothing and loading
never holds more than one layer's raw weights beside the packed model.
"""
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..errors import EdgecoreError, ModelFormatError
from . import h5native
from .h5guard import is_weight_type

# What h5py raises when the HDF5 library meets a damaged file: OSError/RuntimeError (bad
# B-tree, address past the end of file, read error), KeyError (an object that cannot be
# opened), ValueError/TypeError (an undecodable datatype, dataspace or attribute).
HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


@contextmanager
def hdf5_errors(path, what, layer=None, layer_class=None):
    """Around every h5py access in formats/: a damaged file becomes a ModelFormatError
    naming the file (and the layer being read), never a bare h5py exception."""
    try:
        yield
    except EdgecoreError as exc:
        raise exc.with_context(path=path, layer=layer, layer_class=layer_class)
    except HDF5_ERRORS as exc:
        raise ModelFormatError(f"{what} (file truncated or corrupt?): {type(exc).__name__}: "
                               f"{exc}", path=path, layer=layer, layer_class=layer_class) from None


@dataclass(frozen=True)
class WeightSlots:
    """What one leaf layer expects.  path: layer names from the top-level model down."""

    path: tuple
    class_name: str
    variables: tuple  # of (canonical_name, (alias, ...))

    @property
    def name(self):
        return self.path[-1]

    def slot_of(self, var_name, taken):
        """Index of the expected variable called var_name (or an alias), not yet taken."""
        for i, (canonical, aliases) in enumerate(self.variables):
            if i not in taken and (var_name == canonical or var_name in aliases):
                return i
        return None


@dataclass(frozen=True)
class WeightRef:
    dataset: str  # path of the dataset inside the HDF5 file
    var_name: str


# Largest tensor edgecore will allocate from a file's say-so: 2^31 - 1 elements keeps every
# size inside the kernels' Py_ssize_t arithmetic on 32-bit ARM too.
MAX_TENSOR_ELEMENTS = 2**31 - 1


def read_dataset(h5file, ref, expected_shape, path, slots, out=None):
    """Read `ref` from an open h5py File as float32, validating it first.  With `out` (a
    C-contiguous float32 array of the expected shape) the data is read straight into it
    (HDF5 converts other float types on the way), so loading allocates nothing per layer."""
    context = dict(path=path, layer=slots.name, layer_class=slots.class_name)
    with hdf5_errors(what=f"cannot open weight {ref.var_name!r} at {ref.dataset!r}", **context):
        dataset = h5file.get(ref.dataset)
        if not isinstance(dataset, h5native.Dataset):
            found = "does not exist" if dataset is None else f"is a {type(dataset).__name__}"
            raise ModelFormatError(f"weight {ref.var_name!r}: {ref.dataset!r} {found} in the "
                                   f"file", **context)
        if dataset.shape is None:
            raise ModelFormatError(f"weight {ref.var_name!r} at {ref.dataset!r} is an empty "
                                   f"(null) dataset", **context)
        shape = tuple(int(d) for d in dataset.shape)
        standard_type = is_weight_type(dataset)
    if expected_shape is not None and shape != tuple(expected_shape):
        raise ModelFormatError(
            f"weight {ref.var_name!r} has shape {shape} in the file, but the layer's config "
            f"implies {tuple(expected_shape)}", **context)
    if int(np.prod(shape, dtype=np.int64)) > MAX_TENSOR_ELEMENTS:
        raise ModelFormatError(f"weight {ref.var_name!r} of shape {shape} is absurdly large",
                               **context)
    if not standard_type:  # strings, compounds, or a damaged float type
        raise ModelFormatError(f"weight {ref.var_name!r} is not stored as a standard integer or "
                               f"IEEE float (HDF5 datatype {_type_name(dataset)})", **context)
    with hdf5_errors(what=f"cannot read weight {ref.var_name!r}", **context):
        if out is not None and shape and int(np.prod(shape)) > 0:
            dataset.read_direct(out)
            return out
        data = dataset[()]
    return np.asarray(data, dtype=np.float32)


def _type_name(dataset):
    try:
        return dataset.type_description()
    except HDF5_ERRORS:  # the datatype is too damaged to describe
        return "undecodable"


def assign_by_name(slots, refs, path):
    """Order one layer's refs (named variables) into its expected slots.

    Names that match no slot fall back to file order for the remaining slots, because some
    Keras versions name variables without a layer prefix or with a different spelling.
    """
    if len(refs) != len(slots.variables):
        raise ModelFormatError(
            f"the file has {len(refs)} weight(s) {[r.var_name for r in refs]} for this layer, "
            f"its config implies {len(slots.variables)} {[v[0] for v in slots.variables]}",
            path=path, layer=slots.name, layer_class=slots.class_name)
    placed = {}
    unmatched = []
    for ref in refs:
        slot = slots.slot_of(ref.var_name, placed)
        if slot is None:
            unmatched.append(ref)
        else:
            placed[slot] = ref
    free = [i for i in range(len(slots.variables)) if i not in placed]
    for slot, ref in zip(free, unmatched):
        placed[slot] = ref
    return [placed[i] for i in range(len(slots.variables))]
