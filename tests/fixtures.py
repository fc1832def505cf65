"""Access to the Keras-written fixtures in weights/fixtures (see weights/README.md).

The manifest lists every case and the files Keras wrote for it; a few large flavours are
not committed (see COMMITTED_EXCEPTIONS) and tests marked `keras` regenerate them.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "weights" / "fixtures"
GENERATOR = REPO / "weights" / "generate.py"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
CASES = MANIFEST["cases"]

# Flavours left out of git to keep clones small (EfficientNetB0 is 17 MB per file); the
# default suite still runs every application in at least one flavour.
NOT_COMMITTED = {"efficientnet_b0.keras", "efficientnet_b0.k2.h5", "mobilenet_v3_small.keras",
                 # the training-trace transfer model: its traces need only the .k3.h5
                 "train_transfer_frozen_base.keras", "train_transfer_frozen_base.k2.h5"}

# flavour -> which framework's npz holds its reference outputs
FRAMEWORK = {"k3.h5": "k3", "keras": "k3", "k2.h5": "k2"}


def model_files(tags_exclude=("bad-input",), include_missing=False):
    """(case, flavour, path) for every model file of the non-large cases."""
    for name, case in sorted(CASES.items()):
        if case.get("large") or set(case.get("tags", ())) & set(tags_exclude):
            continue
        for framework in case["frameworks"].values():
            for flavour, info in framework["files"].items():
                path = FIXTURES / info["file"]
                if path.exists() or include_missing:
                    yield name, flavour, path


def reference(case, flavour):
    """The npz Keras wrote beside the model: inputs x0.., outputs y0.., params, weights."""
    framework = CASES[case]["frameworks"][FRAMEWORK[flavour]]
    return np.load(FIXTURES / framework["npz"]["file"])


def inputs_outputs(ref):
    xs = [ref[f"x{i}"] for i in range(len([k for k in ref.files if k.startswith("x")]))]
    ys = [ref[f"y{i}"] for i in range(len([k for k in ref.files if k.startswith("y")]))]
    return xs, ys


def keras_python():
    """A Python with TensorFlow and Keras, for tests marked `keras` (None: skip them)."""
    candidate = os.environ.get("EDGECORE_KERAS_PYTHON")
    if candidate:
        return candidate
    try:
        import tensorflow  # noqa: F401
        import keras  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def run_keras_script(python, script, work_dir, inputs, **spec):
    """Run `script` in the Keras python: it gets argv[1] = JSON of {"inputs": an npz of
    `inputs`, "out": the npz it must write, **spec}; returns that npz loaded."""
    work_dir = Path(work_dir)
    np.savez(work_dir / "in.npz", **inputs)
    spec = {"inputs": str(work_dir / "in.npz"), "out": str(work_dir / "out.npz"), **spec}
    subprocess.run([python, "-c", script, json.dumps(spec)], check=True, capture_output=True,
                   timeout=600, cwd=work_dir)
    return np.load(work_dir / "out.npz")


def generate(python, out_dir, cases, large=False):
    """Run the fixture generator into out_dir for the given cases."""
    cmd = [python, str(GENERATOR), "--out", str(out_dir), "--only", *cases]
    if large:
        cmd.insert(2, "--large")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
