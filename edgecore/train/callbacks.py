"""History, EarlyStopping and the Keras-style progress bar.

The progress bar is Keras 2's ASCII one (`[=====>....]`), which any terminal prints,
Termux's included: `verbose=1` redraws one line per batch (with ETA) when stdout is a
terminal and prints the finished line per epoch otherwise; `verbose=2` prints one line
per epoch; `verbose=0` prints nothing.
"""
import math
import sys
import time

import numpy as np


class Callback:
    model = None

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class History(Callback):
    """model.fit's return value: history[name] = one value per epoch, like Keras."""

    def __init__(self):
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(value)


class EarlyStopping(Callback):
    """Stop when `monitor` stopped improving (Keras 3 semantics and defaults)."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode={mode!r} must be 'auto', 'min' or 'max'")
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = int(start_from_epoch)
        self.min_delta = abs(float(min_delta)) * (1 if mode == "max" else -1)
        self.better = np.greater if mode == "max" else np.less

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch = 0, 0
        self.best = -math.inf if self.better is np.greater else math.inf
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.trainer.params.copy()  # the current ones are best
            self.best_epoch = epoch
        self.wait += 1
        if self._improved(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.trainer.params.copy()
            if self.baseline is None or self._improved(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.trainer.params[...] = self.best_weights

    def _improved(self, value, reference):
        return bool(self.better(value - self.min_delta, reference))


class TerminateOnNaN(Callback):
    """Stop training at the first batch whose loss is NaN or infinite (Keras's callback;
    edgecore skips that batch's update, so the weights are the last finite step's).
    Without it, edgecore's fit raises NonFiniteLossError there instead of training on."""

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class ProgressBar(Callback):
    WIDTH = 30

    def __init__(self, verbose, epochs, steps):
        """steps: batches per epoch, or None when a generator does not say (Keras then
        counts up with "Unknown" until the first epoch ends)."""
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.interactive = sys.stdout.isatty()
        self.done = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.done = 0
        if self.verbose:
            print(f"Epoch {epoch + 1}/{self.epochs}")

    def on_batch_end(self, batch, logs=None):
        self.done = batch + 1
        if self.verbose == 1 and self.interactive:
            elapsed = time.perf_counter() - self.start
            if self.steps is None:
                line = f"{batch + 1}/Unknown - {_duration(elapsed)}{_format(logs)}"
            else:
                eta = elapsed / (batch + 1) * (self.steps - batch - 1)
                line = f"{self._bar(batch + 1)} - ETA: {_duration(eta)}{_format(logs)}"
            sys.stdout.write("\r" + line)
            sys.stdout.flush()

    def on_epoch_end(self, epoch, logs=None):
        if self.steps is None:
            self.steps = self.done  # known after the first pass
        if not self.verbose:
            return
        elapsed = time.perf_counter() - self.start
        per_step = elapsed / max(1, self.steps)
        ms = per_step * 1e3
        line = (f"{self._bar(self.steps)} - {_duration(elapsed)} "
                f"{ms:.0f}ms/step" if ms >= 10 else
                f"{self._bar(self.steps)} - {_duration(elapsed)} {ms:.1f}ms/step")
        line += _format(logs)
        sys.stdout.write(("\r" if self.verbose == 1 and self.interactive else "") + line + "\n")
        sys.stdout.flush()

    def _bar(self, done):
        width = len(str(self.steps))
        filled = int(self.WIDTH * done / max(1, self.steps))
        arrow = ">" if done < self.steps else "="
        bar = "=" * max(0, filled - 1) + (arrow if filled else "") + "." * (self.WIDTH - filled)
        return f"{done:{width}d}/{self.steps} [{bar}]"


def _duration(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{seconds:.0f}s"


def _format(logs):
    return "".join(f" - {name}: {value:.4f}" for name, value in (logs or {}).items())
