"""A NaN in, a NaN out, and a run that stops instead of training on garbage.

Keras's fit trains on after a NaN loss (every weight NaN from then on).  edgecore skips
the update of the step that met it, so nothing is lost, and stops: with a clear
NonFiniteLossError naming the epoch and batch, or quietly with Keras's TerminateOnNaN.
"""
import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES

HEAD = FIXTURES / "train_dense_head.k3.h5"  # Input(32) -> Dense(16, relu) -> Dense(5, softmax)


def _model():
    model = ec.load(HEAD)
    model.compile(optimizer=ec.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 32)).astype(np.float32), rng.integers(0, 5, n)


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def test_a_nan_sample_stops_fit_with_a_clear_error_and_loses_nothing():
    model = _model()
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    x[13, 5] = np.nan  # in the second batch of 8
    before = _weights(model)
    with pytest.raises(ec.NonFiniteLossError, match=r"epoch 1, batch 2 \(sample 5"):
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
    after = _weights(model)
    assert all(np.isfinite(w).all() for w in after)
    # the first batch trained, the NaN batch changed nothing
    reference = _model()
    reference.set_weights(before)
    reference.train_on_batch(x[:8], y[:8])
    for a, b in zip(after, reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_terminate_on_nan_stops_quietly_after_that_batch(capsys):
    model = _model()
    x, y = _data()
    x[20] = np.inf
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                        callbacks=[ec.callbacks.TerminateOnNaN()])
    assert "Batch 2: Invalid loss, terminating training" in capsys.readouterr().out
    assert len(history.history["loss"]) == 1 and not np.isfinite(history.history["loss"][0])
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_train_on_batch_with_a_nan_label_changes_nothing():
    model = ec.load(FIXTURES / "train_regression_mse.k3.h5")
    model.compile(optimizer="adam", loss="mse")
    x = np.ones((4, 20), np.float32)
    y = np.zeros((4, 3), np.float32)
    y[2, 1] = np.nan
    before = _weights(model)
    with pytest.raises(ec.NonFiniteLossError):
        model.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert model.trainer.optimizer.iterations == 0


def test_evaluate_and_predict_return_nan_as_keras_does():
    model = _model()
    x, y = _data(8)
    x[3] = np.nan
    assert np.isnan(model.evaluate(x, y)[0])
    p = model.predict(x)
    assert np.isnan(p[3]).all() and np.isfinite(np.delete(p, 3, axis=0)).all()
