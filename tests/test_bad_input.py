"""Bad input: every broken model file raises a specific edgecore exception that names the
file, the layer and the reason; never a segfault, a hang or a bare KeyError (STYLE.md 19).

Broken files are derived in tmp dirs from fixtures Keras wrote (tests/badfiles.py: copy,
then edit with h5py, zipfile or byte surgery).  Cases: files that are not models at all;
truncation at a dense set of offsets; config edits (invalid JSON, non-models, dangling and
duplicate names, absurd sizes, unknown classes, Lambda bytecode, custom layers); weight
edits (missing, misshapen, non-numeric, unreachable); two byte patterns that crash or hang
the HDF5 library itself, run in a subprocess.  The hypothesis fuzz is in test_fuzz.py.
"""
import ast
import base64
import json
import marshal
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")  # test-only: crafts or cross-checks files

import edgecore as ec
from badfiles import (BASE, FLAVOURS, H5_FLAVOURS, check_error, copy_fixture, edit_config,
                      edit_h5_weights, expect_error, fixture_path, global_heap_objects,
                      hdf5_boundaries, input_shape_key, layer_entry, layer_group_path,
                      load_and_predict, patch_hdf5_eof, read_config_text, reference_input,
                      reference_output,
                      rename_inbound, replace_dataset, rewrite_zip, truncation_offsets,
                      weight_dataset_path, write_config_text, zip_boundaries, zip_member)

TESTS = Path(__file__).resolve().parent
MODEL_NAME = BASE  # the Functional model's own name in the fixture configs


def base_copy(tmp_path, flavour, case=BASE):
    return copy_fixture(tmp_path, case, flavour)


# --- not a model file ------------------------------------------------------------------------
def test_missing_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        ec.load(tmp_path / "no_such_model.h5")


def test_directory_raises_model_format_error(tmp_path):
    expect_error(tmp_path, ec.ModelFormatError, words=("directory",))


NOT_MODELS = {
    "empty": b"",
    "text": b"this is a model, honest\n",
    "json_config_alone": b'{"class_name": "Functional", "config": {"layers": []}}',
    "random_bytes": np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "png_header": b"\x89PNG\r\n\x1a\n" + bytes(64),
    "hdf5_magic_then_garbage": b"\x89HDF\r\n\x1a\n" + b"\xff" * 600,
    "zip_magic_then_garbage": b"PK\x03\x04" + b"\x00\xff" * 300,
    "nul_bytes": bytes(100_000),
}


@pytest.mark.parametrize("name", sorted(NOT_MODELS))
@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_file_that_is_not_a_model(tmp_path, name, suffix):
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(NOT_MODELS[name])
    expect_error(path, ec.ModelFormatError)


def test_hdf5_without_model_config_is_refused(tmp_path):
    path = base_copy(tmp_path, "k3.h5")
    edit_h5_weights(path, lambda f: f.attrs.__delitem__("model_config"))
    expect_error(path, ec.ModelFormatError, words=("model_config",))


def test_zip_that_is_not_a_keras_archive(tmp_path):
    path = tmp_path / "notes.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "not a model")
    expect_error(path, ec.ModelFormatError, words=("config.json",))


# --- truncation ----------------------------------------------------------------------------
def _boundaries(data, flavour):
    return zip_boundaries(data) if flavour == "keras" else hdf5_boundaries(data)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_truncated_file_raises_at_every_offset(tmp_path, flavour):
    """Every 64th byte of a ~16 KB fixture plus each structure boundary and its
    neighbours: the cut file must raise an EdgecoreError naming it, nothing else."""
    data = fixture_path(BASE, flavour).read_bytes()
    offsets = truncation_offsets(data, _boundaries(data, flavour))
    assert len(offsets) > len(data) // 64 + 20
    path = tmp_path / f"cut.{flavour}"
    failures = []
    for offset in offsets:
        path.write_bytes(data[:offset])
        try:
            ec.load(path)
            failures.append((offset, "loaded"))
        except ec.EdgecoreError as exc:
            try:
                check_error(exc, path, ec.ModelFormatError)
            except AssertionError as bad:
                failures.append((offset, str(bad)))
        except Exception as exc:  # noqa: BLE001 - the point of the test
            failures.append((offset, f"{type(exc).__name__}: {exc}"))
    assert not failures, f"{len(failures)} of {len(offsets)} offsets: {failures[:5]}"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_truncated_hdf5_that_hides_its_truncation(tmp_path, flavour):
    """The superblock is patched to claim the cut length, so the HDF5 library opens the
    file and only meets the damage deep inside (for .keras: the inner model.weights.h5,
    re-zipped).  Each cut must raise an EdgecoreError, or, when it removed only bytes the
    model never reads, predict exactly what Keras did."""
    data = fixture_path(BASE, flavour).read_bytes()
    inner = zip_member(fixture_path(BASE, flavour), "model.weights.h5") if flavour == "keras" else data
    offsets = truncation_offsets(inner, hdf5_boundaries(inner))
    x, y = reference_input(BASE, flavour), reference_output(BASE, flavour)
    path = tmp_path / f"cut.{flavour}"
    failures, loaded = [], 0
    for offset in offsets:
        cut = patch_hdf5_eof(inner[:offset])
        if flavour == "keras":
            path.write_bytes(data)
            rewrite_zip(path, {"model.weights.h5": cut})
        else:
            path.write_bytes(cut)
        try:
            got = load_and_predict(path, x)
            loaded += 1
            if not np.array_equal(got, y.astype(np.float32)) and \
                    not np.abs(got - y).max() <= 1e-4 * max(1.0, np.abs(y).max()):
                failures.append((offset, "loaded with wrong outputs"))
        except ec.EdgecoreError as exc:
            try:
                check_error(exc, path)
            except AssertionError as bad:
                failures.append((offset, str(bad)))
        except Exception as exc:  # noqa: BLE001
            failures.append((offset, f"{type(exc).__name__}: {exc}"))
    assert not failures, f"{len(failures)} of {len(offsets)} offsets: {failures[:5]}"
    assert loaded < len(offsets) // 2


# --- config edits --------------------------------------------------------------------------
def _set(class_name, key, value):
    def edit(config):
        entry = layer_entry(config, class_name)
        entry["config"][key] = value
        return entry["name"]
    return edit


def _input_shape(shape, blame=None):
    """Set the InputLayer's batch shape; the error names it, or `blame`."""
    def edit(config):
        entry = layer_entry(config, "InputLayer")
        entry["config"][input_shape_key(entry)] = shape
        return blame or entry["name"]
    return edit


def _dangling_inbound(config):
    entry = layer_entry(config, "BatchNormalization")
    rename_inbound(entry, "conv2d", "ghost_layer")
    return entry["name"]


def _cycle(config):
    conv = layer_entry(config, "Conv2D")
    rename_inbound(conv, layer_entry(config, "InputLayer")["name"], "batch_normalization")
    return conv["name"]


def _missing_output(config):
    def walk(value):
        return ([walk(v) for v in value] if isinstance(value, list)
                else "ghost_output" if value == "batch_normalization" else value)
    config["config"]["output_layers"] = walk(config["config"]["output_layers"])
    return MODEL_NAME


def _duplicate_names(config):
    entry = layer_entry(config, "BatchNormalization")
    entry["name"] = entry["config"]["name"] = "conv2d"
    return MODEL_NAME


def _set_on_conv2d(key, value):
    """An edit that sets the Conv2D entry's `key` (e.g. class_name, inbound_nodes)."""
    def edit(config):
        entry = layer_entry(config, "Conv2D")
        entry[key] = value
        return entry["name"]
    return edit


def _bump_node_index(entry):
    """Make the layer consume call 7 of its input layer (which is called once)."""
    def walk(value):
        if isinstance(value, dict):
            history = value.get("config", {}).get("keras_history") if isinstance(
                value.get("config"), dict) else None
            if history:
                history[1] = 7
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
                value[1] = 7
            for item in value:
                walk(item)
    walk(entry["inbound_nodes"])
    return entry["name"]


def _input_layers(select):
    """Replace input_layers by select(list of [name, node, tensor]); the error names the
    model.  Keras 3 writes a single input flat, Keras 2 as a list of lists."""
    def edit(config):
        entries = config["config"]["input_layers"]
        entries = [entries] if isinstance(entries[0], str) else entries
        config["config"]["input_layers"] = select(entries)
        return config["config"]["name"]
    return edit


_K3_HISTORY_TOO_SHORT = [{"args": [{"class_name": "__keras_tensor__",
                                    "config": {"keras_history": ["input_layer"]}}]}]

# (id, case, edit -> name of the layer the error must name, exception, words in reason)
CONFIG_CASES = [
    ("dense_units_1e12", "dense_relu", _set("Dense", "units", 1e12), ec.ModelFormatError, ("units",)),
    ("dense_units_negative", "dense_relu", _set("Dense", "units", -5), ec.ModelFormatError, ("units",)),
    ("dense_units_zero", "dense_relu", _set("Dense", "units", 0), ec.ModelFormatError, ("units",)),
    ("dense_units_infinite", "dense_relu", _set("Dense", "units", float("inf")), ec.ModelFormatError,
     ("overflow",)),
    ("dense_units_nan", "dense_relu", _set("Dense", "units", float("nan")), ec.ModelFormatError, ("nan",)),
    ("dense_units_string", "dense_relu", _set("Dense", "units", "many"), ec.ModelFormatError, ("many",)),
    ("dense_units_missing", "dense_relu", lambda c: (layer_entry(c, "Dense")["config"].pop("units"),
                                                     "dense")[1], ec.ModelFormatError, ("units",)),
    ("conv_kernel_0x3", BASE, _set("Conv2D", "kernel_size", [0, 3]), ec.ModelFormatError, ("kernel_size",)),
    ("conv_kernel_negative", BASE, _set("Conv2D", "kernel_size", [-1, 3]), ec.ModelFormatError,
     ("kernel_size",)),
    ("conv_kernel_one_number", BASE, _set("Conv2D", "kernel_size", [3]), ec.ModelFormatError,
     ("kernel_size",)),
    ("conv_kernel_string", BASE, _set("Conv2D", "kernel_size", "3x3"), ec.ModelFormatError,
     ("kernel_size",)),
    ("conv_kernel_huge", BASE, _set("Conv2D", "kernel_size", [100000, 3]), ec.ModelFormatError,
     ("kernel_size",)),
    ("conv_strides_zero", BASE, _set("Conv2D", "strides", [0, 1]), ec.ModelFormatError, ("strides",)),
    ("conv_filters_1e12", BASE, _set("Conv2D", "filters", 1e12), ec.ModelFormatError, ("filters",)),
    ("conv_filters_negative", BASE, _set("Conv2D", "filters", -4), ec.ModelFormatError, ("filters",)),
    ("conv_padding_reflect", BASE, _set("Conv2D", "padding", "reflect"), ec.UnsupportedLayerError,
     ("padding",)),
    ("conv_channels_first", BASE, _set("Conv2D", "data_format", "channels_first"),
     ec.UnsupportedLayerError, ("channels_first",)),
    ("conv_unknown_activation", BASE, _set("Conv2D", "activation", "superswish"),
     ec.UnsupportedLayerError, ("superswish",)),
    ("bn_negative_epsilon", BASE, _set("BatchNormalization", "epsilon", -1.0), ec.ModelFormatError,
     ("epsilon",)),
    ("bn_axis_out_of_range", BASE, _set("BatchNormalization", "axis", 9), ec.ModelFormatError, ("axis",)),
    ("input_1e9_rows", BASE, _input_shape([None, 1000000000, 3]), ec.ModelFormatError,
     ("1000000000",)),
    ("input_2e48_elements", BASE, _input_shape([None, 1 << 24, 1 << 24, 5]), ec.ModelFormatError,
     ("absurdly large",)),
    ("input_negative", BASE, _input_shape([None, -6, 5, 5]), ec.ModelFormatError, ("-6",)),
    ("input_zero", BASE, _input_shape([None, 0, 5, 5]), ec.ModelFormatError, ("0",)),
    ("input_not_a_list", BASE, _input_shape("six by five"), ec.ModelFormatError, ("six by five",)),
    ("input_empty", BASE, _input_shape([]), ec.ModelFormatError, ("input shape",)),
    ("input_channels_disagree_with_weights", BASE, _input_shape([None, 6, 5, 7], "conv2d"),
     ec.ModelFormatError, ("shape",)),
    ("inbound_missing_layer", BASE, _dangling_inbound, ec.ModelFormatError, ("ghost_layer",)),
    ("inbound_cycle", BASE, _cycle, ec.ModelFormatError, ("produces",)),
    ("inbound_not_a_list", BASE, _set_on_conv2d("inbound_nodes", [42]), ec.ModelFormatError, ("inbound",)),
    ("inbound_history_too_short", BASE, _set_on_conv2d("inbound_nodes", _K3_HISTORY_TOO_SHORT),
     ec.ModelFormatError, ("inbound",)),
    ("inbound_node_index_out_of_range", BASE,
     lambda c: _bump_node_index(layer_entry(c, "BatchNormalization")), ec.ModelFormatError,
     ("produces",)),
    ("output_missing_layer", BASE, _missing_output, ec.ModelFormatError, ("ghost_output",)),
    ("input_layers_name_a_non_input", BASE, _input_layers(lambda e: [["conv2d", 0, 0]]),
     ec.ModelFormatError, ("not of an InputLayer",)),
    ("input_layers_list_one_twice", BASE, _input_layers(lambda e: e + e), ec.ModelFormatError,
     ("twice",)),
    ("input_layers_miss_one", "graph_multi_input", _input_layers(lambda e: e[:1]),
     ec.ModelFormatError, ("not in input_layers",)),
    ("duplicate_layer_names", BASE, _duplicate_names, ec.ModelFormatError, ("duplicate", "conv2d")),
    ("unknown_layer_class", BASE, _set_on_conv2d("class_name", "Conv3DTranspose"), ec.UnsupportedLayerError,
     ("Conv3DTranspose",)),
    ("custom_registered_class", BASE, _set_on_conv2d("class_name", "my_package>FancyConv"),
     ec.UnsupportedLayerError, ("my_package>FancyConv",)),
    ("lambda_class_on_a_conv", BASE, _set_on_conv2d("class_name", "Lambda"), ec.UnsupportedLayerError,
     ("bytecode",)),
    ("layer_without_config", BASE, lambda c: (layer_entry(c, "Conv2D").__setitem__("config", None),
                                              "conv2d")[1], ec.ModelFormatError, ("config",)),
]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("case_id,case,edit,exc_type,words", CONFIG_CASES,
                         ids=[c[0] for c in CONFIG_CASES])
def test_config_edit(tmp_path, flavour, case_id, case, edit, exc_type, words):
    path = base_copy(tmp_path, flavour, case)
    layer = edit_config(path, edit)
    exc = expect_error(path, exc_type, layer=layer, words=words,
                       x=reference_input(case, flavour))
    if layer != MODEL_NAME and exc.layer_class is not None:
        assert exc.layer_class in str(exc)


MODEL_LEVEL_CONFIGS = {
    "truncated_json": ('{"class_name": "Functional", "config": {"layers": [', ("json",)),
    "not_json": ("model = keras.Sequential()", ("json",)),
    "json_list": ("[1, 2, 3]", ("json object",)),
    "json_string": ('"Functional"', ("json object",)),
    "json_null": ("null", ("json object",)),
    "empty_object": ("{}", ("not a keras",)),
    "a_layer_not_a_model": ('{"class_name": "Dense", "config": {"units": 3}}', ("'Dense'",)),
    "model_without_config": ('{"class_name": "Functional"}', ("config",)),
    "layers_not_a_list": ('{"class_name": "Functional", "config": {"layers": 5}}', ("layers",)),
    "layer_entry_not_an_object": ('{"class_name": "Sequential", "config": {"layers": [7]}}',
                                  ("layer entry",)),
    "sequential_without_layers": ('{"class_name": "Sequential", "config": {"layers": []}}',
                                  ("without",)),
    "functional_without_inputs": ('{"class_name": "Functional", "config": {"layers": []}}',
                                  ("input_layers",)),
    "json_nested_100000_deep": ("[" * 100_000 + "]" * 100_000, ("nested too deeply",)),
}


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("name", sorted(MODEL_LEVEL_CONFIGS))
def test_model_config_replaced(tmp_path, flavour, name):
    text, words = MODEL_LEVEL_CONFIGS[name]
    path = base_copy(tmp_path, flavour)
    write_config_text(path, text)
    expect_error(path, ec.ModelFormatError, words=words)


@pytest.mark.parametrize("depth", [40, 400])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_models_nested_absurdly_deep(tmp_path, flavour, depth):
    """The real model wrapped in `depth` Sequentials: refused before any recursion in the
    parser, graph builder or flattener can overflow the Python stack."""
    path = base_copy(tmp_path, flavour)
    config = json.loads(read_config_text(path))
    model = json.dumps({"class_name": config["class_name"], "config": config["config"],
                        "name": config["config"]["name"]})
    # Written as text: json.dumps itself would overflow the stack on 400 levels.
    text = "".join(f'{{"class_name": "Sequential", "name": "wrap_{i}", "config": '
                   f'{{"name": "wrap_{i}", "layers": [' for i in range(depth))
    write_config_text(path, text + model + "]}}" * depth)
    expect_error(path, ec.ModelFormatError, words=("nested",))


def _dropout_chain(config, n, reverse):
    """The model's InputLayer followed by n Dropout layers in a chain (listed backwards
    when reverse), the last one the output: no weights, so any length loads."""
    first = layer_entry(config, "InputLayer")
    chain = []
    for i in range(n):
        source = first["name"] if i == 0 else f"drop_{i - 1}"
        chain.append({"class_name": "Dropout", "name": f"drop_{i}",
                      "config": {"name": f"drop_{i}", "rate": 0.5},
                      "inbound_nodes": [[[source, 0, 0, {}]]]})
    config["config"]["layers"] = [first] + (chain[::-1] if reverse else chain)
    config["config"]["output_layers"] = [[f"drop_{n - 1}", 0, 0]]
    config["config"]["input_layers"] = [[first["name"], 0, 0]]


def test_layer_count_is_bounded(tmp_path):
    path = base_copy(tmp_path, "k2.h5", "dense_relu")
    edit_config(path, lambda c: _dropout_chain(c, 30000, reverse=False))
    started = time.perf_counter()
    expect_error(path, ec.ModelFormatError, words=("20000 layers",))
    assert time.perf_counter() - started < 5


def test_layers_listed_backwards_load_in_linear_time(tmp_path):
    """Each layer listed before its input: resolving calls by repeated passes over the
    list took 14 s for 4000 layers (one pass per layer, each pass over all of them)."""
    path = base_copy(tmp_path, "k2.h5", "dense_relu")
    edit_config(path, lambda c: _dropout_chain(c, 4000, reverse=True))
    started = time.perf_counter()
    model = ec.load(path)
    assert time.perf_counter() - started < 5
    x = reference_input("dense_relu", "k2.h5")
    np.testing.assert_array_equal(model.predict(x), x)  # Dropout is the identity here


@pytest.mark.parametrize("case", ["graph_shared_conv", "graph_multi_output",
                                  "graph_nested_sequential", "graph_shared_dense_twice"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_layer_list_order_does_not_matter(tmp_path, case, flavour):
    """The same graphs with their layer list reversed predict what Keras did."""
    path = base_copy(tmp_path, flavour, case)
    edit_config(path, lambda c: c["config"]["layers"].reverse())
    got = load_and_predict(path, reference_input(case, flavour))
    want = reference_output(case, flavour)
    for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4 * max(1.0, float(np.abs(w).max())))


@pytest.mark.parametrize("name,content,words", [
    ("missing_config_json", None, ("config.json",)),
    ("metadata_not_json", b"{keras_version: 3", ("metadata.json",)),
    ("metadata_a_list", b"[]", ("metadata.json",)),
])
def test_keras_archive_members(tmp_path, name, content, words):
    path = base_copy(tmp_path, "keras")
    if content is None:
        rewrite_zip(path, drop=("config.json",))
    else:
        rewrite_zip(path, {"metadata.json": content})
    expect_error(path, ec.ModelFormatError, words=words)


# --- Lambda and custom layers --------------------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lambda_layer_is_refused(flavour):
    path = fixture_path("bad_lambda", flavour)
    exc = expect_error(path, ec.UnsupportedLayerError, layer="lambda", words=("bytecode",))
    assert exc.layer_class == "Lambda"


PAYLOAD_FILENAME = "<edgecore-bad-input-payload>"
_AUDIT = {"payload": None, "hits": []}


def _audit_hook(event, args):
    payload = _AUDIT["payload"]
    if payload is None:
        return
    if event in ("marshal.loads", "marshal.load") and args and args[0] == payload:
        _AUDIT["hits"].append(event)
    elif event in ("exec", "code.__new__") and args and \
            getattr(args[0], "co_filename", args[0]) == PAYLOAD_FILENAME:
        _AUDIT["hits"].append(event)


sys.addaudithook(_audit_hook)  # cannot be removed; inert unless a payload is armed


def _payload(marker):
    """Marshalled bytecode of a lambda-like function that writes `marker` when called."""
    source = f"def payload(x):\n    open({str(marker)!r}, 'w').write('executed')\n    return x\n"
    module = compile(source, PAYLOAD_FILENAME, "exec")
    code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
    return marshal.dumps(code)


def _arm_lambda(config, encoded):
    entry = layer_entry(config, "Lambda")
    function = entry["config"]["function"]
    if isinstance(function, dict):  # Keras 3: {"class_name": "__lambda__", "config": {"code"}}
        function["config"]["code"] = encoded
    else:  # Keras 2: [code, defaults, closure]
        function[0] = encoded
    return entry["name"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lambda_bytecode_is_never_executed(tmp_path, flavour):
    """Replace the Lambda's bytecode by code that writes a marker file when run, check that
    Keras's own way of loading it (marshal.loads + FunctionType) does run it, then require
    that edgecore refuses the file without unmarshalling, compiling or running it."""
    marker = tmp_path / "lambda-was-executed"
    raw = _payload(marker)
    path = copy_fixture(tmp_path, "bad_lambda", flavour)
    layer = edit_config(path, lambda c: _arm_lambda(c, base64.encodebytes(raw).decode("ascii")))

    types.FunctionType(marshal.loads(raw), {})(0)  # the armed payload works...
    assert marker.exists()
    marker.unlink()

    _AUDIT["payload"], _AUDIT["hits"] = raw, []
    try:
        expect_error(path, ec.UnsupportedLayerError, layer=layer, words=("bytecode",),
                     x=reference_input("bad_lambda", flavour))
    finally:
        _AUDIT["payload"] = None
    assert not marker.exists(), "the Lambda's bytecode ran"
    assert not _AUDIT["hits"], f"edgecore touched the bytecode: {_AUDIT['hits']}"


def test_edgecore_has_no_code_loading_machinery():
    """No module of the package imports marshal/pickle or calls exec/eval/compile, so no
    path from a model file to running code exists at all."""
    modules = {"marshal", "pickle", "dill", "cloudpickle", "shelve", "joblib"}
    builtins = {"exec", "eval", "compile", "__import__"}  # called by bare name
    code_types = {"FunctionType", "CodeType", "LambdaType"}  # types.*
    package = Path(ec.__file__).parent
    found = []
    for source in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                names, forbidden = {alias.name.split(".")[0] for alias in node.names}, modules
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]} | {a.name for a in node.names}
                forbidden = modules | code_types
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                names, forbidden = {node.func.id}, builtins
            elif isinstance(node, ast.Attribute):
                names, forbidden = {node.attr}, code_types
            else:
                continue
            if names & forbidden:
                found.append(f"{source.relative_to(package)}:{node.lineno} {sorted(names & forbidden)}")
    assert not found, found


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_custom_layer_is_refused_by_class_name(flavour):
    path = fixture_path("bad_custom_layer", flavour)
    exc = expect_error(path, ec.UnsupportedLayerError, layer="scale_shift", words=("ScaleShift",))
    assert "ScaleShift" in exc.layer_class


# --- weights -------------------------------------------------------------------------------
def _del(layer, index):
    def edit(f):
        del f[weight_dataset_path(f, layer, index)]
    return edit


def _replace(layer, index, data=None, **create):
    def edit(f):
        replace_dataset(f, weight_dataset_path(f, layer, index), data, **create)
    return edit


def _group_instead(layer, index):
    def edit(f):
        name = weight_dataset_path(f, layer, index)
        del f[name]
        f.create_group(name)
    return edit


def _del_group(layer):
    def edit(f):
        del f[layer_group_path(f, layer)]
    return edit


# (id, edit(h5 File), layer the error names, words in the reason)
WEIGHT_CASES = [
    ("kernel_deleted", _del("conv2d", 0), "conv2d", ("kernel",)),
    ("bias_deleted", _del("conv2d", 1), "conv2d", ("bias",)),
    ("bn_moving_variance_deleted", _del("batch_normalization", 3), "batch_normalization",
     ("moving_variance",)),
    ("kernel_wrong_shape", _replace("conv2d", 0, np.zeros((3, 3, 5, 5), np.float32)), "conv2d",
     ("shape", "(3, 3, 5, 5)")),
    ("kernel_transposed", _replace("conv2d", 0, np.zeros((4, 5, 3, 3), np.float32)), "conv2d",
     ("shape",)),
    ("bias_scalar", _replace("conv2d", 1, np.float32(1.0)), "conv2d", ("shape",)),
    ("kernel_declared_2e40_elements", _replace("conv2d", 0, shape=(2**20, 2**20, 4, 4),
                                               dtype="f4", chunks=(1, 1, 4, 4)),
     "conv2d", ("shape",)),
    ("bias_strings", _replace("conv2d", 1, np.array([b"a", b"b", b"c", b"d"])), "conv2d",
     ("bias", "float")),
    ("bias_complex", _replace("conv2d", 1, np.zeros(4, np.complex64)), "conv2d", ("float",)),
    ("bias_empty_dataspace", _replace("conv2d", 1, h5py.Empty("f4")), "conv2d", ("bias",)),
    ("kernel_is_a_group", _group_instead("conv2d", 0), "conv2d", ("kernel",)),
    ("layer_group_removed", _del_group("conv2d"), "conv2d", ()),
    ("bn_group_removed", _del_group("batch_normalization"), "batch_normalization", ()),
]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("case_id,edit,layer,words", WEIGHT_CASES, ids=[c[0] for c in WEIGHT_CASES])
def test_weight_edit(tmp_path, flavour, case_id, edit, layer, words):
    path = base_copy(tmp_path, flavour)
    edit_h5_weights(path, edit)
    expect_error(path, ec.ModelFormatError, layer=layer, words=words,
                 x=reference_input(BASE, flavour))


def _weight_names(value):
    def edit(f):
        f["model_weights/conv2d"].attrs["weight_names"] = value
    return edit


def _h5_names(f):
    return [n.decode() if isinstance(n, bytes) else str(n)
            for n in f["model_weights/conv2d"].attrs["weight_names"]]


H5_WEIGHT_CASES = [
    ("weight_names_nonexistent_path",
     lambda f: _weight_names(["conv2d/nonexistent"] + _h5_names(f)[1:])(f), "conv2d",
     ("does not exist",)),
    ("weight_names_one_missing", lambda f: _weight_names(_h5_names(f)[:1])(f), "conv2d",
     ("1 weight",)),
    ("weight_names_removed", lambda f: f["model_weights/conv2d"].attrs.__delitem__("weight_names"),
     "conv2d", ("0 weight",)),
    ("weight_names_a_number", _weight_names(5), "conv2d", ("1 weight",)),
    ("weight_names_twice_the_kernel", lambda f: _weight_names(_h5_names(f)[:1] * 2)(f), "conv2d",
     ("shape",)),
    ("model_weights_removed", lambda f: f.__delitem__("model_weights"), None, ("model_weights",)),
    ("model_weights_a_dataset", lambda f: (f.__delitem__("model_weights"),
                                           f.create_dataset("model_weights", data=[1.0])),
     None, ("model_weights",)),
]


@pytest.mark.parametrize("flavour", H5_FLAVOURS)
@pytest.mark.parametrize("case_id,edit,layer,words", H5_WEIGHT_CASES,
                         ids=[c[0] for c in H5_WEIGHT_CASES])
def test_h5_weight_index_edit(tmp_path, flavour, case_id, edit, layer, words):
    path = base_copy(tmp_path, flavour)
    edit_h5_weights(path, edit)
    expect_error(path, ec.ModelFormatError, layer=layer, words=words,
                 x=reference_input(BASE, flavour))


def _keras_weights(edit):
    def apply(path):
        rewrite_zip(path, {"model.weights.h5": edit(zip_member(path, "model.weights.h5"))})
    return apply


KERAS_WEIGHT_CASES = [
    ("weights_file_missing", lambda p: rewrite_zip(p, drop=("model.weights.h5",)), None,
     ("model.weights.h5",)),
    ("weights_file_random", _keras_weights(lambda d: np.random.default_rng(3).bytes(len(d))),
     None, ("model.weights.h5",)),
    ("weights_file_empty", _keras_weights(lambda d: b""), None, ("model.weights.h5",)),
    ("weights_file_half", _keras_weights(lambda d: d[:len(d) // 2]), None, ("model.weights.h5",)),
    ("layers_group_removed", lambda p: edit_h5_weights(p, lambda f: f.__delitem__("layers")),
     "conv2d", ("0 variable",)),
    ("vars_renamed", lambda p: edit_h5_weights(
        p, lambda f: f[layer_group_path(f, "conv2d")].attrs.__setitem__("name", "ghost")),
     "conv2d", ("0 variable",)),
    ("extra_variable", lambda p: edit_h5_weights(
        p, lambda f: f.create_dataset(layer_group_path(f, "conv2d") + "/2", data=[1.0])),
     "conv2d", ("3 variable",)),
]


@pytest.mark.parametrize("case_id,edit,layer,words", KERAS_WEIGHT_CASES,
                         ids=[c[0] for c in KERAS_WEIGHT_CASES])
def test_keras_weights_file_edit(tmp_path, case_id, edit, layer, words):
    path = base_copy(tmp_path, "keras")
    edit(path)
    expect_error(path, ec.ModelFormatError, layer=layer, words=words,
                 x=reference_input(BASE, "keras"))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nested_model_weight_missing(tmp_path, flavour):
    """graph_nested_sequential: the inner Sequential's BatchNormalization loses gamma."""
    case = "graph_nested_sequential"
    path = base_copy(tmp_path, flavour, case)
    if flavour == "keras":
        edit_h5_weights(path, lambda f: f.__delitem__(
            "layers/sequential/layers/batch_normalization/vars/0"))
        layer, words = "inner_seq/batch_normalization", ("3 variable",)
    else:
        def edit(f):
            group = f["model_weights/inner_seq"]
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in group.attrs["weight_names"]]
            group.attrs["weight_names"] = [n for n in names if "gamma" not in n]
        edit_h5_weights(path, edit)
        layer, words = "inner_seq/batch_normalization", ("gamma",)
    expect_error(path, ec.ModelFormatError, layer=layer, words=words,
                 x=reference_input(case, flavour))


def test_deflated_keras_archive_still_loads(tmp_path):
    """Keras stores model.weights.h5 uncompressed; a re-zipped, deflated copy takes the
    other branch of the global-heap check and must load exactly the same."""
    path = base_copy(tmp_path, "keras")
    rewrite_zip(path, compression=zipfile.ZIP_DEFLATED)
    got = load_and_predict(path, reference_input(BASE, "keras"))
    np.testing.assert_allclose(got, reference_output(BASE, "keras"), rtol=0, atol=1e-4)


def test_error_attributes(tmp_path):
    """The contract every check above relies on, spelled out once."""
    path = base_copy(tmp_path, "k3.h5")
    edit_config(path, _set("Conv2D", "kernel_size", [0, 3]))
    with pytest.raises(ec.ModelFormatError) as info:
        ec.load(path)
    exc = info.value
    assert isinstance(exc, ec.EdgecoreError) and isinstance(exc, ValueError)
    assert (exc.path, exc.layer, exc.layer_class) == (str(path), "conv2d", "Conv2D")
    assert "kernel_size" in exc.reason
    assert str(exc) == f"file {str(path)!r}, layer 'conv2d' (Conv2D): {exc.reason}"


# --- damage that takes down the HDF5 library itself (run in a subprocess) -------------------
_CHILD = """
import json, sys
sys.path[:0] = [{tests!r}]  # not the repo root: the installed edgecore, not its source
import edgecore as ec
try:
    ec.load(sys.argv[1])
    print(json.dumps({{"outcome": "loaded"}}))
except ec.EdgecoreError as exc:
    print(json.dumps({{"outcome": type(exc).__name__, "reason": str(exc.reason),
                      "path": exc.path}}))
"""


def _load_in_child(path):
    """Load in a fresh interpreter: a regression here would hang or kill the test run."""
    code = _CHILD.format(tests=str(TESTS))
    try:
        # cwd: python -c puts it first on sys.path, and the repo root holds the source tree.
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                              text=True, timeout=60, cwd=path.parent)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path.name} hung for 60 s")
    assert proc.returncode == 0, f"child died (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _h5_image(path):
    return zip_member(path, "model.weights.h5") if path.suffix == ".keras" else path.read_bytes()


def _put_h5_image(path, image, deflate=False):
    if path.suffix == ".keras":
        rewrite_zip(path, {"model.weights.h5": image},
                    compression=zipfile.ZIP_DEFLATED if deflate else None)
    else:
        path.write_bytes(image)


# A deflated .keras takes the other road to the HDF5 library (a temporary file).
LIBRARY_CASES = [("k3.h5", False), ("k2.h5", False), ("keras", False), ("keras", True)]


@pytest.mark.parametrize("flavour,deflate", LIBRARY_CASES)
def test_global_heap_object_of_size_zero_is_refused_not_hung(tmp_path, flavour, deflate):
    """The first object of the global heap (where variable-length strings live) becomes a
    free-space object of size 0: HDF5 2.0 then loops forever decoding the heap."""
    path = base_copy(tmp_path, flavour)
    image = bytearray(_h5_image(path))
    _, objects = global_heap_objects(bytes(image))
    first = objects[0][0]
    image[first:first + 16] = bytes(16)  # index 0, no references, size 0
    _put_h5_image(path, bytes(image), deflate)
    result = _load_in_child(path)
    assert result["outcome"] == "ModelFormatError", result
    assert "global heap" in result["reason"] and result["path"] == str(path)


@pytest.mark.parametrize("flavour,deflate", LIBRARY_CASES)
def test_damaged_string_datatype_is_refused_not_crashed(tmp_path, flavour, deflate):
    """Variable-length string attributes whose datatype bits now say "type 9": HDF5 2.0
    segfaults converting one (H5T__conv_vlen).  For .h5 the attributes are keras_version,
    for .keras the `name` of every vars group."""
    path = base_copy(tmp_path, flavour)
    image = bytearray(_h5_image(path))
    name = b"name\x00\x00\x00\x00" if flavour == "keras" else b"keras_version\x00\x00\x00"
    at = image.find(name + b"\x19\x01")
    assert at >= 0
    while at >= 0:
        image[at + len(name) + 1] = 0x09
        at = image.find(name + b"\x19\x01", at + 1)
    _put_h5_image(path, bytes(image), deflate)
    result = _load_in_child(path)
    assert result["outcome"] == "ModelFormatError", result
    assert "datatype" in result["reason"] and result["path"] == str(path)


# --- the guard's own search -------------------------------------------------------------------
def test_guard_search_finds_every_match_across_chunk_boundaries(monkeypatch):
    """h5guard searches the mapped file through bounded slices (mmap.find can read past the
    mapping); with tiny chunks every match, including ones straddling two chunks, is found
    exactly once — the same offsets a plain bytes search gives."""
    from edgecore.formats import h5guard

    rng = np.random.default_rng(3)
    for chunk in (1, 3, 4, 5, 7, 64):
        monkeypatch.setattr(h5guard, "_FIND_CHUNK", chunk)
        for _ in range(20):
            data = bytearray(rng.choice(list(b"GCOLx"), size=int(rng.integers(0, 200))).tobytes())
            start = int(rng.integers(0, len(data) + 1))
            end = int(rng.integers(start, len(data) + 1))
            expected, at = [], data.find(b"GCOL", start, end)
            while at >= 0:
                expected.append(at)
                at = data.find(b"GCOL", at + 1, end)
            assert list(h5guard._find_all(bytes(data), b"GCOL", start, end)) == expected


@pytest.mark.parametrize("pages", [1, 4])
def test_truncation_at_a_page_multiple_is_a_clean_error(tmp_path, pages):
    """A file cut at exactly 4096 * pages bytes: searching its mapping must stay inside it
    (mmap.find faulted here on aarch64 under Python 3.11)."""
    data = fixture_path(BASE, "k3.h5").read_bytes()
    assert len(data) > 4096 * pages
    path = tmp_path / "cut.h5"
    path.write_bytes(data[:4096 * pages])
    with pytest.raises(ec.ModelFormatError) as info:
        ec.load(path)
    check_error(info.value, path, ec.ModelFormatError)
