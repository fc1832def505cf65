"""The memory promise in every call: what a call will touch is planned and budgeted before
any work, and never grows with the number of samples."""
import tracemalloc

import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES

SMALL = FIXTURES / "mobilenet_v2.k3.h5"  # 96x96x3 -> 10


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


def test_predict_on_many_samples_plans_one_batch():
    small, large = ec.load(SMALL), ec.load(SMALL)
    small.predict(_images(32))
    large.predict(_images(2000))
    assert large.executor.arena.size == small.executor.arena.size
    assert {key[0][0] for key in large._plans} <= {1, 32, 2000 % 32}  # 1: planned at load


def test_predict_works_under_a_budget_that_fits_one_batch():
    budget = ec.load(SMALL).memory_plan(batch_size=32, print_fn=False).total_bytes
    model = ec.load(SMALL, memory_budget=budget + 100 * 10 * 4 + (1 << 16))
    x = _images(100)
    got = model.predict(x)
    np.testing.assert_array_equal(got, ec.load(SMALL).predict(x))
    with pytest.raises(ec.MemoryBudgetError, match="predict outputs"):
        # the result array of 2 million samples is part of the call's memory
        model.predict(np.broadcast_to(x[:1], (2_000_000,) + x.shape[1:]))


def test_predict_converts_uint8_per_batch_not_whole():
    model = ec.load(SMALL)
    x = _images(400)
    model.predict(x[:32])  # plans
    tracemalloc.start()
    try:
        model.predict(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the result (400 x 10 floats) and small objects; a float32 copy of x would be 44 MB
    assert peak < 1 << 20, peak
    np.testing.assert_array_equal(model.predict(x), model.predict(x.astype(np.float32)))


def test_call_runs_in_bounded_batches_with_the_same_numbers():
    model = ec.load(SMALL)
    x = _images(70).astype(np.float32)
    np.testing.assert_array_equal(model(x), model.predict(x, batch_size=70))
    assert max(key[0][0] for key in model._plans) <= 70


@pytest.mark.parametrize("bad", [0, -1, 2.5, "32", True])
def test_a_bad_batch_size_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="batch_size"):
        ec.load(SMALL).predict(_images(2), batch_size=bad)
