"""Broken model files for test_bad_input.py and test_fuzz.py, and the check they share.

Every broken file starts as a copy of a fixture Keras wrote (weights/fixtures) and is then
edited with h5py, zipfile or byte surgery; nothing here builds a Keras-like file by hand.
`load_and_predict` is the whole user path (load, then predict on the fixture's reference
input); `expect_error` requires the specific edgecore exception with file, layer and
reason, and that no HDF5 file is left open behind it.
"""
import io
import json
import shutil
import struct
import zipfile

import pytest

try:  # edgecore reads files without h5py; only the helpers that edit HDF5 files need it
    import h5py
except ImportError:
    h5py = None


def need_h5py():
    if h5py is None:
        pytest.skip("editing an HDF5 file needs h5py (a test dependency)")
import numpy as np

import edgecore as ec
from fixtures import FIXTURES, inputs_outputs, reference

FLAVOURS = ("k3.h5", "k2.h5", "keras")
H5_FLAVOURS = ("k3.h5", "k2.h5")
# Input -> Conv2D 'conv2d' -> BatchNormalization 'batch_normalization' (folded at load):
# 13-17 KB per flavour, small enough to cut at many offsets, deep enough to reach packing.
BASE = "bn_after_conv_bias"


def fixture_path(case, flavour):
    return FIXTURES / f"{case}.{flavour}"


def copy_fixture(tmp_path, case, flavour, name=None):
    dest = tmp_path / (name or f"{case}.{flavour}")
    shutil.copyfile(fixture_path(case, flavour), dest)
    return dest


def reference_input(case, flavour):
    xs, _ = inputs_outputs(reference(case, flavour))
    return xs if len(xs) > 1 else xs[0]


def reference_output(case, flavour):
    _, ys = inputs_outputs(reference(case, flavour))
    return ys if len(ys) > 1 else ys[0]


def load_and_predict(path, x):
    return ec.load(path).predict(x)


def open_hdf5_objects():
    """HDF5 identifiers still open in this process (files, groups, datasets)."""
    if h5py is None:
        return 0
    h5f = h5py.h5f
    return len(h5f.get_obj_ids(h5f.OBJ_ALL, h5f.OBJ_FILE | h5f.OBJ_GROUP | h5f.OBJ_DATASET
                               | h5f.OBJ_ATTR))


def check_error(exc, path, exc_type=ec.EdgecoreError, layer=None, words=()):
    """exc is exc_type, names the file (and layer), and its reason has each of words."""
    assert isinstance(exc, exc_type), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert exc.path == str(path), (exc.path, str(path))
    assert str(path) in text, text
    assert exc.reason and str(exc.reason) in text, text
    if layer is not None:
        assert exc.layer == layer, (exc.layer, layer, text)
        assert repr(layer) in text, text
    for word in words:
        assert word.lower() in str(exc.reason).lower(), (word, text)


def expect_error(path, exc_type, layer=None, words=(), x=None):
    """Load (and predict on x, if the load succeeds) and return the exception raised."""
    before = open_hdf5_objects()
    try:
        model = ec.load(path)
        if x is not None:
            model.predict(x)
    except ec.EdgecoreError as exc:
        check_error(exc, path, exc_type, layer, words)
        assert open_hdf5_objects() == before, "an HDF5 file was left open after the error"
        return exc
    raise AssertionError(f"{path} loaded without the expected {exc_type.__name__}")


# --- zip ----------------------------------------------------------------------------------
def rewrite_zip(path, replace=None, drop=(), compression=None):
    """Rewrite the archive with members replaced ({name: bytes}) or dropped, keeping the
    order and (unless given) each member's compression."""
    replace = replace or {}
    with zipfile.ZipFile(path) as zin:
        members = [(info, zin.read(info.filename)) for info in zin.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zout:
        for info, data in members:
            if info.filename in drop:
                continue
            kind = info.compress_type if compression is None else compression
            zout.writestr(info.filename, replace.get(info.filename, data), compress_type=kind)
    path.write_bytes(out.getvalue())


def zip_member(path, name):
    with zipfile.ZipFile(path) as z:
        return z.read(name)


def zip_member_range(path, name):
    """(start, end) byte offsets of a stored member's data inside the archive."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    start = info.header_offset + 30 + name_len + extra_len
    return start, start + info.compress_size


# --- config -------------------------------------------------------------------------------
def read_config_text(path):
    if path.suffix == ".keras":
        return zip_member(path, "config.json").decode("utf-8")
    from edgecore.formats import h5native

    with h5native.File(path, "r") as f:
        value = f.attrs["model_config"]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def write_config_text(path, text):
    if path.suffix == ".keras":
        rewrite_zip(path, {"config.json": text.encode("utf-8")})
    else:
        need_h5py()
        with h5py.File(path, "r+") as f:
            f.attrs["model_config"] = text


def edit_config(path, edit):
    """edit(config dict) edits in place and returns whatever the caller wants back (the
    name of the layer it touched); the edited config is written back as JSON."""
    config = json.loads(read_config_text(path))
    result = edit(config)
    write_config_text(path, json.dumps(config))
    return result


def layers(config):
    return config["config"]["layers"]


def layer_entry(config, class_name=None, name=None):
    for entry in layers(config):
        if entry["class_name"] == class_name or entry.get("name") == name:
            return entry
    raise KeyError(class_name or name)


def input_shape_key(entry):
    return "batch_shape" if "batch_shape" in entry["config"] else "batch_input_shape"


def rename_inbound(entry, old, new):
    """Point every inbound reference of entry from layer `old` to layer `new`, in both the
    Keras 3 (keras_history) and the Keras 2 ([layer, node, tensor, kwargs]) spelling."""
    def walk(value):
        if isinstance(value, dict):
            history = value.get("config", {}).get("keras_history") if isinstance(
                value.get("config"), dict) else None
            if history and history[0] == old:
                history[0] = new
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            if len(value) >= 3 and value[0] == old and isinstance(value[1], int):
                value[0] = new
            for item in value:
                walk(item)
    walk(entry["inbound_nodes"])


# --- weights ------------------------------------------------------------------------------
def edit_h5_weights(path, edit):
    """edit(h5py File opened r+) on a .h5 file, or on the model.weights.h5 of a .keras."""
    need_h5py()
    if path.suffix != ".keras":
        with h5py.File(path, "r+") as f:
            return edit(f)
    buf = io.BytesIO(zip_member(path, "model.weights.h5"))
    with h5py.File(buf, "r+") as f:
        result = edit(f)
    rewrite_zip(path, {"model.weights.h5": buf.getvalue()})
    return result


def weight_dataset_path(f, layer, index):
    """HDF5 path of a layer's index-th weight, in either file layout."""
    if "model_weights" in f:
        name = f["model_weights"][layer].attrs["weight_names"][index]
        name = name.decode() if isinstance(name, bytes) else str(name)
        return f"model_weights/{layer}/{name}"
    for auto in f["layers"]:
        vars_group = f["layers"][auto]["vars"]
        if vars_group.attrs.get("name") == layer:
            return f"layers/{auto}/vars/{index}"
    raise KeyError(layer)


def layer_group_path(f, layer):
    """HDF5 path of the group holding a layer's weights (h5) or its vars (.keras)."""
    path = weight_dataset_path(f, layer, 0)
    return f"model_weights/{layer}" if path.startswith("model_weights") else path.rsplit("/", 1)[0]


def replace_dataset(f, dataset_path, data=None, **create):
    del f[dataset_path]
    if data is not None:
        f[dataset_path] = data
    else:
        f.create_dataset(dataset_path, **create)


# --- byte surgery -------------------------------------------------------------------------
HDF5_SIGNATURES = (b"\x89HDF", b"OHDR", b"TREE", b"HEAP", b"SNOD", b"GCOL", b"FRHP", b"BTHD",
                   b"FHDB", b"FHIB", b"OCHK")


def hdf5_boundaries(data, base=0):
    """Offsets where an HDF5 structure starts or ends: every signature, the end of the
    superblock, the start and end of every dataset's raw data (offsets from base)."""
    need_h5py()
    found = set()
    for signature in HDF5_SIGNATURES:
        pos = data.find(signature)
        while pos >= 0:
            found.update((pos, pos + 4, pos + 8))  # signature, version, first field
            pos = data.find(signature, pos + 1)
    with h5py.File(io.BytesIO(data), "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                offset = obj.id.get_offset()
                if offset is not None:
                    found.update((offset, offset + obj.id.get_storage_size()))
        f.visititems(visit)
    found.add(96)  # end of a version 0 superblock with its root symbol table entry
    return {base + p for p in found}


def zip_boundaries(data):
    """Offsets of every local header, member data start and end, the central directory
    and the end record, plus the HDF5 boundaries inside a stored model.weights.h5."""
    found = set()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:
                                                           info.header_offset + 30])
            start = info.header_offset + 30 + name_len + extra_len
            found.update((info.header_offset, start, start + info.compress_size))
            if info.filename == "model.weights.h5" and info.compress_type == zipfile.ZIP_STORED:
                found |= hdf5_boundaries(data[start:start + info.compress_size], start)
    central = data.rfind(b"PK\x01\x02")
    found.add(data.find(b"PK\x01\x02"))
    found.update((central, data.rfind(b"PK\x05\x06")))
    return found


def truncation_offsets(data, boundaries, step=64):
    """Every step-th offset plus each boundary and its neighbours, below len(data)."""
    offsets = set(range(0, len(data), step))
    for b in boundaries:
        offsets.update((b - 1, b, b + 1))
    return sorted(o for o in offsets if 0 <= o < len(data))


def patch_hdf5_eof(data):
    """A truncated HDF5 image whose version-0 superblock claims the new length, so the
    library does not notice the truncation on open and reads into the missing part."""
    out = bytearray(data)
    if len(out) >= 48 and out[8] == 0:
        out[40:48] = struct.pack("<Q", len(out))
    return bytes(out)


def global_heap_objects(data):
    """(collection offset, [(object offset, index, size)]) of the first global heap."""
    pos = data.find(b"GCOL")
    size = struct.unpack("<Q", data[pos + 8:pos + 16])[0]
    objects, p = [], pos + 16
    while p + 16 <= pos + size:
        index = struct.unpack("<H", data[p:p + 2])[0]
        obj_size = struct.unpack("<Q", data[p + 8:p + 16])[0]
        objects.append((p, index, obj_size))
        if index == 0:
            break
        p += 16 + (obj_size + 7) // 8 * 8
    return pos, objects


def fill(rng, n):
    return bytes(rng.randrange(256) for _ in range(n))


def mutate_bytes(data, ops):
    """Apply byte-level mutations: ("set", pos, byte), ("flip", pos, bit),
    ("word", pos, uint64), ("insert", pos, bytes), ("delete", pos, n), ("truncate", pos)."""
    out = bytearray(data)
    for op in ops:
        kind, pos = op[0], op[1] % max(1, len(out))
        if not out:
            break
        if kind == "set":
            out[pos] = op[2]
        elif kind == "flip":
            out[pos] ^= 1 << op[2]
        elif kind == "word":
            out[pos:pos + 8] = struct.pack("<Q", op[2])[:len(out) - pos]
        elif kind == "insert":
            out[pos:pos] = op[2]
        elif kind == "delete":
            del out[pos:pos + op[2]]
        elif kind == "truncate":
            del out[pos:]
    return bytes(out)


def mutate_text(text, ops):
    """Text mutations of a JSON config: ("char", pos, ch), ("cut", pos, n),
    ("token", k, replacement): replace the k-th number/string/literal token."""
    import re

    for op in ops:
        if not text:
            break
        kind = op[0]
        if kind == "char":
            pos = op[1] % len(text)
            text = text[:pos] + op[2] + text[pos + 1:]
        elif kind == "cut":
            pos = op[1] % len(text)
            text = text[:pos] + text[pos + op[2]:]
        elif kind == "token":
            tokens = [m.span() for m in re.finditer(
                r'-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|"(?:[^"\\]|\\.)*"|\btrue\b|\bfalse\b|\bnull\b',
                text)]
            if tokens:
                a, b = tokens[op[1] % len(tokens)]
                text = text[:a] + op[2] + text[b:]
    return text


# Replacement tokens for config mutations: sizes at and past every limit, wrong types,
# and names that exist elsewhere in the model (dangling or duplicate references).
TOKENS = ("0", "-1", "1", "3", "7", "1e12", "1e999", "-1e999", "NaN", "Infinity", "4096",
          "65536", "16777216", "16777217", "2147483648", "2.5", "null", "true", "[]", "{}",
          '""', '"x"', '"same"', '"valid"', '"relu"', '"softmax"', '"Lambda"', '"Dense"',
          '"conv2d"', '"input_layer"', '"input_1"', '"batch_normalization"',
          '"channels_first"', "[0, 3]", "[null, 1000000000, 3]", "[[]]", "[1, 2, 3, 4, 5]")
# uint64 values for ("word", ...) byte mutations: sizes and addresses at the edges.
WORDS = (0, 1, 8, 0xFFFF, 2**31, 2**32, 2**62, 2**63, 2**64 - 1)


def apply_mutation(path, target, ops):
    """Mutate the file at path in place.  target: "bytes" (the file), "weights" (the
    model.weights.h5 of a .keras, re-zipped) or "config" (the model config text)."""
    if target == "bytes":
        path.write_bytes(mutate_bytes(path.read_bytes(), ops))
    elif target == "weights":
        rewrite_zip(path, {"model.weights.h5": mutate_bytes(zip_member(path, "model.weights.h5"),
                                                            ops)})
    elif target == "config":
        write_config_text(path, mutate_text(read_config_text(path), ops))
    else:
        raise ValueError(target)


def outcome(path, x):
    """'ok', or the name of the edgecore (or FileNotFoundError) exception; anything else
    propagates.  Checks the exception names the file and no HDF5 object stays open."""
    before = open_hdf5_objects()
    try:
        out = load_and_predict(path, x)
        for array in out if isinstance(out, list) else [out]:
            assert isinstance(array, np.ndarray) and array.dtype == np.float32
        result = "ok"
    except ec.EdgecoreError as exc:
        check_error(exc, path)
        result = type(exc).__name__
    except FileNotFoundError:
        result = "FileNotFoundError"
    assert open_hdf5_objects() == before, f"HDF5 objects left open ({result})"
    return result
