"""Model.save: a legacy Keras .h5 that edgecore (here) and Keras 3 (test_save_keras.py)
read back as the same model.

For every committed fixture, in every flavour (Keras 3 .h5, .keras, Keras 2 .h5): load,
save, load the saved file, and require bit-identical predictions on the reference inputs,
the same parameter counts and per-layer get_weights(); flipped trainable flags survive;
the file's layout is what Keras 3.15.1 itself writes for the same model; a failure during
the write leaves an existing file untouched and no temporary file behind.
"""
import json

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")  # test-only: crafts or cross-checks files

import edgecore as ec
from edgecore.formats import open_model_file
from edgecore.formats import save_hdf5 as save_module
from edgecore.formats.keras3_config import keras3_name
from fixtures import CASES, FIXTURES, inputs_outputs, model_files, reference
from saving import TRAINING_CONFIG, adam_weights, weighted

FILES = list(model_files())
IDS = [path.name for _, _, path in FILES]
# Keras 2's hard_sigmoid is saved as Rescaling(0.2, 0.5) + ReLU(max 1) (Keras 3 has no
# such activation); two float32 steps round differently from edgecore's fused kernel.
ONE_ULP = {"act_hard_sigmoid.k2.h5": "K2 hard_sigmoid split into Rescaling + ReLU",
           "conv2d_act_hard_sigmoid.k2.h5": "K2 hard_sigmoid split into Rescaling + ReLU"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """path of a fixture -> path of its saved copy (each fixture saved once per module)."""
    out_dir = tmp_path_factory.mktemp("saved")
    cache = {}

    def get(path):
        if path not in cache:
            cache[path] = out_dir / (path.name + ".h5")
            ec.load(path).save(cache[path])
        return cache[path]

    return get


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def predict(model, xs):
    got = model.predict(xs if len(xs) > 1 else xs[0])
    return got if isinstance(got, list) else [got]


def summary_counts(model):
    lines = []
    model.summary(print_fn=lines.append)
    return [line for line in lines if "params:" in line]


@pytest.mark.parametrize("case,flavour,path", FILES, ids=IDS)
def test_saved_model_predicts_identically(case, flavour, path, saved):
    xs, _ = inputs_outputs(reference(case, flavour))
    before = predict(ec.load(path), xs)
    reloaded = ec.load(saved(path))
    assert reloaded.ctx.keras_version == "3.15.1"
    after = predict(reloaded, xs)
    assert len(after) == len(before)
    for b, a in zip(before, after):
        assert a.shape == b.shape
        if path.name in ONE_ULP:
            np.testing.assert_allclose(a, b, rtol=0, atol=2.0 ** -23, err_msg=ONE_ULP[path.name])
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case,flavour,path", FILES, ids=IDS)
def test_saved_model_counts_and_weights(case, flavour, path, saved):
    original, reloaded = ec.load(path), ec.load(saved(path))
    assert reloaded.count_params() == original.count_params()
    assert summary_counts(reloaded) == summary_counts(original)
    layers = [l for l in original.layers if l.count_params()]
    if len(layers) > 12:  # big applications: re-reading every layer of a .keras is slow
        layers = layers[::len(layers) // 8] + [layers[-1]]
    for layer in layers:
        got = reloaded.get_layer(keras3_name(layer.name)).get_weights()
        want = layer.get_weights()
        assert len(got) == len(want), layer.name
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w, err_msg=layer.name)


# Nested models (Sequential and Functional, the transfer model), shared layers, Sequential
# and Functional tops, in every flavour; of the applications one (each is many layers of
# the same kinds, and re-saving a .keras application takes seconds).
FLAG_FILES = [(c, f, p) for c, f, p in FILES
              if {"graph", "transfer"} & set(CASES[c].get("tags", ()))
              or p.name == "mobilenet_v2.k3.h5"]


@pytest.mark.parametrize("case,flavour,path", FLAG_FILES, ids=[p.name for _, _, p in FLAG_FILES])
def test_trainable_flags_round_trip(case, flavour, path, tmp_path):
    model = ec.load(path)
    top = weighted(model.layers)[-1]
    top.trainable = not top.trainable
    flipped = [(keras3_name(top.name), None, top.trainable)]
    nested = [l for l in model.layers if hasattr(l, "graph") and weighted(l.layers)]
    for outer in nested:  # an inner layer too: changes the nested group's weight order
        inner = weighted(outer.layers)[0]
        inner.trainable = False
        flipped.append((keras3_name(outer.name), keras3_name(inner.name), False))
    counts = summary_counts(model)
    model.save(tmp_path / "flipped.h5")
    reloaded = ec.load(tmp_path / "flipped.h5")
    for outer, inner, flag in flipped:
        layer = reloaded.get_layer(outer)
        if inner is not None:
            layer = layer.get_layer(inner)
        assert layer.trainable is flag, (outer, inner)
    assert summary_counts(reloaded) == counts
    xs, _ = inputs_outputs(reference(case, flavour))
    for a, b in zip(predict(reloaded, xs), predict(ec.load(path), xs)):
        if path.name in ONE_ULP:
            np.testing.assert_allclose(a, b, rtol=0, atol=2.0 ** -23)
        else:
            np.testing.assert_array_equal(a, b)


# --- the file is what Keras 3.15.1 writes --------------------------------------------
def h5_tree(path):
    """Every group, dataset (shape, dtype, layout) and attribute (value and HDF5 type)."""
    def attr_type(obj, name):
        attr = h5py.h5a.open(obj.id, name.encode())
        t = attr.get_type()
        vlen = t.is_variable_str() if isinstance(t, h5py.h5t.TypeStringID) else None
        cset = t.get_cset() if isinstance(t, h5py.h5t.TypeStringID) else None
        return (t.get_class(), vlen, cset, attr.get_space().shape)

    tree = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                tree[name] = ("dataset", obj.shape, obj.dtype.str,
                              obj.id.get_create_plist().get_layout())
            else:
                tree[name] = ("group",)
            for key, value in obj.attrs.items():
                tree[f"{name}@{key}"] = (np.atleast_1d(value).tolist(), attr_type(obj, key))

        f.visititems(visit)
        for key, value in f.attrs.items():
            value = json.loads(value) if key.endswith("_config") else value
            tree[f"@{key}"] = (value, attr_type(f, key))
    return tree


APPLICATION_LAYERS = {"LayerScale": "convnext", "StochasticDepth": "convnext",
                      "CustomScaleLayer": "inception_resnet_v2"}


def with_module(config):
    """Keras's own config with the `module` keys edgecore adds where Keras 3 could not
    reload its own file: op nodes (MobileNetV3's x + 3.0), several-axes layers and the
    layers keras.applications defines, in nested models too."""
    for entry in config["config"]["layers"]:
        if entry["class_name"] in APPLICATION_LAYERS:
            entry.update(module="keras.src.applications." + APPLICATION_LAYERS[entry["class_name"]],
                         registered_name=entry["class_name"])
        if entry["class_name"] in ("Add", "Multiply") and set(entry["config"]) == {"name"}:
            entry.update(module="keras.src.ops.numpy", registered_name=entry["class_name"])
        if isinstance(entry["config"].get("axis"), list) and len(entry["config"]["axis"]) > 1:
            entry.update(module="keras.layers", registered_name=None)
        if isinstance(entry["config"].get("layers"), list):
            with_module(entry)
    return config


K3_FILES = [(c, f, p) for c, f, p in FILES if f in ("k3.h5", "keras")
            and (FIXTURES / f"{c}.k3.h5").exists()]


@pytest.mark.parametrize("case,flavour,path", K3_FILES, ids=[p.name for _, _, p in K3_FILES])
def test_layout_is_what_keras3_writes(case, flavour, path, saved):
    """Keras 3 sources: the saved file is Keras's own .h5, group by group, attribute by
    attribute (HDF5 string types included), config included, up to the module keys."""
    ours, keras = h5_tree(saved(path)), h5_tree(FIXTURES / f"{case}.k3.h5")
    keras["@model_config"] = (with_module(keras["@model_config"][0]), keras["@model_config"][1])
    assert sorted(ours) == sorted(keras)
    for key in keras:
        assert ours[key] == keras[key], key


K2_FILES = [(c, f, p) for c, f, p in FILES if f == "k2.h5"]


def walk_entries(config):
    for entry in config["config"]["layers"]:
        yield entry
        if entry["class_name"] in ("Functional", "Sequential"):
            yield from walk_entries(entry)


@pytest.mark.parametrize("case,flavour,path", K2_FILES, ids=[p.name for _, _, p in K2_FILES])
def test_keras2_config_is_written_in_keras3_spelling(case, flavour, path, saved):
    with h5py.File(saved(path), "r") as f:
        config = json.loads(f.attrs["model_config"])
    for entry in walk_entries(config):
        cfg, cls = entry["config"], entry["class_name"]
        assert "/" not in cfg["name"] and "batch_input_shape" not in cfg, cfg["name"]
        assert cls not in ("TFOpLambda", "Model"), cfg["name"]
        assert all(isinstance(node, dict) and set(node) == {"args", "kwargs"}
                   for node in entry.get("inbound_nodes", [])), cfg["name"]
        if "dtype" in cfg and cls not in ("InputLayer", "SpatialDropout2D"):
            assert cfg["dtype"]["class_name"] == "DTypePolicy", cfg["name"]
        if cls == "InputLayer":
            assert isinstance(cfg["dtype"], str) and "batch_shape" in cfg
        if cls in ("DepthwiseConv2D", "SeparableConv2D"):
            assert "groups" not in cfg and "kernel_initializer" not in cfg
        if cls == "BatchNormalization":
            assert isinstance(cfg["axis"], int)
        if cls == "LeakyReLU":
            assert "alpha" not in cfg and cfg["negative_slope"] == float(str(np.float32(
                cfg["negative_slope"])))
        if cls == "SpatialDropout2D":
            assert "trainable" not in cfg and isinstance(cfg["dtype"], str)
        assert cfg.get("activation") not in ("swish", "hard_sigmoid"), cfg["name"]
    if config["class_name"] == "Functional":
        for key in ("input_layers", "output_layers"):
            value = config["config"][key]
            assert isinstance(value[0], list) or len(value) == 3


def test_keras2_names_with_slashes_and_tf_ops(saved):
    path = FIXTURES / "mobilenet_v3_small.k2.h5"
    with h5py.File(path, "r") as f:
        original = json.loads(f.attrs["model_config"])
    with h5py.File(saved(path), "r") as f:
        config = json.loads(f.attrs["model_config"])
        layer_names = [text(n) for n in f["model_weights"].attrs["layer_names"]]
    assert any("/" in e["name"] for e in original["config"]["layers"])
    ops = [e for e in config["config"]["layers"] if e.get("module") == "keras.src.ops.numpy"]
    assert ops and {e["class_name"] for e in ops} == {"Add", "Multiply"}
    assert not {e["name"] for e in ops} & set(layer_names)  # ops are not layers in Keras
    add = next(e for e in ops if e["class_name"] == "Add")
    assert add["inbound_nodes"][0]["args"][1] == 3.0


def test_keras2_nested_models_are_renumbered(saved):
    path = FIXTURES / "graph_nested_sequential.k2.h5"
    with h5py.File(saved(path), "r") as f:
        config = json.loads(f.attrs["model_config"])
    histories = [a["config"]["keras_history"] for e in config["config"]["layers"]
                 for node in e["inbound_nodes"] for a in node["args"]
                 if isinstance(a, dict)]
    assert ["inner_seq", 0, 0] in histories  # Keras 2 wrote node 1


# --- compiled models ----------------------------------------------------------------
def test_compiled_model_layout(tmp_path):
    model = ec.load(FIXTURES / "dense_softmax.k3.h5")
    optimizer = adam_weights(model, seed=0)
    out = tmp_path / "compiled.h5"
    save_module.save_hdf5(model, out, lambda layer: layer.get_weights(),
                          training_config=TRAINING_CONFIG, optimizer_weights=optimizer)
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["training_config"]) == TRAINING_CONFIG
        group = f["optimizer_weights"]
        assert [text(n) for n in group.attrs["weight_names"]] == [n for n, _ in optimizer]
        assert group["adam/iteration"].dtype == np.int64 and group["adam/iteration"][()] == 7
        for name, value in optimizer[2:]:
            np.testing.assert_array_equal(group[name][()], value)
    model_file = open_model_file(out)
    try:
        assert model_file.training_config == TRAINING_CONFIG
    finally:
        model_file.close()
    uncompiled = tmp_path / "plain.h5"
    model.save(uncompiled)
    with h5py.File(uncompiled, "r") as f:
        assert "training_config" not in f.attrs and "optimizer_weights" not in f


# --- atomicity and paths ------------------------------------------------------------
def leftovers(directory):
    """Every file but the ones a test made itself (a failed save must leave none)."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".edgecore-tmp"))


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failure_mid_write_keeps_the_existing_file(tmp_path, monkeypatch, error):
    model = ec.load(FIXTURES / "graph_functional.k3.h5")
    target = tmp_path / "model.h5"
    target.write_bytes(b"the previous checkpoint")
    calls = []
    real = save_module._write_subset

    def failing(group, weights):
        calls.append(group.name)
        if len(calls) == 3:  # two groups written, then the failure
            raise error
        return real(group, weights)

    monkeypatch.setattr(save_module, "_write_subset", failing)
    with pytest.raises(type(error)):
        model.save(target)
    assert len(calls) == 3
    assert target.read_bytes() == b"the previous checkpoint"
    assert leftovers(tmp_path) == []


def test_weights_of_failing_halfway_keeps_the_existing_file(tmp_path):
    model = ec.load(FIXTURES / "transfer_mobilenet_v2.k3.h5")
    target = tmp_path / "model.h5"
    model.save(target)
    before = target.read_bytes()
    seen = []

    def weights_of(layer):
        seen.append(layer.name)
        if len(seen) == 40:
            raise OSError("weights source gone")
        return layer.get_weights()

    with pytest.raises(OSError, match="weights source gone"):
        save_module.save_hdf5(model, target, weights_of)
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []
    ec.load(target)  # still a valid model


def test_save_over_the_file_the_model_came_from(tmp_path):
    source = tmp_path / "model.h5"
    source.write_bytes((FIXTURES / "graph_nested_sequential.k3.h5").read_bytes())
    xs, _ = inputs_outputs(reference("graph_nested_sequential", "k3.h5"))
    model = ec.load(source)
    expected = predict(model, xs)
    model.save(source)
    np.testing.assert_array_equal(predict(ec.load(source), xs)[0], expected[0])
    np.testing.assert_array_equal(predict(model, xs)[0], expected[0])
    assert leftovers(tmp_path) == []


def test_wrong_weight_shapes_are_refused_before_replacing(tmp_path):
    model = ec.load(FIXTURES / "dense_2d.k3.h5")
    target = tmp_path / "model.h5"
    target.write_bytes(b"old")
    with pytest.raises(ec.ModelFormatError, match="shape"):
        save_module.save_hdf5(model, target, lambda layer: [np.zeros((1, 1))] * len(
            layer.get_weights()))
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["model.keras", "model.txt", "model"])
def test_only_h5_paths(tmp_path, name):
    model = ec.load(FIXTURES / "dense_2d.k3.h5")
    with pytest.raises(ValueError, match="legacy Keras HDF5" if name.endswith(".keras")
                       else r"\.h5"):
        model.save(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_hdf5_suffix_str_paths_and_new_directories(tmp_path):
    model = ec.load(FIXTURES / "dense_2d.k3.h5")
    model.save(str(tmp_path / "new" / "dir" / "model.hdf5"))
    assert ec.load(tmp_path / "new" / "dir" / "model.hdf5").count_params() == model.count_params()


def test_long_name_lists_are_split_like_keras(tmp_path):
    """Keras splits attributes over 64512 bytes into weight_names0, weight_names1, ...
    (its loader reads either form)."""
    names = [f"block_{i:04d}/some_long_weight_name_{'x' * 40}".encode() for i in range(1200)]
    with h5py.File(tmp_path / "a.h5", "w") as f:
        save_module._save_attributes(f, "weight_names", names)
        save_module._save_attributes(f, "layer_names", names[:3])
        assert "weight_names" not in f.attrs and "weight_names0" in f.attrs
        chunks, i = [], 0
        while f"weight_names{i}" in f.attrs:  # Keras's load_attributes_from_hdf5_group
            chunks.extend(f.attrs[f"weight_names{i}"])
            i += 1
        assert i > 1 and [text(c) for c in chunks] == [text(n) for n in names]
        assert [text(n) for n in f.attrs["layer_names"]] == [text(n) for n in names[:3]]


def test_a_name_of_the_longest_legal_length_saves(tmp_path):
    """The temporary file must not be longer than the name (255 bytes is the usual limit;
    `<name>.tmp-<pid>` made a 253-character name fail)."""
    model = ec.load(FIXTURES / "graph_functional.k3.h5")
    target = tmp_path / ("m" * 252 + ".h5")  # 255 characters
    model.save(target)
    assert ec.load(target).count_params() == model.count_params()
    assert leftovers(tmp_path) == []


def test_the_temporary_file_is_visible_while_writing_and_gone_after(tmp_path, monkeypatch):
    # guards `leftovers` itself: a write in progress does show up under its name
    seen = []
    real = save_module._write_subset

    def spy(group, weights):
        seen.extend(leftovers(tmp_path))
        return real(group, weights)

    monkeypatch.setattr(save_module, "_write_subset", spy)
    ec.load(FIXTURES / "graph_functional.k3.h5").save(tmp_path / "model.h5")
    assert seen and leftovers(tmp_path) == []


def _layer_keys(path):
    """{class_name: union of config keys} of a legacy .h5's model config."""
    from badfiles import read_config_text

    config = json.loads(read_config_text(path))
    keys = {}

    def walk(entry):
        for layer in entry["config"].get("layers", []):
            keys.setdefault(layer["class_name"], set()).update(layer["config"])
            if "layers" in layer["config"]:
                walk(layer)
    walk(config)
    return keys


K2_WITH_K3 = sorted(p.name[:-len(".k2.h5")] for p in FIXTURES.glob("*.k2.h5")
                    if (FIXTURES / p.name.replace(".k2.h5", ".k3.h5")).exists())


@pytest.mark.parametrize("case", K2_WITH_K3)
def test_a_saved_keras2_file_spells_its_configs_as_keras3_does(case, tmp_path):
    """Keras 3 rejects config keys it does not know (tf.keras's `rng_type` on every random
    layer once broke reloading): saving a Keras 2 file writes, per layer class, no key that
    Keras 3's own file of the same model lacks."""
    try:
        model = ec.load(FIXTURES / f"{case}.k2.h5")
    except ec.UnsupportedLayerError:
        pytest.skip("refused at load (tests/test_bad_input.py)")
    model.save(tmp_path / "saved.h5")
    ours, keras3 = _layer_keys(tmp_path / "saved.h5"), _layer_keys(FIXTURES / f"{case}.k3.h5")
    extra = {cls: sorted(keys - keras3[cls]) for cls, keys in ours.items()
             if cls in keras3 and keys - keras3[cls]}
    assert not extra, extra
