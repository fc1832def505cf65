"""fit / evaluate behaviour beyond step parity: the frozen-prefix cache is exact, the
loop logs like Keras, budgets refuse before work, Dropout is real and seeded, flags
follow Keras's rules, unsupported training is refused at compile."""
import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES

TRANSFER = FIXTURES / "train_transfer_frozen_base.k3.h5"  # frozen MobileNetV2 base + head
HEAD = FIXTURES / "train_dense_head.k3.h5"  # Input(32) -> Dense(16, relu) -> Dense(5, softmax)


def data(n, shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + shape).astype(np.float32), rng.integers(0, classes, n)


def transfer_model(**compile_kwargs):
    model = ec.load(TRANSFER)
    model.compile(optimizer=ec.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], **compile_kwargs)
    return model


def trained_weights(model):
    return [w for layer in model.layers if layer.trainable for w in layer.get_weights()]


def test_feature_cache_is_exact():
    x, y = data(40, (32, 32, 3), 4)
    results = []
    for cache in (True, False):
        ec.utils.set_random_seed(7)
        model = transfer_model()
        history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, feature_cache=cache)
        results.append((history.history, model.predict(x)))
    (h_cache, p_cache), (h_plain, p_plain) = results
    assert h_cache == h_plain
    np.testing.assert_array_equal(p_cache, p_plain)


def test_the_cache_runs_the_frozen_prefix_once_per_sample(monkeypatch):
    x, y = data(30, (32, 32, 3), 4)
    model = transfer_model()
    calls = []
    original = model.trainer.boundary_of
    monkeypatch.setattr(model.trainer, "boundary_of",
                        lambda inputs: calls.append(len(inputs[0])) or original(inputs))
    model.fit(x, y, batch_size=8, epochs=4, verbose=0)
    assert sum(calls) == 30  # once per sample, not once per sample per epoch


def test_augmentation_bypasses_the_cache():
    x, y = data(24, (32, 32, 3), 4)
    seen = []

    def flip(batch, rng):
        seen.append(len(batch))
        return batch[:, :, ::-1, :]

    model = transfer_model()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, augment=flip)
    assert sum(seen) == 48  # every sample, every epoch


def test_fit_logs_like_keras_and_history_has_one_value_per_epoch(capsys):
    x, y = data(50, (32,), 5)
    xv, yv = data(20, (32,), 5, seed=1)
    model = ec.load(HEAD)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=3, validation_data=(xv, yv), verbose=2)
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert all(len(v) == 3 for v in history.history.values())
    out = capsys.readouterr().out
    assert out.count("Epoch ") == 3 and "val_loss:" in out and "ms/step" in out
    # The epoch's loss is the sample-weighted mean of its batches (Keras's Mean tracker):
    # evaluate on the training data after the run is a different number, but val_loss is
    # exactly evaluate() on the validation data.
    assert history.history["val_loss"][-1] == pytest.approx(
        model.evaluate(xv, yv, return_dict=True)["loss"], rel=1e-6)


def test_verbose_zero_is_silent(capsys):
    x, y = data(20, (32,), 5)
    model = ec.load(HEAD)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_early_stopping_stops_and_restores_the_best_weights():
    x, y = data(32, (32,), 5)
    model = ec.load(HEAD)
    # A learning rate this large makes the loss climb after the first epochs.
    model.compile(optimizer=ec.optimizers.SGD(learning_rate=5.0), loss="sparse_categorical_crossentropy")
    stop = ec.callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    history = model.fit(x, y, batch_size=32, epochs=50, verbose=0, callbacks=[stop], shuffle=False)
    assert len(history.history["loss"]) < 50
    best = int(np.argmin(history.history["loss"]))
    assert stop.best_epoch == best


def test_compile_refuses_a_budget_below_the_training_state(monkeypatch):
    model = ec.load(TRANSFER)
    with pytest.raises(ec.MemoryBudgetError) as info:
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      memory_budget="100KiB")
    assert info.value.required_bytes > info.value.allowed_bytes == 100 * 1024


def test_fit_refuses_before_any_step_when_the_batch_does_not_fit():
    x, y = data(64, (32, 32, 3), 4)
    model = transfer_model(memory_budget="2400KiB")
    before = trained_weights(model)
    with pytest.raises(ec.MemoryBudgetError):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    for a, b in zip(before, trained_weights(model)):
        np.testing.assert_array_equal(a, b)


def test_auto_batch_size_is_the_largest_that_fits_up_to_the_cap(capsys):
    x, y = data(64, (32, 32, 3), 4)
    model = transfer_model(memory_budget="2400KiB")
    history = model.fit(x, y, batch_size="auto", epochs=1, verbose=2)
    chosen = max(shapes[0][0] for kind, shapes, _ in model.trainer.plans if kind == "train")
    assert f"batch_size='auto': {chosen} " in capsys.readouterr().out
    assert 1 <= chosen < 32 and len(history.history["loss"]) == 1
    transfer_model(memory_budget="2400KiB").fit(x, y, batch_size=chosen, epochs=1, verbose=0)
    with pytest.raises(ec.MemoryBudgetError):  # one more does not fit, before any work
        transfer_model(memory_budget="2400KiB").fit(x, y, batch_size=chosen + 1, epochs=1,
                                                    verbose=0)
    generous = transfer_model(memory_budget="1GiB")
    generous.fit(x, y, batch_size="auto", epochs=1, verbose=0)  # Keras's 32 by default
    assert max(s[0][0] for k, s, _ in generous.trainer.plans if k == "train") == 32
    raised = transfer_model(memory_budget="1GiB")
    raised.fit(x, y, batch_size="auto", max_batch_size=64, epochs=1, verbose=0)
    assert max(s[0][0] for k, s, _ in raised.trainer.plans if k == "train") == 64


def test_dropout_is_active_seeded_and_inverted():
    from edgecore.layers.core import Identity

    # The Keras tutorial's transfer model: Dropout(0.2) before the head, active in fit.
    model = ec.load(FIXTURES / "transfer_mobilenet_v2.k3.h5")
    dropout = [l for l in model.layers if isinstance(l, Identity) and l.class_name == "Dropout"]
    assert dropout and dropout[0].rate > 0
    xs = np.random.default_rng(0).uniform(0, 255, (8, 96, 96, 3)).astype(np.float32)
    ys = np.arange(8) % 5
    runs = []
    for seed in (1, 1, 2):
        ec.utils.set_random_seed(seed)
        m = ec.load(FIXTURES / "transfer_mobilenet_v2.k3.h5")
        m.compile(optimizer=ec.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        runs.append(m.train_on_batch(xs, ys))
    assert runs[0] == runs[1] and runs[0] != runs[2]
    evaluated = [m.evaluate(xs, ys) for _ in range(2)]
    assert evaluated[0] == evaluated[1]  # no dropout at evaluation


def test_frozen_flags_keep_layers_bit_for_bit():
    model = ec.load(FIXTURES / "train_frozen_flags.k3.h5")
    before = {layer.name: layer.get_weights() for layer in model.layers}
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((8,) + model.input_shape[1:]).astype(np.float32)
    y = np.arange(8) % model.output_shape[-1]
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    changed = {name for name, weights in before.items()
               if any(not np.array_equal(a, b)
                      for a, b in zip(weights, model.get_layer(name).get_weights()))}
    frozen = {layer.name for layer in model.layers if not layer.trainable}
    assert changed and not (changed & frozen)


def test_flags_changed_on_device_take_effect_at_compile():
    model = ec.load(TRANSFER)
    base = next(l for l in model.layers if hasattr(l, "graph"))
    assert not base.trainable
    head = model.layers[-1]
    head.trainable = False
    with pytest.raises(ValueError, match="nothing to train"):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")


def test_a_recompile_keeps_what_was_trained():
    x, y = data(16, (32,), 5)
    model = ec.load(HEAD)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    trained = model.predict(x)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    np.testing.assert_array_equal(model.predict(x), trained)


def test_labels_are_validated():
    model = ec.load(HEAD)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, _ = data(4, (32,), 5)
    with pytest.raises(ec.ShapeError, match=r"\[0, 5\)"):
        model.train_on_batch(x, np.array([0, 1, 2, 9]))
    with pytest.raises(ec.ShapeError):
        model.train_on_batch(x, np.zeros((4, 3)))


def test_training_before_compile_is_a_clear_error():
    with pytest.raises(RuntimeError, match="compile"):
        ec.load(HEAD).fit(np.zeros((2, 32), np.float32), np.zeros(2))
