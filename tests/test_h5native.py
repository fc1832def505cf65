"""formats/h5native.py, edgecore's own HDF5 reader and writer, against h5py (issue 15).

Reading: every committed Keras-written fixture (.h5, and model.weights.h5 inside each
.keras) and the bundled pretrained backbone give the same group order, attribute values
and arrays through both readers.  Writing: files the writer makes open in h5py with the
same content.  Without h5py installed these cross-checks skip; test_no_h5py.py proves
edgecore runs without it.
"""
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgecore.errors import ModelFormatError
from edgecore.formats import h5native

h5py = pytest.importorskip("h5py")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "weights" / "fixtures").glob("*.h5"))
KERAS = sorted((ROOT / "weights" / "fixtures").glob("*.keras"))
PRETRAINED = sorted((ROOT / "weights" / "pretrained").glob("*.h5"))


def _same_value(ours, theirs, where):
    if isinstance(theirs, np.ndarray):
        assert isinstance(ours, np.ndarray), where
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, \
            (where, ours.dtype, theirs.dtype, ours.shape, theirs.shape)
        if theirs.dtype == object:
            assert ours.tolist() == theirs.tolist(), where
        else:
            assert ours.tobytes() == theirs.tobytes(), where
    else:
        assert type(ours) is type(theirs), (where, type(ours), type(theirs))
        assert ours == theirs, where


def walk_both(ours, theirs, where, counts):
    """Recursively compare a group of h5native with the same group of h5py."""
    assert sorted(ours.attrs.keys()) == sorted(theirs.attrs.keys()), where
    for name in theirs.attrs:
        _same_value(ours.attrs[name], theirs.attrs[name], f"{where} attr {name}")
        counts["attrs"] += 1
    if isinstance(theirs, h5py.Dataset):
        assert isinstance(ours, h5native.Dataset), where
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, where
        mine = ours[()]
        theirs_value = theirs[()]
        _same_value(np.asarray(mine), np.asarray(theirs_value), where)
        if theirs.shape and theirs.size:  # read_direct into a float32 destination
            out = np.empty(theirs.shape, np.float32)
            ours.read_direct(out)
            assert out.tobytes() == np.asarray(theirs_value, np.float32).tobytes(), where
        counts["datasets"] += 1
        return
    assert isinstance(ours, h5native.Group), where
    assert list(ours.keys()) == list(theirs.keys()), where  # same order
    counts["groups"] += 1
    for name in theirs:
        walk_both(ours[name], theirs[name], f"{where}/{name}", counts)


def _compare_file(source, label):
    counts = {"groups": 0, "datasets": 0, "attrs": 0}
    theirs = h5py.File(source if isinstance(source, (str, Path)) else io.BytesIO(source.read()),
                       "r")
    if not isinstance(source, (str, Path)):
        source.seek(0)
    ours = h5native.File(source, "r", label=str(label))
    try:
        walk_both(ours, theirs, str(label), counts)
    finally:
        ours.close()
        theirs.close()
    return counts


def test_fixture_lists_are_not_empty():
    assert len(FIXTURES) > 300 and len(KERAS) > 100 and PRETRAINED


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_h5_fixture_reads_as_in_h5py(path):
    counts = _compare_file(path, path)
    assert counts["groups"] >= 2 and counts["attrs"] >= 3


@pytest.mark.parametrize("path", KERAS, ids=lambda p: p.name)
def test_keras_weights_member_reads_as_in_h5py(path, tmp_path):
    member = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(path) as archive:
        member.write_bytes(archive.read("model.weights.h5"))
    counts = _compare_file(member, path)
    assert counts["groups"] >= 1


@pytest.mark.parametrize("path", PRETRAINED, ids=lambda p: p.name)
def test_pretrained_reads_as_in_h5py(path):
    counts = _compare_file(path, path)
    assert counts["datasets"] > 250  # MobileNetV2: 262 variables


def _write_sample(path):
    rng = np.random.default_rng(0)
    with h5native.File(path, "w") as f:
        f.attrs["keras_version"] = "3.15.1"
        f.attrs["model_config"] = ("{\"x\": \"" + "é" * 100_000 + "\"}").encode("utf8")
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [f"layer_{i}".encode() for i in range(300)]
        group.attrs["count"] = np.int64(3)
        group.attrs["empty"] = np.asarray([])
        arrays = {}
        for i in range(300):  # > 2K children: a B-tree with an internal level
            name = f"layer_{i}/layer_{i}/kernel"
            arrays[name] = rng.standard_normal((i % 7 + 1, 3)).astype(np.float32)
            group.create_dataset(name, data=arrays[name])
        group.create_dataset("iteration", data=np.int64(42))
        group.create_dataset("half", data=np.arange(5, dtype=np.float16))
        group.create_dataset("nothing", data=np.zeros((0, 4), np.float32))
    return arrays


def test_written_file_reads_the_same_in_h5py_and_h5native(tmp_path):
    path = tmp_path / "w.h5"
    arrays = _write_sample(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["keras_version"] == "3.15.1"
        assert len(f.attrs["model_config"].encode("utf8")) == 200_009
        assert list(f["model_weights"].attrs["layer_names"])[:2] == ["layer_0", "layer_1"]
        for name, array in arrays.items():
            np.testing.assert_array_equal(f["model_weights"][name][()], array)
        assert f["model_weights/iteration"][()] == 42
        assert f["model_weights/half"].dtype == np.float16
        assert f["model_weights/nothing"].shape == (0, 4)
    counts = _compare_file(path, path)
    assert counts["datasets"] == 303


def test_unsupported_features_are_named(tmp_path):
    path = tmp_path / "gz.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("zipped", data=np.ones((64, 64), np.float32), compression="gzip")
        f.create_dataset("chunked", data=np.arange(100, dtype=np.float32).reshape(10, 10),
                         chunks=(3, 4))
    with h5native.File(path) as f:
        np.testing.assert_array_equal(f["chunked"][()], np.arange(100).reshape(10, 10))
        with pytest.raises(ModelFormatError, match="filters"):
            f["zipped"][()]
    latest = tmp_path / "latest.h5"
    with h5py.File(latest, "w", libver="latest") as f:  # v2 headers, link messages
        f.attrs["a"] = "b"
        f.create_group("g").create_dataset("d", data=np.arange(3.0))
        f["soft"] = h5py.SoftLink("/g")
    with h5native.File(latest) as f:
        assert f.attrs["a"] == "b"
        np.testing.assert_array_equal(f["g/d"][()], np.arange(3.0))
        assert list(f.keys()) == ["g", "soft"]
        with pytest.raises(ModelFormatError, match="soft link"):
            f["soft"]


def test_a_cyclic_group_b_tree_is_refused(tmp_path):
    path = tmp_path / "w.h5"
    _write_sample(path)
    data = bytearray(path.read_bytes())
    # the first child pointer of the first TREE node points back at the node itself
    node = data.find(b"TREE")
    data[node + 32:node + 40] = node.to_bytes(8, "little")
    data[node + 5] = 1  # make it an internal node so the child is walked as a node
    path.write_bytes(bytes(data))
    with h5native.File(path) as f:
        def walk(group):
            for name in group.keys():
                child = group[name]
                if isinstance(child, h5native.Group):
                    walk(child)

        with pytest.raises(ModelFormatError, match="cyclic"):
            walk(f)
