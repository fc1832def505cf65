"""train_on_batch, evaluate and fit, with Keras's logging semantics.

Keras reports, per epoch, the mean of the batch losses weighted by batch size (which is
the mean of the per-sample losses) and likewise the mean of each metric; train_on_batch
returns that batch's values (Keras 3 resets metrics first); evaluate averages over all
samples.  The last batch of an epoch may be smaller, as in Keras; it gets its own plan.

Frozen-prefix feature cache: when every trained layer lies after a frozen, deterministic
prefix (setup.cacheable) and no augmentation callable is given, fit runs the prefix once
per sample and trains the suffix on the cached boundary tensors, so epochs 2..N cost only
the suffix.  This is exact: without augmentation the prefix sees the same inputs every
epoch.  With `augment`, the prefix runs on every augmented batch instead.  The cache lives
in RAM, or in an HDF5 file next to the model when the memory budget leaves no room for it.
"""
import math
import os
import tempfile
import warnings

import numpy as np

from ..errors import MemoryBudgetError, NonFiniteLossError, ShapeError
from .callbacks import History, ProgressBar


def _batches(n, batch_size):
    return [(start, min(n, start + batch_size)) for start in range(0, n, batch_size)]


def _as_inputs(model, x):
    """Validated list of input arrays (dtype kept: converted per batch, not whole)."""
    arrays = model._standardize_inputs(x, convert=False)
    return arrays


def _samples(inputs):
    """Per-sample input shapes (the batch axis dropped)."""
    return [tuple(a.shape[1:]) for a in inputs]


def _batch_shapes(inputs, batch):
    return tuple((batch,) + tuple(a.shape[1:]) for a in inputs)


def train_on_batch(model, x, y):
    trainer = model.trainer
    inputs = _as_inputs(model, x)
    labels = trainer.labels_array(y, inputs[0].shape[0], _samples(inputs))
    trainer.reseed()
    boundary = trainer.boundary_of(inputs)
    losses, output = trainer.step(boundary, labels, train=True)
    _check_finite(model, losses, (), None, None)
    logs = {"loss": float(np.mean(losses, dtype=np.float64))}
    for name, values in trainer.metric_values(labels, output).items():
        logs[name] = float(values.mean())
    return logs


class FeatureSource:
    """Batches of boundary tensors: from the cache, or by running the prefix."""

    def __init__(self, trainer, inputs, cache=None, augment=None, rng=None):
        self.trainer, self.inputs, self.cache = trainer, inputs, cache
        self.augment, self.rng = augment, rng

    def batch(self, index):
        if self.cache is not None:
            return [_gather(c, index) for c in self.cache], index
        xs = [a[index] for a in self.inputs]  # the dtype stays: the arena converts
        if self.augment is not None:
            xs = [np.asarray(a, np.float32) for a in xs]
            xs = self.augment(xs[0] if len(xs) == 1 else xs, self.rng)
            xs = xs if isinstance(xs, (list, tuple)) else [xs]
            xs = [np.asarray(a, np.float32) for a in xs]
        return self.trainer.boundary_of(xs), index


def _gather(cache, index):
    """cache[index] in the order of index (an HDF5 dataset is read in increasing order,
    then put back: the batch order decides the float32 summation order of gradients)."""
    if isinstance(cache, np.ndarray):
        return cache[index]
    order = np.argsort(index)
    out = np.empty((len(index),) + cache.shape[1:], np.float32)
    out[order] = cache[index[order]]
    return out


def build_cache(trainer, inputs, batch_size, spill_dir=None):
    """Run the frozen prefix once over all samples; returns a list of arrays (RAM) or of
    h5py datasets (spilled to a temporary file in spill_dir)."""
    n = inputs[0].shape[0]
    boundary = trainer.boundary_shapes([(1,) + tuple(a.shape[1:]) for a in inputs])
    shapes = [(n,) + tuple(s[1:]) for s in boundary]
    spill = None
    if spill_dir is not None:
        import h5py

        fd, path = tempfile.mkstemp(suffix=".features.h5", dir=spill_dir)
        os.close(fd)
        spill = h5py.File(path, "w")
        os.unlink(path)  # removed from the directory now; freed when closed
        cache = [spill.create_dataset(f"boundary{i}", shape=s, dtype="f4")
                 for i, s in enumerate(shapes)]
    else:
        cache = [np.empty(s, np.float32) for s in shapes]
    for start, stop in _batches(n, batch_size):
        features = trainer.boundary_of([a[start:stop] for a in inputs])
        for dst, src in zip(cache, features):
            dst[start:stop] = src
    return cache, spill


def evaluate_arrays(trainer, source, labels, batch_size):
    n = labels.shape[0]
    if n == 0:
        raise ShapeError("evaluate needs at least one sample", path=trainer.model.path)
    logs = _Logs()
    for start, stop in _batches(n, batch_size):
        boundary, order = source.batch(np.arange(start, stop))
        losses, output = trainer.step(boundary, labels[order], train=False)
        logs.add(trainer, losses, output, labels[order])
    return logs.logs()


def evaluate(model, x, y, batch_size=32):
    trainer = model.trainer
    if is_batch_iterable(x):
        if y is not None:
            raise ValueError("y must not be given when x yields (x, y) batches")
        return evaluate_batches(trainer, x)
    if y is None:
        raise ValueError("evaluate needs labels y (or x yielding (x, y) batches)")
    inputs = _as_inputs(model, x)
    labels = trainer.labels_array(y, inputs[0].shape[0], _samples(inputs))
    return evaluate_arrays(trainer, FeatureSource(trainer, inputs), labels, batch_size)


def _resolve_cache(trainer, samples, n, batch_size, feature_cache, augment, model_dir):
    """(use_cache, spill_dir) honouring the budget; raises before any work if nothing fits.
    samples: the per-sample input shapes (the boundary's size follows from them when the
    model's input size is open)."""
    if feature_cache not in ("auto", True, False, "disk"):
        raise ValueError("feature_cache must be 'auto', True, False or 'disk'")
    use = trainer.setup.cacheable and augment is None and feature_cache is not False
    if not use:
        return False, None
    boundary = trainer.boundary_shapes([(1,) + tuple(s) for s in samples])
    boundary_floats = sum(int(np.prod(s[1:])) for s in boundary)
    cache_bytes = 4 * n * boundary_floats
    if feature_cache == "disk":
        return True, model_dir
    try:
        trainer.check_fits(trainer.executor.arena.size, batch_size, "the training run with its "
                           "feature cache in memory", cache_bytes=cache_bytes)
        return True, None
    except MemoryBudgetError:
        if feature_cache is True:
            raise
        return True, model_dir  # "auto": spill the cache next to the model


def is_batch_iterable(x):
    """x yields batches (a generator, an iterator, a dataset object) rather than being
    the data itself (an array, a list/tuple of arrays, a dict of arrays), as Keras tells
    them apart."""
    if isinstance(x, (np.ndarray, list, tuple, dict)) or np.isscalar(x):
        return False
    return hasattr(x, "__iter__") or hasattr(x, "__next__")


def split_validation(inputs, labels, validation_split, path):
    """Keras's train_validation_split: the last `validation_split` fraction of the samples
    (before any shuffling) is the validation set, split at floor(n * (1 - split))."""
    if not 0.0 < validation_split < 1.0:
        raise ValueError(f"validation_split must be between 0 and 1 (exclusive), got "
                         f"{validation_split!r}")
    n = labels.shape[0]
    split_at = int(math.floor(n * (1.0 - validation_split)))
    if split_at == 0 or split_at == n:
        raise ValueError(f"Training data contains {n} samples, which is not sufficient to "
                         f"split it into a validation and training set as specified by "
                         f"validation_split={validation_split}. Either provide more data, "
                         f"or a different value for the validation_split argument.")
    return ([a[:split_at] for a in inputs], labels[:split_at],
            ([a[split_at:] for a in inputs], labels[split_at:]))


def fit(model, x, y, batch_size, epochs, verbose, callbacks, validation_data, shuffle,
        initial_epoch, augment, feature_cache, checkpoint, resume, validation_split=0.0,
        steps_per_epoch=None):
    trainer = model.trainer
    trainer.reseed()
    if is_batch_iterable(x):
        if y is not None:
            raise ValueError("y must not be given when x yields (x, y) batches (a dataset "
                             "or generator), as in Keras")
        if validation_split:
            raise ValueError("validation_split is not supported when x is a dataset or "
                             "generator (as in Keras); pass validation_data")
        return _fit_loop(model, _BatchStream(trainer, x, augment, steps_per_epoch), epochs,
                         verbose, callbacks, _validation(model, validation_data, batch_size),
                         initial_epoch, checkpoint, resume)
    if y is None:
        raise ValueError("fit needs labels y (or x yielding (x, y) batches)")
    inputs = _as_inputs(model, x)
    n = inputs[0].shape[0]
    if n == 0:
        raise ShapeError("fit needs at least one sample", path=model.path)
    labels = trainer.labels_array(y, n, _samples(inputs))
    val = None
    if validation_split and validation_data is None:  # validation_data wins, as in Keras
        inputs, labels, val = split_validation(inputs, labels, validation_split, model.path)
        n = labels.shape[0]
    elif validation_data is not None and not is_batch_iterable(validation_data):
        xv, yv = validation_data[0], validation_data[1]
        val_inputs = _as_inputs(model, xv)
        val = (val_inputs, trainer.labels_array(yv, val_inputs[0].shape[0], _samples(val_inputs)))
    model_dir = os.path.dirname(os.path.abspath(model.path))
    if batch_size == "auto":
        batch_size = trainer.auto_batch_size(_samples(inputs), n)
    batch_size = int(batch_size or 32)
    # Plan every step shape this run needs, checking the budget, before any work.
    shapes = {_batch_shapes(inputs, stop - start) for start, stop in _batches(n, batch_size)}
    if val is not None:
        shapes |= {_batch_shapes(val[0], stop - start)
                   for start, stop in _batches(val[0][0].shape[0], batch_size)}
    for batch_shapes in sorted(shapes):
        trainer.plans_for([list(s) for s in batch_shapes])
    use_cache, spill_dir = _resolve_cache(trainer, _samples(inputs), n, batch_size,
                                          feature_cache, augment, model_dir)
    spills = []
    try:
        train_source, val_source = _sources(trainer, inputs, val, use_cache, spill_dir,
                                            batch_size, augment, spills)
        arrays = _ArrayEpochs(trainer, train_source, labels, batch_size, shuffle)
        validation = ((lambda: evaluate_arrays(trainer, val_source, val[1], batch_size))
                      if val is not None else _validation(model, validation_data, batch_size))
        return _fit_loop(model, arrays, epochs, verbose, callbacks, validation,
                         initial_epoch, checkpoint, resume)
    finally:
        for spill in spills:
            spill.close()


def _validation(model, validation_data, batch_size):
    """A callable giving the validation logs after each epoch (None: no validation)."""
    if validation_data is None:
        return None
    if is_batch_iterable(validation_data):
        return lambda: evaluate_batches(model.trainer, validation_data)
    xv, yv = validation_data[0], validation_data[1]
    return lambda: evaluate(model, xv, yv, batch_size)


def _fit_loop(model, epochs_source, epochs, verbose, callbacks, validation, initial_epoch,
              checkpoint, resume):
    """The epochs, the callbacks and the checkpoints, whatever the batches come from."""
    from . import checkpoint as checkpoints

    history = History()
    callbacks = list(callbacks or [])
    progress = ProgressBar(_verbosity(verbose), epochs, epochs_source.steps)
    model._verbose_fit = _verbosity(verbose) > 0
    for callback in [history, progress] + callbacks:
        callback.model = model
    if checkpoint is not None:
        checkpoints.remove_stale_temporaries(checkpoint)
        if resume and os.path.exists(checkpoint):
            initial_epoch = checkpoints.restore(model, checkpoint, history)
    model.stop_training = False
    for callback in [history, progress] + callbacks:
        callback.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        logs = epochs_source.run_epoch(epoch, [progress] + callbacks)
        if logs is None:  # a one-shot generator ran dry, as Keras warns
            warnings.warn("Your input ran out of data; interrupting training. Make sure "
                          "that your dataset or generator can generate at least "
                          "steps_per_epoch * epochs batches.", UserWarning, stacklevel=3)
            break
        if validation is not None:
            logs.update({f"val_{name}": value for name, value in validation().items()})
        for callback in [history, progress] + callbacks:
            callback.on_epoch_end(epoch, logs)
        if checkpoint is not None:
            checkpoints.save(model, checkpoint, epoch + 1, history)
        if model.stop_training:
            break
    for callback in [history, progress] + callbacks:
        callback.on_train_end()
    return history


class _Logs:
    """Keras's epoch logs: per-sample means of the loss and metrics so far."""

    def __init__(self):
        self.loss_sum, self.metric_sums, self.seen = 0.0, {}, 0

    def add(self, trainer, losses, output, labels):
        self.loss_sum += float(np.sum(losses, dtype=np.float64))
        self.seen += labels.shape[0]
        for name, values in trainer.metric_values(labels, output).items():
            self.metric_sums[name] = self.metric_sums.get(name, 0.0) + float(values.sum())
        return self.logs()

    def logs(self):
        return {"loss": self.loss_sum / self.seen,
                **{k: v / self.seen for k, v in self.metric_sums.items()}}


class _ArrayEpochs:
    """Epochs over arrays in memory (or their cached prefix features)."""

    def __init__(self, trainer, source, labels, batch_size, shuffle):
        self.trainer, self.source, self.labels = trainer, source, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.steps = len(_batches(labels.shape[0], batch_size))

    def run_epoch(self, epoch, callbacks):
        trainer, labels = self.trainer, self.labels
        n = labels.shape[0]
        order = trainer.rng.permutation(n) if self.shuffle else np.arange(n)
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        logs = _Logs()
        for step, (start, stop) in enumerate(_batches(n, self.batch_size)):
            boundary, index = self.source.batch(order[start:stop])
            losses, output = trainer.step(boundary, labels[index], train=True)
            _check_finite(trainer.model, losses, callbacks, epoch, step)
            current = logs.add(trainer, losses, output, labels[index])
            for callback in callbacks:
                callback.on_batch_end(step, current)
            if trainer.model.stop_training:  # as Keras, checked after every batch
                break
        return logs.logs()


def _check_finite(model, losses, callbacks, epoch, step):
    """NonFiniteLossError unless the batch's loss is finite or a TerminateOnNaN callback
    is there to stop the run (Keras would train on, with NaN weights from then on)."""
    from .callbacks import TerminateOnNaN

    if np.isfinite(losses).all():
        return
    if any(isinstance(c, TerminateOnNaN) for c in callbacks):
        return
    bad = int(np.flatnonzero(~np.isfinite(losses))[0])
    where = "" if epoch is None else f" at epoch {epoch + 1}, batch {step + 1}"
    raise NonFiniteLossError(
        f"the loss is {losses[bad]}{where} (sample {bad} of the batch): the step changed no "
        f"weight and training stops.  Look for NaN or inf in the inputs and labels, or "
        f"lower the learning rate; callbacks=[edgecore.callbacks.TerminateOnNaN()] stops "
        f"without an error", path=model.path)


class _BatchStream:
    """Epochs over an iterable of (x, y) batches (a generator, a dataset): each epoch
    iterates it again (a one-shot generator yields nothing the second time, and fit then
    stops as Keras does), at most steps_per_epoch batches.  Each new batch shape is
    planned, and checked against the memory budget, before its first step."""

    def __init__(self, trainer, batches, augment, steps_per_epoch):
        self.trainer, self.batches, self.augment = trainer, batches, augment
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        length = getattr(batches, "__len__", None)
        self.steps = self.steps_per_epoch or (length() if length is not None else None)

    def run_epoch(self, epoch, callbacks):
        trainer, model = self.trainer, self.trainer.model
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        logs = _Logs()
        for step, (inputs, labels) in enumerate(_labelled_batches(model, self.batches)):
            if self.augment is not None:
                xs = [np.asarray(a, np.float32) for a in inputs]
                xs = self.augment(xs[0] if len(xs) == 1 else xs, trainer.rng)
                inputs = _as_inputs(model, xs)
            trainer.plans_for([a.shape for a in inputs])
            losses, output = trainer.step(trainer.boundary_of(inputs), labels, train=True)
            _check_finite(model, losses, callbacks, epoch, step)
            current = logs.add(trainer, losses, output, labels)
            for callback in callbacks:
                callback.on_batch_end(step, current)
            if model.stop_training or (self.steps_per_epoch is not None
                                       and step + 1 >= self.steps_per_epoch):
                break
        return logs.logs() if logs.seen else None


def _labelled_batches(model, batches):
    """(input arrays, label array) for each (x, y) batch of an iterable."""
    trainer = model.trainer
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError("each batch must be an (x, y) pair (sample weights are not "
                             f"supported), got {type(batch).__name__}"
                             + (f" of length {len(batch)}" if hasattr(batch, "__len__") else ""))
        inputs = _as_inputs(model, batch[0])
        n = inputs[0].shape[0]
        if n == 0:
            raise ShapeError("a batch has no samples", path=model.path)
        yield inputs, trainer.labels_array(batch[1], n, _samples(inputs))


def evaluate_batches(trainer, batches):
    """evaluate over an iterable of (x, y) batches: per-sample means, inference mode."""
    logs = _Logs()
    for inputs, labels in _labelled_batches(trainer.model, batches):
        trainer.plans_for([a.shape for a in inputs])
        losses, output = trainer.step(trainer.boundary_of(inputs), labels, train=False)
        logs.add(trainer, losses, output, labels)
    if not logs.seen:
        raise ValueError("evaluate got no batches")
    return logs.logs()


def _sources(trainer, inputs, val, use_cache, spill_dir, batch_size, augment, spills):
    if not use_cache:
        val_source = FeatureSource(trainer, val[0]) if val else None
        return FeatureSource(trainer, inputs, augment=augment, rng=trainer.rng), val_source
    if trainer.model._verbose_fit:
        where = f"a temporary file in {spill_dir}" if spill_dir else "memory"
        print(f"Caching the frozen layers' output for {inputs[0].shape[0]} samples in {where} "
              f"(once; epochs then train only the trainable layers)")
    cache, spill = build_cache(trainer, inputs, batch_size, spill_dir)
    spills.extend([spill] if spill is not None else [])
    val_source = None
    if val is not None:
        val_cache, val_spill = build_cache(trainer, val[0], batch_size, spill_dir)
        spills.extend([val_spill] if val_spill is not None else [])
        val_source = FeatureSource(trainer, val[0], cache=val_cache)
    return FeatureSource(trainer, inputs, cache=cache), val_source


def _verbosity(verbose):
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return verbose
