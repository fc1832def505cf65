"""Keras's fit conventions: labels of shape (N,) for a one-unit output, validation_split,
set_random_seed honoured whenever it is called before fit, and x yielding (x, y) batches
(a generator or dataset) for fit and evaluate.  What Keras itself computes for these is
in the train_fit_conventions fixture (test_training_parity.py)."""
import warnings

import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES

HEAD = FIXTURES / "train_dense_head.k3.h5"  # Input(32) -> Dense(16, relu) -> Dense(5, softmax)
BINARY = FIXTURES / "train_binary_head.k3.h5"  # Input(20) -> Dense(8, relu) -> Dense(1, sigmoid)
TRANSFER = FIXTURES / "train_transfer_frozen_base.k3.h5"


def data(n, shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + shape).astype(np.float32), rng.integers(0, classes, n)


def compiled(path=HEAD, loss="sparse_categorical_crossentropy", **kwargs):
    model = ec.load(path)
    model.compile(optimizer=ec.optimizers.SGD(0.1), loss=loss, metrics=["accuracy"], **kwargs)
    return model


def weights(model):
    return [w for layer in model.layers for w in layer.get_weights()]


@pytest.mark.parametrize("loss", ["binary_crossentropy", "mse"])
def test_flat_labels_for_a_one_unit_output_train_as_column_labels(loss):
    x, _ = data(24, (20,), 2)
    y = (x[:, 0] > 0).astype(np.float32)
    runs = []
    for labels in (y, y[:, None]):
        model = compiled(BINARY, loss)
        history = model.fit(x, labels, batch_size=8, epochs=2, shuffle=False, verbose=0)
        runs.append((history.history, weights(model), model.evaluate(x, labels, return_dict=True)))
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


def test_labels_of_another_shape_are_refused_with_the_expected_shape():
    x, _ = data(8, (20,), 2)
    model = compiled(BINARY, "binary_crossentropy")
    with pytest.raises(ec.ShapeError, match=r"expects \(8, 1\)"):
        model.fit(x, np.zeros((8, 2), np.float32), verbose=0)


def test_validation_split_holds_out_the_last_fraction_before_shuffling():
    x, y = data(40, (32,), 5)
    split = compiled()
    history = split.fit(x, y, batch_size=8, epochs=2, validation_split=0.25, verbose=0,
                        shuffle=False)
    explicit = compiled()
    reference = explicit.fit(x[:30], y[:30], batch_size=8, epochs=2, verbose=0, shuffle=False,
                             validation_data=(x[30:], y[30:]))
    assert history.history == reference.history
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_validation_split_floor_and_refusals():
    x, y = data(10, (32,), 5)
    model = compiled()
    history = model.fit(x, y, batch_size=4, epochs=1, validation_split=0.33, verbose=0,
                        shuffle=False)  # floor(10 * 0.67) = 6 train, 4 validation
    reference = compiled().fit(x[:6], y[:6], batch_size=4, epochs=1, verbose=0, shuffle=False,
                               validation_data=(x[6:], y[6:]))
    assert history.history == reference.history
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="validation_split"):
            model.fit(x, y, validation_split=bad, verbose=0)
    with pytest.raises(ValueError, match="not sufficient to split"):
        model.fit(x[:1], y[:1], validation_split=0.5, verbose=0)


def test_validation_data_wins_over_validation_split():
    x, y = data(20, (32,), 5)
    a = compiled().fit(x, y, epochs=1, verbose=0, shuffle=False, validation_split=0.5,
                       validation_data=(x[:5], y[:5]))
    b = compiled().fit(x, y, epochs=1, verbose=0, shuffle=False, validation_data=(x[:5], y[:5]))
    assert a.history == b.history


def _seeded_run(seed_before_compile, seed_after_compile):
    x, y = data(48, (32, 32, 3), 4)
    if seed_before_compile is not None:
        ec.utils.set_random_seed(seed_before_compile)
    model = ec.load(TRANSFER)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    if seed_after_compile is not None:
        ec.utils.set_random_seed(seed_after_compile)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, feature_cache=False)  # shuffled
    return weights(model)


def test_set_random_seed_after_compile_seeds_the_next_fit():
    a = _seeded_run(None, 11)
    b = _seeded_run(3, 11)
    c = _seeded_run(None, 12)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(u, v) for u, v in zip(a, c))


def test_a_seed_is_used_once_then_the_stream_goes_on():
    # Keras: seeding once, two fits in a row see different shuffles (the stream continues).
    x, y = data(32, (32,), 5)
    ec.utils.set_random_seed(5)
    model = compiled()
    orders = []
    original = model.trainer.step

    def record(boundary, labels, train=True):
        orders.append(np.array(labels))
        return original(boundary, labels, train)

    model.trainer.step = record
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert not np.array_equal(orders[0], orders[1])


def _batches(x, y, size):
    for start in range(0, len(x), size):
        yield x[start:start + size], y[start:start + size]


class Batches:
    """A re-iterable dataset of (x, y) batches with a length, like a Keras PyDataset."""

    def __init__(self, x, y, size):
        self.x, self.y, self.size = x, y, size

    def __iter__(self):
        return _batches(self.x, self.y, self.size)

    def __len__(self):
        return -(-len(self.x) // self.size)


def test_fit_on_batches_equals_fit_on_arrays_without_shuffling():
    x, y = data(36, (32,), 5)
    arrays = compiled()
    h_arrays = arrays.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    stream = compiled()
    h_stream = stream.fit(Batches(x, y, 8), epochs=3, verbose=0)
    assert h_arrays.history == h_stream.history
    for a, b in zip(weights(arrays), weights(stream)):
        np.testing.assert_array_equal(a, b)
    assert stream.evaluate(Batches(x, y, 8), return_dict=True) == \
        arrays.evaluate(x, y, batch_size=8, return_dict=True)


def test_a_one_shot_generator_stops_fit_when_it_runs_dry():
    # Keras's message and intent ("interrupting training").  Keras 3.15 itself then goes on
    # re-feeding the two batches it peeked to learn the data's shapes (measured: 5 batches
    # in epoch 1, then 2 per epoch), training on a fraction of the data; edgecore stops.
    x, y = data(16, (32,), 5)
    model = compiled()
    with pytest.warns(UserWarning, match="ran out of data"):
        history = model.fit(_batches(x, y, 8), epochs=3, verbose=0)
    assert len(history.history["loss"]) == 1


def test_steps_per_epoch_caps_each_epoch():
    x, y = data(64, (32,), 5)
    model = compiled()
    seen = []
    original = model.trainer.step
    model.trainer.step = lambda b, l, train=True: seen.append(len(l)) or original(b, l, train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(_batches(x, y, 8), epochs=2, steps_per_epoch=4, verbose=0)
    assert seen == [8] * 8  # two epochs of 4 batches from one generator of 8 batches


def test_batches_with_the_transfer_cache_model_and_validation_batches():
    x, y = data(24, (32, 32, 3), 4)
    model = ec.load(TRANSFER)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(Batches(x, y, 8), epochs=2, verbose=0,
                        validation_data=Batches(x[:8], y[:8], 4))
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(np.isfinite(v) for values in history.history.values() for v in values)


def test_bad_batch_streams_are_refused_clearly():
    x, y = data(8, (32,), 5)
    model = compiled()
    with pytest.raises(ValueError, match="y must not be given"):
        model.fit(Batches(x, y, 4), y, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(Batches(x, y, 4), validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match=r"\(x, y\) pair"):
        model.fit(iter([x]), verbose=0)
    with pytest.raises(ValueError, match="needs labels"):
        model.fit(x, verbose=0)
