"""Keras 3 opens what Model.save writes and predicts what the fixture's Keras predicted
(marker `keras`: skipped unless EDGECORE_KERAS_PYTHON names a Python with TensorFlow and
Keras 3.15; edgecore never imports them, Keras runs in one subprocess for the module).

Every committed fixture, in every flavour (Keras 3 .h5, .keras, Keras 2 .h5), is loaded
by edgecore, saved, and opened with `keras.models.load_model(saved, compile=False)`; its
`model(x, training=False)` must match the fixture's reference outputs to
1e-4 * max(1, max|ref|) and its parameter count edgecore's.  Flipped trainable flags must
reach Keras (flags and trainable parameter count), and a compiled save must give Keras
its optimizer (Adam, iteration count, learning rate) back.

Expected failures: none.  Keras 3.15 cannot reload two of its own .h5 files (the manifest
records them): MobileNetV3's `x + 3.0` op node reads as the merge layer `Add`, and the
legacy loader drops LayerNormalization's axis=[1, 2, 3]; edgecore writes those entries
with their `module`, as `.keras` does, and test_keras_own_failures_load_from_our_save
checks that Keras opens our saves of exactly those files.
"""
import json
import subprocess

import numpy as np
import pytest

import edgecore as ec
from edgecore.formats import save_hdf5 as save_module
from edgecore.formats.keras3_config import keras3_name
from fixtures import CASES, FIXTURES, FRAMEWORK, model_files
from saving import TRAINING_CONFIG, adam_weights, weighted

pytestmark = [pytest.mark.keras, pytest.mark.slow]

FILES = list(model_files())
IDS = [path.name for _, _, path in FILES]
# Nested models, shared layers, Sequential and Functional tops; every flavour.
FLAG_FILES = [(c, f, p) for c, f, p in FILES
              if {"graph", "transfer"} & set(CASES[c].get("tags", ()))]
COMPILED = FIXTURES / "dense_softmax.k3.h5"

KERAS_SCRIPT = r'''
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, keras

def count(weights):
    return int(sum(np.prod(w.shape) for w in weights))

jobs = json.load(open(sys.argv[1]))
results = {}
for job in jobs:
    try:
        model = keras.models.load_model(job["saved"], compile=job.get("compile", False))
        result = {"ok": True, "params": count(model.weights),
                  "trainable": count(model.trainable_weights)}
        if job.get("npz"):
            ref = np.load(job["npz"])
            xs = [ref[k] for k in sorted(k for k in ref.files if k.startswith("x"))]
            ys = [ref[k] for k in sorted(k for k in ref.files if k.startswith("y"))]
            got = model(xs if len(xs) > 1 else xs[0], training=False)
            got = got if isinstance(got, (list, tuple)) else [got]
            result["errors"] = [float(np.abs(np.asarray(g) - y).max()
                                      / max(1.0, float(np.abs(y).max())))
                                for g, y in zip(got, ys)]
            result["outputs"] = len(got)
        flags = {}
        for outer, inner in job.get("flags", []):
            layer = model.get_layer(outer)
            flags[f"{outer}/{inner}" if inner else outer] = bool(
                (layer.get_layer(inner) if inner else layer).trainable)
        result["flags"] = flags
        if job.get("compile"):
            optimizer = model.optimizer
            result["optimizer"] = {"class": type(optimizer).__name__,
                                   "iterations": int(optimizer.iterations.numpy()),
                                   "values": [np.asarray(v).tolist()
                                              for v in optimizer.variables]}
        results[job["saved"]] = result
    except Exception as exc:
        results[job["saved"]] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
json.dump(results, open(sys.argv[2], "w"))
'''


def trainable_params(model):
    lines = []
    model.summary(print_fn=lines.append)
    line = next(l for l in lines if l.strip().startswith("Trainable params:"))
    return int(line.split(":")[1].split()[0].replace(",", ""))


def flip_flags(model):
    """Flip the last weighted top-level layer and freeze the first weighted layer of each
    nested model; returns [(outer, inner or None, flag)] in the saved file's names."""
    top = weighted(model.layers)[-1]
    top.trainable = not top.trainable
    flipped = [(keras3_name(top.name), None, top.trainable)]
    for outer in [l for l in model.layers if hasattr(l, "graph") and weighted(l.layers)]:
        inner = weighted(outer.layers)[0]
        inner.trainable = False
        flipped.append((keras3_name(outer.name), keras3_name(inner.name), False))
    return flipped


@pytest.fixture(scope="module")
def keras_results(keras_py, tmp_path_factory):
    """Save everything, run Keras once over all of it; {saved path: result} plus what
    edgecore reported for each saved file."""
    out = tmp_path_factory.mktemp("keras_reload")
    jobs, expected = [], {}
    for case, flavour, path in FILES:
        saved = out / (path.name + ".h5")
        model = ec.load(path)
        model.save(saved)
        npz = FIXTURES / CASES[case]["frameworks"][FRAMEWORK[flavour]]["npz"]["file"]
        jobs.append({"saved": str(saved), "npz": str(npz)})
        expected[str(saved)] = {"params": model.count_params()}
    for case, flavour, path in FLAG_FILES:
        saved = out / (path.name + ".flipped.h5")
        model = ec.load(path)
        flipped = flip_flags(model)
        model.save(saved)
        npz = FIXTURES / CASES[case]["frameworks"][FRAMEWORK[flavour]]["npz"]["file"]
        jobs.append({"saved": str(saved), "npz": str(npz),
                     "flags": [[outer, inner] for outer, inner, _ in flipped]})
        expected[str(saved)] = {"params": model.count_params(),
                                "trainable": trainable_params(model),
                                "flags": {f"{o}/{i}" if i else o: flag for o, i, flag in flipped}}
    model = ec.load(COMPILED)
    state = adam_weights(model, seed=1)
    saved = out / "compiled.h5"
    save_module.save_hdf5(model, saved, lambda layer: layer.get_weights(),
                          training_config=TRAINING_CONFIG, optimizer_weights=state)
    jobs.append({"saved": str(saved), "compile": True})
    expected[str(saved)] = {"params": model.count_params(), "optimizer": state}
    (out / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run([keras_py, "-c", KERAS_SCRIPT, str(out / "jobs.json"),
                    str(out / "results.json")], check=True, capture_output=True, text=True,
                   timeout=3600)
    return json.loads((out / "results.json").read_text()), expected, out


def result_for(keras_results, name):
    results, expected, out = keras_results
    key = str(out / name)
    return results[key], expected[key]


@pytest.mark.parametrize("case,flavour,path", FILES, ids=IDS)
def test_keras_reloads_and_predicts(case, flavour, path, keras_results):
    got, want = result_for(keras_results, path.name + ".h5")
    assert got["ok"], got.get("error")
    assert got["outputs"] == len(CASES[case]["frameworks"][FRAMEWORK[flavour]]["outputs"])
    assert max(got["errors"]) <= 1e-4, got["errors"]  # already divided by max(1, |ref|)
    assert got["params"] == want["params"]


@pytest.mark.parametrize("case,flavour,path", FLAG_FILES, ids=[p.name for _, _, p in FLAG_FILES])
def test_keras_sees_flipped_trainable_flags(case, flavour, path, keras_results):
    got, want = result_for(keras_results, path.name + ".flipped.h5")
    assert got["ok"], got.get("error")
    assert max(got["errors"]) <= 1e-4, got["errors"]
    assert got["flags"] == want["flags"]
    assert got["trainable"] == want["trainable"]
    assert got["params"] == want["params"]


def test_keras_own_failures_load_from_our_save(keras_results):
    own_failures = [(case, flavour) for case, info in CASES.items()
                    for flavour in info.get("keras_could_not_reload", ())]
    assert own_failures  # MobileNetV3Small and ln_axis_123 in Keras 3.15.1
    for case, flavour in own_failures:
        got, _ = result_for(keras_results, f"{case}.{flavour}.h5")
        assert got["ok"] and max(got["errors"]) <= 1e-4, (case, got)


def test_keras_restores_the_optimizer(keras_results):
    """Keras 3.15's .h5 loader builds the optimizer on `model._trainable_variables` (empty
    for a Functional), so from any .h5, its own included, it restores only `iteration`
    and `learning_rate`; the slot variables are in the file for Keras versions that read
    them (and for edgecore)."""
    got, want = result_for(keras_results, "compiled.h5")
    assert got["ok"], got.get("error")
    assert got["optimizer"]["class"] == "Adam"
    assert got["optimizer"]["iterations"] == 7
    values = got["optimizer"]["values"]
    assert len(values) >= 2
    for (name, array), value in zip(want["optimizer"], values):
        np.testing.assert_allclose(np.asarray(value, dtype=np.float64),
                                   np.asarray(array, dtype=np.float64), err_msg=name)


def test_keras_archives_open_mapped_and_leave_no_temporary(tmp_path, monkeypatch):
    """The stored model.weights.h5 is copied out once to an anonymous temporary file that
    edgecore's reader maps (not read through zipfile's member object per read, which made
    .keras loads 7-30x slower than .h5); no temporary name is ever left in the directory."""
    import mmap
    import tempfile

    from edgecore.formats.keras_zip import KerasZipModel

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model_file = KerasZipModel(str(FIXTURES / "mobilenet_v2.keras"))
    try:
        assert isinstance(model_file.h5._reader.buf.data, mmap.mmap)
        assert list(tmp_path.iterdir()) == []
    finally:
        model_file.close()

