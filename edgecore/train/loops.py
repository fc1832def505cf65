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
import os
import tempfile

import numpy as np

from ..errors import MemoryBudgetError, ShapeError
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
    loss_sum, metric_sums = 0.0, {}
    for start, stop in _batches(n, batch_size):
        boundary, order = source.batch(np.arange(start, stop))
        losses, output = trainer.step(boundary, labels[order], train=False)
        loss_sum += float(np.sum(losses, dtype=np.float64))
        for name, values in trainer.metric_values(labels[order], output).items():
            metric_sums[name] = metric_sums.get(name, 0.0) + float(values.sum())
    logs = {"loss": loss_sum / n}
    logs.update({name: total / n for name, total in metric_sums.items()})
    return logs


def evaluate(model, x, y, batch_size=32):
    trainer = model.trainer
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


def fit(model, x, y, batch_size, epochs, verbose, callbacks, validation_data, shuffle,
        initial_epoch, augment, feature_cache, checkpoint, resume):
    from . import checkpoint as checkpoints

    trainer = model.trainer
    trainer.reseed()
    inputs = _as_inputs(model, x)
    n = inputs[0].shape[0]
    if n == 0:
        raise ShapeError("fit needs at least one sample", path=model.path)
    labels = trainer.labels_array(y, n, _samples(inputs))
    model_dir = os.path.dirname(os.path.abspath(model.path))
    if batch_size == "auto":
        batch_size = trainer.auto_batch_size(_samples(inputs), n)
    batch_size = int(batch_size or 32)
    # Plan every step shape this run needs, checking the budget, before any work.
    shapes = {_batch_shapes(inputs, stop - start) for start, stop in _batches(n, batch_size)}
    val = None
    if validation_data is not None:
        xv, yv = validation_data[0], validation_data[1]
        val_inputs = _as_inputs(model, xv)
        val = (val_inputs, trainer.labels_array(yv, val_inputs[0].shape[0], _samples(val_inputs)))
        shapes |= {_batch_shapes(val_inputs, stop - start)
                   for start, stop in _batches(val_inputs[0].shape[0], batch_size)}
    for batch_shapes in sorted(shapes):
        trainer.plans_for([list(s) for s in batch_shapes])
    use_cache, spill_dir = _resolve_cache(trainer, _samples(inputs), n, batch_size,
                                          feature_cache, augment, model_dir)
    history = History()
    callbacks = list(callbacks or [])
    progress = ProgressBar(_verbosity(verbose), epochs, len(_batches(n, batch_size)))
    model._verbose_fit = _verbosity(verbose) > 0
    for callback in [history, progress] + callbacks:
        callback.model = model
    if checkpoint is not None:
        checkpoints.remove_stale_temporaries(checkpoint)
        if resume and os.path.exists(checkpoint):
            initial_epoch = checkpoints.restore(model, checkpoint, history)
    spills = []
    try:
        train_source, val_source = _sources(trainer, inputs, val, use_cache, spill_dir,
                                            batch_size, augment, spills)
        model.stop_training = False
        for callback in [history, progress] + callbacks:
            callback.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            logs = _run_epoch(model, trainer, train_source, labels, batch_size, shuffle,
                              epoch, [progress] + callbacks)
            if val is not None:
                val_logs = evaluate_arrays(trainer, val_source, val[1], batch_size)
                logs.update({f"val_{name}": value for name, value in val_logs.items()})
            for callback in [history, progress] + callbacks:
                callback.on_epoch_end(epoch, logs)
            if checkpoint is not None:
                checkpoints.save(model, checkpoint, epoch + 1, history)
            if model.stop_training:
                break
        for callback in [history, progress] + callbacks:
            callback.on_train_end()
    finally:
        for spill in spills:
            spill.close()
    return history


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


def _run_epoch(model, trainer, source, labels, batch_size, shuffle, epoch, callbacks):
    n = labels.shape[0]
    order = trainer.rng.permutation(n) if shuffle else np.arange(n)
    for callback in callbacks:
        callback.on_epoch_begin(epoch)
    loss_sum, metric_sums, seen = 0.0, {}, 0
    for step, (start, stop) in enumerate(_batches(n, batch_size)):
        boundary, index = source.batch(order[start:stop])
        losses, output = trainer.step(boundary, labels[index], train=True)
        loss_sum += float(np.sum(losses, dtype=np.float64))
        seen += stop - start
        for name, values in trainer.metric_values(labels[index], output).items():
            metric_sums[name] = metric_sums.get(name, 0.0) + float(values.sum())
        logs = {"loss": loss_sum / seen, **{k: v / seen for k, v in metric_sums.items()}}
        for callback in callbacks:
            callback.on_batch_end(step, logs)
    return logs


def _verbosity(verbose):
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return verbose
