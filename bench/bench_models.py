"""Whole-model latency, single thread, batch 1: edgecore's compiled plan beside references
on the same model and input, in one run.

References: NumPy (bench/numpy_forward.py: im2col + OpenBLAS matmul, same weights) always;
ONNX Runtime and LiteRT when installed and when bench/convert_models.py (a dev-only tool
that needs TensorFlow) has written the converted models into bench/models/.
Each implementation's output is checked against edgecore's before it is timed.

    OPENBLAS_NUM_THREADS=1 pytest bench/bench_models.py --benchmark-only
"""
from pathlib import Path

import numpy as np
import pytest

import edgecore as ec
from numpy_forward import NumpyForward

REPO = Path(__file__).resolve().parent.parent
CONVERTED = Path(__file__).resolve().parent / "models"

MODELS = {
    # name: (file, input shape)
    "mobilenet_v2_1.0_224": (REPO / "weights/pretrained/mobilenet_v2_imagenet.h5", (224, 224, 3)),
    "mobilenet_v2_0.35_96": (REPO / "weights/fixtures/mobilenet_v2.k3.h5", (96, 96, 3)),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    path, shape = MODELS[request.param]
    model = ec.load(path)
    x = np.random.default_rng(0).uniform(0, 255, (1,) + shape).astype(np.float32)
    return request.param, model, x, model.predict(x)


def _check(name, got, ref):
    err = float(np.abs(np.asarray(got) - ref).max())
    assert err <= 1e-4 * max(1.0, float(np.abs(ref).max())), f"{name} disagrees with edgecore: {err}"


def test_edgecore(benchmark, case):
    name, model, x, ref = case
    benchmark.group = f"{name} batch 1"
    benchmark.extra_info["impl"] = "edgecore"
    benchmark(model.predict, x)


def test_numpy_im2col(benchmark, case):
    name, model, x, ref = case
    forward = NumpyForward(model)
    _check("numpy", forward(x)[0], ref)
    benchmark.group = f"{name} batch 1"
    benchmark.extra_info["impl"] = "numpy"
    benchmark(forward, x)


def test_onnxruntime(benchmark, case):
    name, model, x, ref = case
    ort = pytest.importorskip("onnxruntime")
    path = CONVERTED / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path} missing: run bench/convert_models.py with TensorFlow")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    _check("onnxruntime", session.run(None, feed)[0], ref)
    benchmark.group = f"{name} batch 1"
    benchmark.extra_info["impl"] = "onnxruntime"
    benchmark(session.run, None, feed)


def test_litert(benchmark, case):
    name, model, x, ref = case
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    path = CONVERTED / f"{name}.tflite"
    if not path.exists():
        pytest.skip(f"{path} missing: run bench/convert_models.py with TensorFlow")
    interpreter = litert.Interpreter(model_path=str(path), num_threads=1)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def run():
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    _check("litert", run(), ref)
    benchmark.group = f"{name} batch 1"
    benchmark.extra_info["impl"] = "litert"
    benchmark(run)
