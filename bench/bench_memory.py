"""Peak RSS and import time, each runtime in a fresh process, measured in one run.

Every row is a new Python process that imports the runtime, loads MobileNetV2-1.0-224 and
runs 10 batch-1 predictions, then reports its peak resident size (VmHWM; see
bench/measure.py for why not a child's ru_maxrss), the
time its import took and the time from the import to the first prediction's result
(`import edgecore` defers numpy to the first load, so the second number is the
fair comparison of start-up cost).  The baseline process only imports numpy (edgecore's
run-time dependency; h5py is no longer one).  The table is printed at the end of the run (bench/conftest.py).

Claims checked here (issue: one preallocated memory arena):
  * edgecore's peak RSS is below LiteRT's and ONNX Runtime's on the same model;
  * it is at most 15 MB above the numpy baseline plus the packed weight bytes;
  * `import edgecore` is faster than importing LiteRT's interpreter.

    pytest bench/bench_memory.py            (LiteRT/ONNX rows need the runtimes and
                                             bench/convert_models.py's outputs)
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from measure import PEAK_RSS_SOURCE

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODEL_H5 = REPO / "weights/pretrained/mobilenet_v2_imagenet.h5"
MODEL_TFLITE = HERE / "models/mobilenet_v2_1.0_224.tflite"
MODEL_ONNX = HERE / "models/mobilenet_v2_1.0_224.onnx"

_PRELUDE = PEAK_RSS_SOURCE.replace("{", "{{").replace("}", "}}") + """
import json, resource, sys, time
t0 = time.perf_counter()
{imports}
import_ms = (time.perf_counter() - t0) * 1e3
import numpy as np
x = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
{run}
print(json.dumps({{"peak_mb": peak_rss_mb(), "import_ms": import_ms,
                  "first_ms": first_ms, "extra": extra}}))
"""

SCRIPTS = {
    "numpy (baseline)": ("import numpy", "extra = {}; first_ms = 0.0"),
    "edgecore": ("import edgecore", f"""
model = edgecore.load({str(MODEL_H5)!r})
model.predict(x)
first_ms = (time.perf_counter() - t0) * 1e3
for _ in range(9):
    model.predict(x)
extra = {{"weights_mb": model.weights_buffer.nbytes / 2**20,
          "arena_mb": model.memory_plan((224, 224, 3), print_fn=False).arena_bytes / 2**20}}
"""),
    "litert": ("from ai_edge_litert.interpreter import Interpreter", f"""
interp = Interpreter(model_path={str(MODEL_TFLITE)!r}, num_threads=1)
interp.allocate_tensors()
inp, outp = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
for i in range(10):
    interp.set_tensor(inp, x); interp.invoke(); interp.get_tensor(outp)
    if i == 0:
        first_ms = (time.perf_counter() - t0) * 1e3
extra = {{}}
"""),
    "onnxruntime": ("import onnxruntime as ort", f"""
opts = ort.SessionOptions(); opts.intra_op_num_threads = opts.inter_op_num_threads = 1
sess = ort.InferenceSession({str(MODEL_ONNX)!r}, opts, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
for i in range(10):
    sess.run(None, {{name: x}})
    if i == 0:
        first_ms = (time.perf_counter() - t0) * 1e3
extra = {{}}
"""),
}


def measure(results, name, repeats=3):
    """Median over a few fresh processes (peak RSS is stable; import time is noisy)."""
    imports, run = SCRIPTS[name]
    code = _PRELUDE.format(imports=imports, run=textwrap.dedent(run))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=HERE, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    peak = sorted(r["peak_mb"] for r in runs)[len(runs) // 2]
    import_ms = sorted(r["import_ms"] for r in runs)[len(runs) // 2]
    first_ms = sorted(r["first_ms"] for r in runs)[len(runs) // 2]
    results[name] = {"peak_mb": peak, "import_ms": import_ms, "first_ms": first_ms,
                     **runs[0]["extra"]}
    return results[name]


@pytest.fixture(scope="module")
def baseline(memory_results):
    return measure(memory_results, "numpy (baseline)")


@pytest.fixture(scope="module")
def edgecore_row(memory_results):
    return measure(memory_results, "edgecore")


def test_edgecore_peak_is_baseline_plus_weights_plus_at_most_15_mb(baseline, edgecore_row):
    allowed = baseline["peak_mb"] + edgecore_row["weights_mb"] + 15e6 / 2**20   # 15 MB, in MiB
    assert edgecore_row["peak_mb"] <= allowed, (edgecore_row, baseline)


@pytest.mark.parametrize("name,module,model", [
    ("litert", "ai_edge_litert.interpreter", MODEL_TFLITE),
    ("onnxruntime", "onnxruntime", MODEL_ONNX),
])
def test_edgecore_peak_and_import_below_reference(name, module, model, edgecore_row,
                                                  memory_results):
    pytest.importorskip(module)
    if not model.exists():
        pytest.skip(f"{model} missing: run bench/convert_models.py with TensorFlow")
    other = measure(memory_results, name)
    assert edgecore_row["peak_mb"] < other["peak_mb"], (edgecore_row, other)
    if name == "litert":
        assert edgecore_row["import_ms"] < other["import_ms"], (edgecore_row, other)
