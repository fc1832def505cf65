"""Keras 3 `.keras` archives: a zip of metadata.json, config.json and model.weights.h5.

The weights file is opened in place inside the zip (Keras stores it uncompressed), so it
is never extracted to disk or copied whole into memory; only a re-zipped, compressed copy
is decompressed once, to an anonymous temporary file.  Its layout is
`layers/<auto>/vars/<i>` where <auto> is a snake-case class name with a per-class counter,
NOT the layer name; each `vars` group carries the real layer name as attribute `name`,
which is what we key on.  Nested models nest: `layers/functional/layers/conv2d/vars/0`.
Variables are positional, in the layer's own order (Keras's save_own_variables).
"""
import json
import os
import shutil
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from ..errors import ModelFormatError
from . import h5native
from .h5guard import read_attr
from .weights import HDF5_ERRORS, WeightRef, hdf5_errors, read_dataset

# Bytes of JSON we accept: MobileNetV2's config is 166 KB; a 64 MB config is hostile.
MAX_JSON_BYTES = 64 << 20
# What zipfile raises on a damaged archive: bad headers or CRC (BadZipFile), an unknown or
# unavailable compression method (NotImplementedError), an encrypted member (RuntimeError),
# a damaged compressed stream (zlib.error, EOFError), undecodable names (ValueError).
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, RuntimeError,
              NotImplementedError, EOFError, zlib.error)
# Largest compressed model.weights.h5 we decompress (its declared size; zipfile stops there).
MAX_DEFLATED_WEIGHTS_BYTES = 4 << 30
# Nesting of `layers/<auto>/layers/...` groups: Keras applications nest 2 deep; a deeper
# tree is a damaged file (e.g. a hard link pointing back at its parent, a cycle).
MAX_NESTING = 64


class KerasZipModel:
    flavour = "keras-zip"

    def __init__(self, path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path, "r")
        except ZIP_ERRORS as exc:
            raise ModelFormatError(f"not a valid .keras zip archive: {exc}", path=path) from None
        self.h5 = self._weights_member = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self):
        names = set(self.zip.namelist())
        for required in ("config.json", "model.weights.h5"):
            if required not in names:
                raise ModelFormatError(f".keras archive has no {required}", path=self.path)
        metadata = self._json("metadata.json") if "metadata.json" in names else {}
        if not isinstance(metadata, dict):
            raise ModelFormatError("metadata.json is not a JSON object", path=self.path)
        self.keras_version = str(metadata.get("keras_version", "3"))
        self.keras_major = 3
        config = self._json("config.json")
        if not isinstance(config, dict):
            raise ModelFormatError("config.json is not a JSON object", path=self.path)
        self.model_config = config
        compile_config = config.get("compile_config") or None
        self.training_config = compile_config
        try:
            self._weights_member = self._open_weights()
            self.h5 = h5native.File(self._weights_member, "r", label=self.path)
        except ModelFormatError as exc:  # a ValueError, so let it through here
            if "model.weights.h5" not in str(exc.reason):
                exc.reason = f"model.weights.h5 inside the archive: {exc.reason}"
                exc.args = (exc._message(),)
            raise
        except HDF5_ERRORS + ZIP_ERRORS as exc:
            raise ModelFormatError(f"model.weights.h5 inside the archive is not readable "
                                   f"HDF5: {exc}", path=self.path) from None
        self.weights = KerasZipWeightSource(self.path, self.h5)

    def _open_weights(self):
        """model.weights.h5 copied once, front to back, to an anonymous temporary file:
        by the kernel when stored (as Keras writes it; copy_file_range), else
        decompressed.  h5native then maps it.  (With h5py, reading the member inside the
        archive through a Python file object made EfficientNetB0's .keras load 6x slower
        than its .h5; the copy costs ~7 ms for its 20 MB.)"""
        info = self.zip.getinfo("model.weights.h5")
        if info.compress_type == zipfile.ZIP_STORED:
            self.zip.open(info).close()  # checks the local header's signature and name
            extracted = tempfile.TemporaryFile()
            try:
                with open(self.path, "rb") as f:  # local header: 30 bytes, name, extra field
                    f.seek(info.header_offset + 26)
                    name_len, extra_len = struct.unpack("<HH", f.read(4))
                    start = info.header_offset + 30 + name_len + extra_len
                    _copy_range(f, extracted, start, info.compress_size, self.path)
            except BaseException:
                extracted.close()
                raise
            return extracted
        if info.file_size > MAX_DEFLATED_WEIGHTS_BYTES:
            raise ModelFormatError(f"compressed model.weights.h5 declares {info.file_size} "
                                   f"bytes; refusing to decompress it", path=self.path)
        extracted = tempfile.TemporaryFile()
        try:
            with self.zip.open(info) as member:
                shutil.copyfileobj(member, extracted, 1 << 20)
        except BaseException:
            extracted.close()
            raise
        return extracted

    def _json(self, member):
        info = self.zip.getinfo(member)
        if info.file_size > MAX_JSON_BYTES:
            raise ModelFormatError(f"{member} is {info.file_size} bytes; refusing to parse it",
                                   path=self.path)
        try:
            text = self.zip.read(member)
        except ZIP_ERRORS as exc:
            raise ModelFormatError(f"cannot read {member} from the archive: {exc}",
                                   path=self.path) from None
        try:
            return json.loads(text.decode("utf-8"))
        except RecursionError:
            raise ModelFormatError(f"{member} is JSON nested too deeply", path=self.path) from None
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ModelFormatError(f"{member} is not valid JSON: {exc}", path=self.path) from None

    def close(self):
        try:
            if self.h5 is not None:
                self.h5.close()
            if self._weights_member is not None:
                self._weights_member.close()
        finally:
            self.zip.close()


def _copy_range(src, dst, start, size, path):
    """Bytes [start, start + size) of src into dst, in the kernel where it can
    (os.copy_file_range, Linux and Android), else through a 1 MiB buffer."""
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(src.fileno(), dst.fileno(), size - copied, start + copied)
            if n <= 0:
                break
            copied += n
    except (AttributeError, OSError):  # no copy_file_range here: copy what is left
        src.seek(start + copied)
        dst.seek(copied)
        while copied < size:
            chunk = src.read(min(1 << 20, size - copied))
            if not chunk:
                break
            dst.write(chunk)
            copied += len(chunk)
    if copied != size:
        raise ModelFormatError("model.weights.h5 is truncated inside the archive", path=path)
    dst.flush()


class KerasZipWeightSource:
    def __init__(self, path, h5file):
        self.path = path
        self.file = h5file
        self._vars = {}  # layer path (tuple of names) -> HDF5 path of its vars group
        with hdf5_errors(path, "cannot list the layers of model.weights.h5"):
            self._walk(h5file, "", ())

    def _walk(self, group, prefix, names):
        """Map each layer's path of names to its vars group."""
        layers = group.get("layers")
        if not isinstance(layers, h5native.Group):
            return
        if len(names) >= MAX_NESTING:
            raise ModelFormatError(f"model.weights.h5 nests layers more than {MAX_NESTING} "
                                   f"deep at {prefix!r} (a cycle?)", path=self.path)
        for auto in layers:
            child = layers.get(auto)
            if not isinstance(child, h5native.Group):
                continue
            name = None
            vars_group = child.get("vars")
            if isinstance(vars_group, h5native.Group) and "name" in vars_group.attrs:
                name = self._name_attr(vars_group, f"{prefix}layers/{auto}/vars")
            name = auto if name is None else (name.decode() if isinstance(name, bytes) else str(name))
            child_path = f"{prefix}layers/{auto}"
            self._vars[names + (name,)] = f"{child_path}/vars"
            self._walk(child, child_path + "/", names + (name,))

    def _name_attr(self, group, where):
        """The `name` attribute of a vars group (h5guard's datatype check first: only a
        string or a number is read)."""
        value = read_attr(group, "name", self.path)
        if np.shape(value) != ():
            raise ModelFormatError(f"attribute 'name' of {where!r} has a damaged or foreign "
                                   f"datatype or shape", path=self.path)
        return value.item() if isinstance(value, np.generic) else value

    def index(self, leaves):
        result = {}
        for slots in leaves:
            expected = len(slots.variables)
            vars_path = self._vars.get(slots.path)
            count = 0
            with hdf5_errors(self.path, "cannot list the layer's variables",
                             layer="/".join(slots.path), layer_class=slots.class_name):
                vars_group = None if vars_path is None else self.file.get(vars_path)
                if isinstance(vars_group, h5native.Group):
                    count = sum(1 for key in vars_group if key.isdigit())
            if count != expected:
                raise ModelFormatError(
                    f"model.weights.h5 has {count} variable(s) for this layer, its config "
                    f"implies {expected} {[v[0] for v in slots.variables]}",
                    path=self.path, layer="/".join(slots.path), layer_class=slots.class_name)
            result[slots.path] = [WeightRef(f"{vars_path}/{i}", slots.variables[i][0])
                                  for i in range(expected)]
        return result

    def read(self, ref, expected_shape, slots, out=None):
        return read_dataset(self.file, ref, expected_shape, self.path, slots, out)
