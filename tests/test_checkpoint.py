"""fit(checkpoint=..., resume=True): an interrupted run loses at most one epoch and never
corrupts the last good checkpoint (the issue's kill -9 test)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import edgecore as ec
from fixtures import FIXTURES

TRANSFER = FIXTURES / "train_transfer_frozen_base.k3.h5"


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 32, 32, 3)).astype(np.float32), rng.integers(0, 4, n)


def run(epochs, checkpoint=None, resume=False, seed=3):
    ec.utils.set_random_seed(seed)
    model = ec.load(TRANSFER)
    model.compile(optimizer=ec.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y = data()
    history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, checkpoint=checkpoint,
                        resume=resume)
    return model, history


def test_the_checkpoint_is_a_loadable_model_of_the_last_epoch(tmp_path):
    path = tmp_path / "run.h5"
    model, _ = run(2, checkpoint=path)
    x, _ = data()
    np.testing.assert_array_equal(ec.load(path).predict(x), model.predict(x))
    assert not [p for p in os.listdir(tmp_path) if "tmp" in p]


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    path = tmp_path / "run.h5"
    straight, straight_history = run(4)
    run(2, checkpoint=path)
    resumed, resumed_history = run(4, checkpoint=path, resume=True)
    assert resumed_history.history == straight_history.history
    x, _ = data()
    np.testing.assert_array_equal(resumed.predict(x), straight.predict(x))


def test_kill_9_in_the_middle_of_an_epoch_loses_at_most_that_epoch(tmp_path):
    path, progress = tmp_path / "run.h5", tmp_path / "progress"
    script = textwrap.dedent(f"""
        import time, numpy as np, edgecore as ec
        class Slow(ec.callbacks.Callback):
            def on_batch_end(self, batch, logs=None):
                with open({str(progress)!r}, "a") as f:
                    f.write("b")
                time.sleep(0.05)
        ec.utils.set_random_seed(3)
        model = ec.load({str(TRANSFER)!r})
        model.compile(optimizer=ec.optimizers.Adam(1e-3),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        rng = np.random.default_rng(0)
        x = rng.standard_normal((48, 32, 32, 3)).astype(np.float32)
        y = rng.integers(0, 4, 48)
        model.fit(x, y, batch_size=4, epochs=50, verbose=0, callbacks=[Slow()],
                  checkpoint={str(path)!r})
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    try:
        deadline = time.time() + 120
        # Wait for the first checkpoint, then for a few batches of the next epoch.
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert path.exists(), "no checkpoint was written"
        done = progress.read_text().count("b") if progress.exists() else 0
        while progress.read_text().count("b") < done + 3 and time.time() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    # A kill during a save may leave its temporary file; the checkpoint itself is whole.
    checkpoint = ec.load(path)
    x, y = data()
    assert np.isfinite(checkpoint.predict(x)).all()
    model = ec.load(TRANSFER)
    model.compile(optimizer=ec.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 4, 48)
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0, checkpoint=path, resume=True)
    assert len(history.history["loss"]) == 3


def test_per_epoch_checkpoints_hold_what_changed_and_the_end_is_a_full_keras_file(tmp_path,
                                                                                 monkeypatch):
    h5py = pytest.importorskip("h5py")  # cross-checks the written file

    from edgecore.train import checkpoint as checkpoints

    path = tmp_path / "run.h5"
    sizes = []
    real = checkpoints.save

    def spy(model, p, epochs_done, history, full=False):
        real(model, p, epochs_done, history, full)
        sizes.append((full, os.path.getsize(p), checkpoints.read_delta(p) is None))

    monkeypatch.setattr(checkpoints, "save", spy)
    model, _ = run(3, checkpoint=path)
    assert [full for full, _, _ in sizes] == [False, False, False, True]
    full_size = sizes[-1][1]
    # the head, Adam's slots and the config, not the frozen base
    assert all(size < full_size / 5 for full, size, _ in sizes[:-1]), sizes
    assert sizes[-1][2]  # the last one is a plain Keras .h5
    with h5py.File(path, "r") as f:
        assert "model_weights" in f and "edgecore_training_state" in f.attrs


def test_a_delta_checkpoint_loads_and_resumes_from_its_source(tmp_path):
    source = tmp_path / "model.h5"
    source.write_bytes(TRANSFER.read_bytes())
    path = tmp_path / "run.h5"

    def fit(epochs, resume=False, stop_after=None):
        ec.utils.set_random_seed(3)
        model = ec.load(source)
        model.compile(optimizer=ec.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        x, y = data()

        class Stop(ec.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if stop_after is not None and epoch == stop_after:
                    raise KeyboardInterrupt  # a run cut short: the delta is what is left

        try:
            model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, checkpoint=path,
                      resume=resume, callbacks=[Stop()])
        except KeyboardInterrupt:
            pass
        return model

    straight = ec.load(source)
    straight.compile(optimizer=ec.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    ec.utils.set_random_seed(3)
    straight.fit(*data(), batch_size=16, epochs=4, verbose=0)
    interrupted = fit(4, stop_after=2)
    from edgecore.train.checkpoint import read_delta
    assert read_delta(path) is not None  # cut short: the per-epoch checkpoint
    x, _ = data()
    np.testing.assert_array_equal(ec.load(path).predict(x), interrupted.predict(x))
    resumed = fit(4, resume=True)
    np.testing.assert_array_equal(resumed.predict(x), straight.predict(x))
    assert read_delta(path) is None  # finished: a full file


def test_a_delta_checkpoint_whose_source_changed_is_refused(tmp_path):
    source = tmp_path / "model.h5"
    source.write_bytes(TRANSFER.read_bytes())
    path = tmp_path / "run.h5"
    model = ec.load(source)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")

    class Stop(ec.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    try:
        model.fit(*data(), epochs=3, verbose=0, checkpoint=path, callbacks=[Stop()])
    except KeyboardInterrupt:
        pass
    with open(source, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ec.ModelFormatError, match="refers for the rest to"):
        ec.load(path)
