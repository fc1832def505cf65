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
    # Keys: (input shapes, num_threads); 1: planned at load.
    assert {key[0][0][0] for key in large._plans} <= {1, 32, 2000 % 32}


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
    assert max(key[0][0][0] for key in model._plans) <= 70


@pytest.mark.parametrize("bad", [0, -1, 2.5, "32", True])
def test_a_bad_batch_size_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="batch_size"):
        ec.load(SMALL).predict(_images(2), batch_size=bad)


TRANSFER = FIXTURES / "train_transfer_frozen_base.k3.h5"


def _transfer(**compile_kwargs):
    model = ec.load(TRANSFER)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", **compile_kwargs)
    return model


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 4, n)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "big"])
def test_fit_refuses_a_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        _transfer().fit(*_data(8), batch_size=bad, verbose=0)


def test_empty_inputs_and_malformed_validation_are_clear_errors():
    model = _transfer()
    x, y = _data(8)
    with pytest.raises(ec.ShapeError, match="at least one sample"):
        model.train_on_batch(x[:0], y[:0])
    with pytest.raises(ec.ShapeError, match="at least one sample"):
        model.evaluate(x[:0], y[:0])
    with pytest.raises(ec.ShapeError, match="validation_data has no samples"):
        model.fit(x, y, validation_data=(x[:0], y[:0]), verbose=0)
    with pytest.raises(ValueError, match=r"tuple \(x, y\)"):
        model.fit(x, y, validation_data=(x,), verbose=0)
    with pytest.raises(ValueError, match="sample weights are not supported"):
        model.fit(x, y, validation_data=(x, y, np.ones(8)), verbose=0)


def test_learning_rates_are_finite_and_zero_is_allowed_as_in_keras():
    for bad in (float("nan"), float("inf"), -1e-3):
        with pytest.raises(ValueError, match="learning_rate"):
            ec.optimizers.Adam(bad)
    model = ec.load(TRANSFER)
    model.compile(optimizer=ec.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    before = model.get_layer("head").get_weights()
    model.fit(*_data(8), verbose=0)
    for a, b in zip(model.get_layer("head").get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_the_spilled_cache_goes_to_a_writable_temporary_directory(tmp_path, monkeypatch):
    """A model in a read-only directory (a system-wide install) spills its cache to the
    system's temporary directory, or to feature_cache_dir."""
    import os
    import stat
    import tempfile

    from edgecore.train import cache as cache_module

    ro = tmp_path / "readonly"
    ro.mkdir()
    model_path = ro / "model.h5"
    model_path.write_bytes(TRANSFER.read_bytes())
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    made = []
    real = cache_module.SpilledCache.__init__

    def spy(self, shape, directory):
        made.append(directory)
        real(self, shape, directory)

    monkeypatch.setattr(cache_module.SpilledCache, "__init__", spy)
    try:
        x, y = _data(16)
        model = ec.load(model_path)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, verbose=0, feature_cache="disk")
        assert made and all(d == tempfile.gettempdir() for d in made)
        chosen = tmp_path / "cache_here"
        chosen.mkdir()
        made.clear()
        model.fit(x, y, verbose=0, feature_cache="disk", feature_cache_dir=chosen)
        assert made and all(d == str(chosen) for d in made)
        assert os.listdir(chosen) == []  # unlinked as soon as made
    finally:
        ro.chmod(stat.S_IRWXU)


def test_the_spilled_cache_trains_exactly_like_the_cache_in_memory():
    x, y = _data(40)
    results = []
    for where in ("disk", True):
        ec.utils.set_random_seed(5)
        model = _transfer()
        history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, feature_cache=where,
                            validation_data=(x[:8], y[:8]))
        results.append((history.history, model.get_weights()))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)
