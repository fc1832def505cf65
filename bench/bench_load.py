"""Load time of the same model as a legacy .h5 and as a Keras 3 .keras, in one run.

A .keras archive holds model.weights.h5 stored uncompressed; edgecore copies it out once
(in the kernel) and opens it with HDF5's native driver, so loading a .keras costs at most
1.2x loading the same model's .h5 (it was 7-30x when h5py read through zipfile's member
object).  Loads alternate, and the medians are compared (the machine is shared).

Run:  pytest bench/bench_load.py -s
"""
import os
import statistics
import sys
import time

import pytest

import edgecore as ec

_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
from fixtures import FIXTURES, generate, keras_python  # noqa: E402

ROUNDS = 15


def _medians(base):
    times = {".k3.h5": [], ".keras": []}
    for _ in range(ROUNDS):
        for ext, samples in times.items():
            start = time.perf_counter()
            ec.load(f"{base}{ext}")
            samples.append(time.perf_counter() - start)
    return {ext: statistics.median(samples) for ext, samples in times.items()}


def _check(name, base):
    medians = _medians(base)
    ratio = medians[".keras"] / medians[".k3.h5"]
    print(f"\n{name}: .h5 {medians['.k3.h5'] * 1e3:.1f} ms, .keras "
          f"{medians['.keras'] * 1e3:.1f} ms, ratio {ratio:.2f}")
    assert ratio <= 1.2, (name, medians)


@pytest.mark.parametrize("case", ["mobilenet_v2", "resnet_small", "transfer_mobilenet_v2"])
def test_keras_loads_within_1_2x_of_h5(case):
    _check(case, FIXTURES / case)


@pytest.mark.keras
def test_keras_loads_within_1_2x_of_h5_on_large_applications(tmp_path):
    keras_py = keras_python()
    if keras_py is None:
        pytest.skip("no TensorFlow/Keras python (set EDGECORE_KERAS_PYTHON)")
    cases = ["resnet50", "densenet121", "nasnet_mobile"]
    generate(keras_py, tmp_path, cases, large=True)
    for case in cases:
        _check(case, tmp_path / case)
