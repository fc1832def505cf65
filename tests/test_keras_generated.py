"""Fixtures too large to commit, generated on demand by real Keras (marker `keras`).

Skipped unless a Python with TensorFlow + Keras is available: set EDGECORE_KERAS_PYTHON to
it (e.g. a venv made with `pip install tensorflow-cpu==2.21.0 keras==3.15.1
tf-keras==2.21.0 h5py`), or run the tests from such an environment.  edgecore itself never
imports TensorFlow; the generator runs in a subprocess.
"""
import json
import os

import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES, NOT_COMMITTED, generate

pytestmark = [pytest.mark.keras]

# The arena target (<= 1.1x the live-bytes lower bound) is for these; the others are
# printed (DenseNet121's chains of Concatenate sit at 1.11x: placing concat inputs in their
# output slices would fix it).
ARENA_NEAR_LOWER_BOUND = {"resnet50", "mobilenet_v2", "efficientnet_b0", "mobilenet"}

LARGE_APPLICATIONS = ["mobilenet", "mobilenet_v3_large", "resnet50", "densenet121",
                      "nasnet_mobile", "xception", "inception_v3", "vgg16"]


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
            report = model.memory_plan(tuple(xs[0].shape[1:]))
            if case in ARENA_NEAR_LOWER_BOUND:
                assert report.arena_bytes <= 1.1 * report.lower_bound_bytes, (info["file"], report)
            print(f"{info['file']}: arena {report.arena_bytes / 2**20:.2f} MiB = "
                  f"{report.arena_bytes / report.lower_bound_bytes:.3f} x lower bound")
            checked.append(info["file"])
    return checked


@pytest.mark.slow
def test_efficientnet_last_block_fine_tunes_like_keras(keras_py, tmp_path):
    """EfficientNetB0's block7a (squeeze-excite, swish, 3x3 depthwise) and top conv/BN
    unfrozen, trained as Keras 3 trained it (a large fixture: 68 MB)."""
    from training_traces import replay, variants

    generate(keras_py, tmp_path, ["efficientnet_b0_finetune"], large=True)
    cases = list(variants(tmp_path, ["efficientnet_b0_finetune"]))
    assert cases
    for case in cases:
        replay(tmp_path, *case.values)


@pytest.mark.slow
@pytest.mark.parametrize("case", LARGE_APPLICATIONS)
def test_large_application_matches_keras(case, keras_py, tmp_path):
    generate(keras_py, tmp_path, [case], large=True)
    assert len(check_case(tmp_path, case)) == 3  # .k3.h5, .keras, .k2.h5


@pytest.mark.slow
def test_uncommitted_flavours_match_keras(keras_py, tmp_path):
    cases = sorted({name.split(".")[0] for name in NOT_COMMITTED})
    generate(keras_py, tmp_path, cases)
    checked = set()
    for case in cases:
        checked.update(check_case(tmp_path, case))
    assert NOT_COMMITTED <= checked


@pytest.mark.slow
def test_committed_fixtures_are_what_the_generator_writes(keras_py, tmp_path):
    """The generator is deterministic; the committed files are its output, not edits."""
    case = "conv2d_3x3_valid_s1_d1"
    generate(keras_py, tmp_path, [case])
    for suffix in (".k3.h5", ".keras", ".k2.h5", ".k3.npz", ".k2.npz"):
        assert (tmp_path / (case + suffix)).read_bytes() == (FIXTURES / (case + suffix)).read_bytes()


@pytest.mark.slow
def test_a_model_trained_by_edgecore_opens_in_keras_and_predicts_the_same(keras_py, tmp_path):
    """Train on the device, save, and hand the file back to Keras (issue: saving)."""
    import subprocess

    ec.utils.set_random_seed(0)
    model = ec.transfer.new_head(ec.load(FIXTURES / "train_transfer_frozen_base.k3.h5"),
                                 classes=3, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, checkpoint=tmp_path / "run.h5")
    model.save(tmp_path / "trained.h5")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ours.npy", model.predict(x))
    script = (
        "import sys, numpy as np, keras\n"
        "d = sys.argv[1]\n"
        "x = np.load(d + '/x.npy')\n"
        "trained = keras.models.load_model(d + '/trained.h5', compile=False)\n"
        "np.save(d + '/keras.npy', trained.predict(x, verbose=0))\n"
        "ckpt = keras.models.load_model(d + '/run.h5')  # compiled: optimizer restored\n"
        "print(type(ckpt.optimizer).__name__, int(ckpt.optimizer.iterations.numpy()))\n")
    proc = subprocess.run([keras_py, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours, keras_out = np.load(tmp_path / "ours.npy"), np.load(tmp_path / "keras.npy")
    assert np.abs(ours - keras_out).max() <= 1e-4 * max(1.0, float(np.abs(keras_out).max()))
    assert proc.stdout.split()[-2:] == ["Adam", "6"]


# --- the keras.applications sweep -----------------------------------------------------------
# Every model constructor of keras.applications (Keras 3.15), and the ones only
# tf_keras.applications (2.21) has, as the generator enumerates them (cases "app_<name lower>",
# see _application_sweep_cases; test_the_sweep_lists_every_constructor keeps this list equal to
# the generator's).  Each is built at the smallest input it accepts, include_top=True,
# classes=10, logits, with drawn weights and calibrated BN statistics, written as .k3.h5 and
# .keras by Keras 3 and .k2.h5 by tf_keras, and must match Keras's predictions in every file.
# Run a subset with -k, e.g. `-m keras -k "sweep and EfficientNet"`.
SWEEP_BOTH = [
    "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtSmall", "ConvNeXtTiny", "ConvNeXtXLarge",
    "DenseNet121", "DenseNet169", "DenseNet201",
    "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4",
    "EfficientNetB5", "EfficientNetB6", "EfficientNetB7",
    "EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3",
    "EfficientNetV2L", "EfficientNetV2M", "EfficientNetV2S",
    "InceptionResNetV2", "InceptionV3", "MobileNet", "MobileNetV2", "MobileNetV3Large",
    "MobileNetV3Small", "NASNetLarge", "NASNetMobile",
    "ResNet101", "ResNet101V2", "ResNet152", "ResNet152V2", "ResNet50", "ResNet50V2",
    "VGG16", "VGG19", "Xception"]
SWEEP_TF_KERAS_ONLY = [f"RegNet{kind}{size}" for kind in "XY" for size in (
    "002", "004", "006", "008", "016", "032", "040", "064", "080", "120", "160", "320")] + [
    f"ResNetRS{depth}" for depth in (50, 101, 152, 200, 270, 350, 420)]
# The very largest (several minutes each, GBs of files): also marked slow.
SWEEP_SLOW = {"ConvNeXtXLarge", "ConvNeXtLarge", "EfficientNetV2L", "NASNetLarge",
              "EfficientNetB7", "RegNetX320", "RegNetY320", "ResNetRS420", "ResNetRS350"}
SWEEP = [pytest.param(c, id=c, marks=[pytest.mark.slow] if c in SWEEP_SLOW else [])
         for c in SWEEP_BOTH + SWEEP_TF_KERAS_ONLY]


def sweep_case(constructor):
    return "app_" + constructor.lower()


def check_application(out_dir, case):
    """{file: max abs error} of edgecore's predictions against Keras's (the in-memory
    model's, which the generator recorded: Keras cannot reload some of these files)."""
    manifest = json.loads((out_dir / "manifest.json").read_text())["cases"][case]
    errors = {}
    for framework in manifest["frameworks"].values():
        ref = np.load(out_dir / framework["npz"]["file"])
        x, y = ref["x0"], ref["y0"]
        for info in framework["files"].values():
            model = ec.load(out_dir / info["file"])
            got = model.predict(x, batch_size=len(x))
            assert got.shape == y.shape, (info["file"], got.shape, y.shape)
            assert model.count_params() == framework["params"]["total"], info["file"]
            errors[info["file"]] = float(np.abs(got - y).max())
            tolerance = 1e-4 * max(1.0, float(np.abs(y).max()))
            print(f"{info['file']}: input {tuple(x.shape[1:])}, params {model.count_params()}, "
                  f"max|err| {errors[info['file']]:.3g} (tolerance {tolerance:.3g}), keras reload "
                  f"{info['reload']}")
            assert errors[info["file"]] <= tolerance, (info["file"], errors[info["file"]], tolerance)
            del model
    return errors


@pytest.mark.parametrize("constructor", SWEEP)
def test_every_application_matches_keras_sweep(constructor, keras_py, tmp_path):
    case = sweep_case(constructor)
    generate(keras_py, tmp_path, [case], large=True)
    manifest = json.loads((tmp_path / "manifest.json").read_text())["cases"][case]
    frameworks = ("k3", "k2") if constructor in SWEEP_BOTH else ("k2",)
    assert sorted(manifest["frameworks"]) == sorted(frameworks), manifest["skipped"]
    errors = check_application(tmp_path, case)
    flavours = (["k3.h5", "keras"] if "k3" in frameworks else []) + ["k2.h5"]
    assert sorted(errors) == sorted(f"{case}.{f}" for f in flavours)


def test_the_sweep_lists_every_constructor(keras_py):
    """The generator enumerates keras.applications and tf_keras.applications; this module's
    parametrization must name the same constructors, each with its frameworks."""
    import subprocess

    from fixtures import GENERATOR

    proc = subprocess.run([keras_py, str(GENERATOR), "--list", "--large"], capture_output=True,
                          text=True, timeout=600, check=True)
    listed = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) > 2 and "sweep" in fields[2].split(","):
            listed[fields[0]] = tuple(fields[1].split(","))
    ours = {sweep_case(c): ("k3", "k2") for c in SWEEP_BOTH}
    ours.update({sweep_case(c): ("k2",) for c in SWEEP_TF_KERAS_ONLY})
    assert listed == ours
