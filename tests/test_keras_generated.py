"""Fixtures too large to commit, generated on demand by real Keras (marker `keras`).

Skipped unless a Python with TensorFlow + Keras is available: set EDGECORE_KERAS_PYTHON to
it (e.g. a venv made with `pip install tensorflow-cpu==2.21.0 keras==3.15.1
tf-keras==2.21.0 h5py`), or run the tests from such an environment.  edgecore itself never
imports TensorFlow; the generator runs in a subprocess.
"""
import json

import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES, NOT_COMMITTED, generate, keras_python

pytestmark = [pytest.mark.keras, pytest.mark.slow]

LARGE_APPLICATIONS = ["mobilenet", "mobilenet_v3_large", "resnet50", "densenet121",
                      "nasnet_mobile", "xception", "inception_v3", "vgg16"]


@pytest.fixture(scope="module")
def keras_py():
    python = keras_python()
    if python is None:
        pytest.skip("no TensorFlow/Keras python (set EDGECORE_KERAS_PYTHON)")
    return python


def check_case(out_dir, case):
    manifest = json.loads((out_dir / "manifest.json").read_text())["cases"][case]
    checked = []
    for framework in manifest["frameworks"].values():
        ref = np.load(out_dir / framework["npz"]["file"])
        xs = [ref[k] for k in sorted(k for k in ref.files if k.startswith("x"))]
        ys = [ref[k] for k in sorted(k for k in ref.files if k.startswith("y"))]
        for info in framework["files"].values():
            model = ec.load(out_dir / info["file"])
            got = model.predict(xs if len(xs) > 1 else xs[0], batch_size=len(xs[0]))
            got = got if isinstance(got, list) else [got]
            for g, y in zip(got, ys):
                err = float(np.abs(g - y).max())
                assert err <= 1e-4 * max(1.0, float(np.abs(y).max())), (info["file"], err)
            assert model.count_params() == framework["params"]["total"], info["file"]
            checked.append(info["file"])
    return checked


@pytest.mark.parametrize("case", LARGE_APPLICATIONS)
def test_large_application_matches_keras(case, keras_py, tmp_path):
    generate(keras_py, tmp_path, [case], large=True)
    assert len(check_case(tmp_path, case)) == 3  # .k3.h5, .keras, .k2.h5


def test_uncommitted_flavours_match_keras(keras_py, tmp_path):
    cases = sorted({name.split(".")[0] for name in NOT_COMMITTED})
    generate(keras_py, tmp_path, cases)
    checked = set()
    for case in cases:
        checked.update(check_case(tmp_path, case))
    assert NOT_COMMITTED <= checked


def test_committed_fixtures_are_what_the_generator_writes(keras_py, tmp_path):
    """The generator is deterministic; the committed files are its output, not edits."""
    case = "conv2d_3x3_valid_s1_d1"
    generate(keras_py, tmp_path, [case])
    for suffix in (".k3.h5", ".keras", ".k2.h5", ".k3.npz", ".k2.npz"):
        assert (tmp_path / (case + suffix)).read_bytes() == (FIXTURES / (case + suffix)).read_bytes()
