"""Keras model files: the three flavours behind one `open_model_file`.

Returns an object with `path`, `flavour` ("h5-keras2", "h5-keras3", "keras-zip"),
`keras_version`, `keras_major`, `model_config`, `training_config`, `spec` (the parsed
ModelSpec) and `weights` (a source with `index(leaves)` and `read(ref, shape, slots)`),
plus `close()`.  Nothing here knows what a layer computes.
"""
import os

from ..errors import ModelFormatError

from .config import parse_model_config
from .hdf5 import open_hdf5

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


def sniff(path):
    """'hdf5', 'zip' or None, from the magic bytes (HDF5 may sit after a user block of
    512, 1024, 2048, ... bytes)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(_ZIP_MAGIC):
            return "zip"
        offset = 0
        while len(head) == 8:
            if head == _HDF5_MAGIC:
                return "hdf5"
            offset = 512 if offset == 0 else offset * 2
            if offset > (1 << 20):
                break
            f.seek(offset)
            head = f.read(8)
    return None


def open_model_file(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file: {path!r}")
    if os.path.isdir(path):
        raise ModelFormatError("is a directory (TensorFlow SavedModel directories are not "
                               "supported; save with model.save('x.keras') or 'x.h5')", path=path)
    kind = sniff(path)
    if kind == "zip":
        # Imported here: zipfile, tempfile and their compressors cost ~1 MiB of resident
        # memory that an .h5 user on a small device need not pay.
        from .keras_zip import KerasZipModel
        model = KerasZipModel(path)
    elif kind == "hdf5":
        model = open_hdf5(path)
    else:
        raise ModelFormatError("neither an HDF5 (.h5) file nor a .keras zip archive", path=path)
    try:
        model.spec = parse_model_config(model.model_config, model.keras_major, path)
    except Exception:
        model.close()
        raise
    return model
