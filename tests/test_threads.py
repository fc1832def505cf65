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
