"""Whole-model latency, batch 1, at 1 and 2 threads: edgecore's compiled plan beside
references on the same model and input, in one run.

References: NumPy (bench/numpy_forward.py: im2col + OpenBLAS matmul, same weights; one
thread only) always; ONNX Runtime and LiteRT (`pip install ".[bench]"`) when
bench/convert_models.py (a dev-only tool that needs TensorFlow) has written the models into
bench/models/.  Without bench/models/ the two bundled MobileNetV2 files are benchmarked.
Each implementation's output is checked against edgecore's before it is timed.  For the
interleaved table in README.md use bench/compare_runtimes.py.

    pytest bench/bench_models.py --benchmark-only
"""
from pathlib import Path

import numpy as np
import pytest

import edgecore as ec
from numpy_forward import NumpyForward
from peers import litert_runner, onnxruntime_runner

REPO = Path(__file__).resolve().parent.parent
CONVERTED = Path(__file__).resolve().parent / "models"

BUNDLED = {
    "mobilenet_v2_1.0_224": (REPO / "weights/pretrained/mobilenet_v2_imagenet.h5", (224, 224, 3)),
    "mobilenet_v2_0.35_96": (REPO / "weights/fixtures/mobilenet_v2.k3.h5", (96, 96, 3)),
}
CONVERTED_NAMES = ["mobilenet_v2_0.35_96", "mobilenet_v2_1.0_224", "mobilenet_v3_small_224",
                   "efficientnet_b0_224", "resnet50_224"]


def _models():
    models = dict(BUNDLED)
    for name in CONVERTED_NAMES:
        path = CONVERTED / f"{name}.h5"
        if path.exists():
            models[name] = (path, (96, 96, 3) if name.endswith("_96") else (224, 224, 3))
    return models


MODELS = _models()
THREADS = [1, 2]


@pytest.fixture(scope="module", params=sorted(MODELS))
def loaded(request):
    path, shape = MODELS[request.param]
    x = np.random.default_rng(0).uniform(0, 255, (1,) + shape).astype(np.float32)
    model = ec.load(path, num_threads=1)
    return request.param, path, model, x, model.predict(x)


@pytest.fixture(params=THREADS, ids=[f"{t}t" for t in THREADS])
def case(request, loaded):
    name, path, model, x, ref = loaded
    model.num_threads = request.param
    return name, request.param, model, x, ref


def _check(name, got, ref):
    err = float(np.abs(np.asarray(got) - ref).max())
    assert err <= 1e-4 * max(1.0, float(np.abs(ref).max())), f"{name} disagrees with edgecore: {err}"


def _group(benchmark, name, threads, impl):
    benchmark.group = f"{name} batch 1, {threads} thread{'s' if threads > 1 else ''}"
    benchmark.extra_info["impl"] = impl


def test_edgecore(benchmark, case):
    name, threads, model, x, ref = case
    _check("edgecore", model.predict(x), ref)
    _group(benchmark, name, threads, "edgecore")
    benchmark(model.predict, x)


def test_numpy_im2col(benchmark, case):
    name, threads, model, x, ref = case
    if threads != 1:
        pytest.skip("the NumPy reference runs on one thread (OPENBLAS_NUM_THREADS=1)")
    try:   # the reference lowers some layers only when it first runs them
        forward = NumpyForward(model)
        out = forward(x)[0]
    except NotImplementedError as exc:
        pytest.skip(f"numpy reference: {exc}")
    _check("numpy", out, ref)
    _group(benchmark, name, threads, "numpy")
    benchmark(forward, x)


def _converted(name, suffix):
    path = CONVERTED / f"{name}{suffix}"
    if not path.exists():
        pytest.skip(f"{path} missing: run bench/convert_models.py with TensorFlow")
    if MODELS[name][0] != CONVERTED / f"{name}.h5":
        pytest.skip(f"{path} was not converted from the model edgecore runs here")
    return path


def test_onnxruntime(benchmark, case):
    name, threads, model, x, ref = case
    pytest.importorskip("onnxruntime")
    run = onnxruntime_runner(_converted(name, ".onnx"), threads, x)
    _check("onnxruntime", run(), ref)
    _group(benchmark, name, threads, "onnxruntime")
    benchmark(run)


def test_litert(benchmark, case):
    name, threads, model, x, ref = case
    pytest.importorskip("ai_edge_litert.interpreter")
    run = litert_runner(_converted(name, ".tflite"), threads, x)
    _check("litert", run(), ref)
    _group(benchmark, name, threads, "litert")
    benchmark(run)
