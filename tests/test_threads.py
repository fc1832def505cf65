"""One model, many threads: every caller gets exactly its single-threaded answer.

The arena, the plan cache and the trainer's buffers are shared and the plan runner
releases the GIL, so calls take turns under the model's lock; before it, four threads
predicting on one MobileNetV2 got 100 of 100 results wrong.
"""
import threading

import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES

MOBILENET = FIXTURES / "mobilenet_v2.k3.h5"  # 96x96x3, 10 classes
TRANSFER = FIXTURES / "train_transfer_frozen_base.k3.h5"


def _run_threads(work, n_threads):
    errors, results = [], [None] * n_threads

    def run(i):
        try:
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_predict_from_many_threads_and_shapes_gives_the_single_threaded_results():
    model = ec.load(MOBILENET)
    rng = np.random.default_rng(0)
    # Several batch shapes (new plans are made while others run) and batch sizes.
    inputs = [rng.standard_normal((n, 96, 96, 3)).astype(np.float32) for n in (1, 3, 5, 8, 2, 7)]
    expected = [ec.load(MOBILENET).predict(x, batch_size=4) for x in inputs]

    def work(i):
        got = []
        for round_ in range(6):
            k = (i + round_) % len(inputs)
            got.append((k, model.predict(inputs[k], batch_size=4)))
            got.append((k, model(inputs[k])))
        return got

    for results in _run_threads(work, 6):
        for k, got in results:
            np.testing.assert_array_equal(got, expected[k])  # bit for bit


def test_evaluate_from_many_threads_gives_the_single_threaded_results():
    model = ec.load(TRANSFER)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(1)
    sets = [(rng.standard_normal((n, 32, 32, 3)).astype(np.float32), rng.integers(0, 4, n))
            for n in (5, 9, 16, 3)]
    expected = [model.evaluate(x, y, batch_size=4, return_dict=True) for x, y in sets]

    def work(i):
        return [(k, model.evaluate(*sets[k], batch_size=4, return_dict=True))
                for k in [(i + j) % len(sets) for j in range(4)]]

    for results in _run_threads(work, 4):
        for k, got in results:
            assert got == expected[k]


def test_fit_and_predict_in_two_threads_take_turns():
    """A predict that runs while another thread fits sees the model before or after the
    whole run, never half a step."""
    model = ec.load(TRANSFER)
    model.compile(optimizer=ec.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((64, 32, 32, 3)).astype(np.float32), rng.integers(0, 4, 64)
    probe = x[:3]
    before = model.predict(probe)
    seen, started = [], threading.Event()

    def fitter(_):
        started.set()
        model.fit(x, y, batch_size=4, epochs=3, verbose=0)

    def predictor(_):
        started.wait()
        for _ in range(20):
            seen.append(model.predict(probe))

    threads = [threading.Thread(target=fitter, args=(0,)),
               threading.Thread(target=predictor, args=(1,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = model.predict(probe)
    assert not np.array_equal(before, after)
    for got in seen:
        assert np.array_equal(got, before) or np.array_equal(got, after)


@pytest.mark.parametrize("threads", [4])
def test_get_weights_while_training_is_a_consistent_snapshot(threads):
    model = ec.load(TRANSFER)
    model.compile(optimizer=ec.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((32, 32, 32, 3)).astype(np.float32), rng.integers(0, 4, 32)
    snapshots = []

    def work(i):
        if i == 0:
            for _ in range(5):
                model.train_on_batch(x[:8], y[:8])
        else:
            for _ in range(5):
                snapshots.append(model.get_layer("head").get_weights())

    _run_threads(work, threads)
    for kernel, bias in snapshots:
        assert np.all(np.isfinite(kernel)) and kernel.shape == (1280, 4) and bias.shape == (4,)


# --- threads inside one call: model.num_threads --------------------------------------------
# Every kernel splits its outputs, never a sum (kernels/threads.pxi), so a model gives the
# same bits at every thread count, in inference and in training.

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from training_traces import loss_from, optimizer_from  # noqa: E402

OPENMP = ec.build_info()["openmp"]
PRETRAINED = FIXTURES.parent / "pretrained" / "mobilenet_v2_imagenet.h5"  # 224x224x3


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def test_predict_is_the_same_at_1_2_and_4_threads():
    x = np.random.default_rng(4).standard_normal((3, 96, 96, 3)).astype(np.float32)
    results = {t: ec.load(MOBILENET, num_threads=t).predict(x) for t in (1, 2, 4)}
    for t in (2, 4):
        assert np.array_equal(_bits(results[t]), _bits(results[1])), f"{t} threads"


# Training: BN on batch statistics, depthwise and pointwise convolutions, squeeze-excite
# merges, grouped convolutions, PReLU, LayerNormalization, upsampling, a frozen base.
TRAINING_CASES = ["train_mobilenet_v2_finetune", "train_bn_unfrozen", "train_squeeze_excite",
                  "train_grouped_conv", "train_prelu", "train_layernorm", "train_upsampling",
                  "train_transfer_frozen_base"]


@pytest.mark.parametrize("case", TRAINING_CASES)
def test_train_on_batch_is_the_same_at_1_2_and_4_threads(case):
    ref = np.load(FIXTURES / f"{case}.k3.npz")
    variant = sorted({k.split("/")[1] for k in ref.files
                      if k.startswith("train/") and k.endswith("/config")})[0]
    config = json.loads(str(ref[f"train/{variant}/config"]))
    xs, ys = ref["train/x"], ref[config["y"]]
    runs = {}
    for t in (1, 2, 4):
        model = ec.load(FIXTURES / f"{case}.k3.h5", num_threads=t)
        model.compile(optimizer=optimizer_from(config["optimizer"]),
                      loss=loss_from(config["loss"]))
        losses = [model.train_on_batch(xs[s], ys[s]) for s in range(min(3, len(xs)))]
        runs[t] = (losses, model.get_weights(), model.predict(xs[0]))
    losses1, weights1, out1 = runs[1]
    for t in (2, 4):
        losses, weights, out = runs[t]
        assert losses == losses1, f"{case}: losses at {t} threads {losses} != {losses1}"
        for i, (a, b) in enumerate(zip(weights, weights1)):
            assert np.array_equal(_bits(a), _bits(b)), f"{case}: weight {i} at {t} threads"
        assert np.array_equal(_bits(out), _bits(out1)), f"{case}: predict at {t} threads"


def test_num_threads_defaults_to_the_cpus_this_process_may_use():
    model = ec.load(MOBILENET)
    assert model.num_threads == len(os.sched_getaffinity(0)) == ec.build_info()["cpu_count"]
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError):
            model.num_threads = bad
        with pytest.raises(ValueError):
            ec.load(MOBILENET, num_threads=bad)
    model.num_threads = None
    assert model.num_threads == len(os.sched_getaffinity(0))


def test_num_threads_set_mid_life_and_after_compile_replans():
    x = np.random.default_rng(5).standard_normal((2, 32, 32, 3)).astype(np.float32)
    y = np.array([1, 3])
    model = ec.load(TRANSFER, num_threads=1)
    first = model.predict(x)
    assert model._last_plan.nthreads == 1
    model.num_threads = 3
    assert np.array_equal(_bits(model.predict(x)), _bits(first))
    assert model._last_plan.nthreads == 3 and model.memory_plan(
        input_shape=(32, 32, 3), print_fn=False).num_threads == 3
    model.compile(optimizer=ec.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    twin = ec.load(TRANSFER, num_threads=1)
    twin.compile(optimizer=ec.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    for threads in (2, 1, 4):
        model.num_threads = threads
        assert model.train_on_batch(x, y) == twin.train_on_batch(x, y)
        assert {key[2] for key in model.trainer.plans} >= {threads}
    for a, b in zip(model.get_weights(), twin.get_weights()):
        assert np.array_equal(_bits(a), _bits(b))


def test_two_models_with_different_thread_counts_in_two_python_threads():
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((2, 96, 96, 3)).astype(np.float32) for _ in range(3)]
    single = ec.load(MOBILENET, num_threads=1)
    expected = [single.predict(x) for x in xs]
    models = [ec.load(MOBILENET, num_threads=1), ec.load(MOBILENET, num_threads=3)]

    def work(i):
        return [models[i].predict(xs[(i + r) % 3]) for r in range(6)]

    for i, results in enumerate(_run_threads(work, 2)):
        assert models[i].num_threads == (1, 3)[i]
        for r, got in enumerate(results):
            assert np.array_equal(_bits(got), _bits(expected[(i + r) % 3]))


_COUNT_TASKS = r"""
import os, sys, numpy as np, edgecore as ec
tasks = lambda: len(os.listdir("/proc/self/task"))
model = ec.load(sys.argv[1], num_threads=1)
x = np.zeros((2, 96, 96, 3), np.float32)
before = tasks()
model.predict(x)
model.compile(optimizer="adam", loss="mse")
model.train_on_batch(x, np.zeros((2, 10), np.float32))
one = tasks()
model.num_threads = 2
model.predict(x)
print(before, one, tasks())
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_one_thread_starts_no_thread(tmp_path):
    """num_threads=1 enters no OpenMP region: the process has as many threads after a
    predict and a training step as before (the OpenMP runtime starts its team on the first
    parallel region, and keeps it); with 2, the team appears."""
    out = subprocess.run([sys.executable, "-c", _COUNT_TASKS, str(MOBILENET)], check=True,
                         capture_output=True, text=True, cwd=tmp_path, env={**os.environ,
                                                              "OPENBLAS_NUM_THREADS": "1"})
    before, one, two = map(int, out.stdout.split())
    assert one == before, f"num_threads=1 started {one - before} thread(s)"
    if OPENMP:
        assert two > before, "num_threads=2 ran no parallel region"


_WAIT_ENV = r"""
import os, edgecore
print(os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT"))
"""


@pytest.mark.parametrize("user, expected", [
    ({}, "PASSIVE 30000"),                                 # ours: spin ~0.3 ms, then sleep
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE None"),        # the user's choice stands
    ({"GOMP_SPINCOUNT": "50"}, "None 50"),
])
def test_idle_threads_spin_briefly_then_sleep_unless_the_user_chose(tmp_path, user, expected):
    """edgecore sets how OpenMP threads wait before the runtime loads (README, Threads):
    a bounded spin bridges the gaps between a plan's parallel regions, sleeping after it
    keeps a busy neighbour process from starving our own threads."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", _WAIT_ENV], check=True, capture_output=True,
                         text=True, cwd=tmp_path, env={**env, **user})
    assert out.stdout.split()[-2:] == expected.split()


def test_build_info():
    info = ec.build_info()
    assert set(info) >= {"openmp", "openmp_linked", "compiler", "gemm_isa", "cpu_count"}
    assert info["gemm_isa"] == ec._kernels.gemm_isa()[0]
    assert info["activation_isa"] == ec._kernels.activation_isa()
    assert info["activation_isa"] in ec._kernels.available_activation_isas()
    assert info["cpu_count"] >= 1 and info["compiler"]
    assert (info["openmp_linked"] is None) == (not info["openmp"])


def test_scratch_for_more_threads_is_planned_and_budgeted():
    """Per-thread im2col blocks are in the arena the plan reports and the budget counts: a
    budget that holds the 1-thread plan refuses the same batch at 4 threads, before
    anything runs, where the extra blocks raise the arena's peak (resnet_small, batch 16;
    elsewhere they fit in gaps, or blocks shrink for small batches)."""
    path = FIXTURES / "resnet_small.k3.h5"
    plans = {t: ec.load(path, num_threads=t).memory_plan(batch_size=16, print_fn=False)
             for t in (1, 4)}
    assert plans[4].scratch_bytes > plans[1].scratch_bytes
    assert plans[4].arena_bytes > plans[1].arena_bytes
    assert "4 thread(s)" in plans[4].format() and "1 thread(s)" in plans[1].format()
    budget = (plans[1].total_bytes + plans[4].total_bytes) // 2
    model = ec.load(path, num_threads=1, memory_budget=budget)
    x = np.zeros((16,) + model.input_shape[1:], np.float32)
    model.predict(x, batch_size=16)
    model.num_threads = 4
    with pytest.raises(ec.MemoryBudgetError):
        model.predict(x, batch_size=16)
