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
in memory, or in a temporary file (feature_cache_dir, default the system's temporary
directory) when the memory budget leaves no room for it (train/cache.py).

Everything a run holds is sized before its first step and checked against the memory
budget (train/memory.py); the epochs then allocate nothing the size of a batch.
"""
import math
import os
import warnings

import numpy as np

from ..datasets import ImageDataset
from ..errors import MemoryBudgetError, NonFiniteLossError, ShapeError
from .cache import BatchSource, MemoryCache, SpilledCache, build_caches, cache_directory
from .callbacks import History, ProgressBar
from .memory import RunShape, batch_lengths, run_parts

AUTO_BATCH_CAP = 32  # batch_size="auto" never goes past this unless max_batch_size says so


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
    if inputs[0].shape[0] == 0:
        raise ShapeError("train_on_batch needs at least one sample", path=model.path)
    labels = trainer.labels_array(y, inputs[0].shape[0], _samples(inputs))
    trainer.reseed()
    boundary = trainer.boundary_of(inputs)
    losses, output = trainer.step(boundary, labels, train=True)
    _check_finite(model, losses, (), None, None)
    logs = {"loss": float(np.mean(losses, dtype=np.float64))}
    for name, values in trainer.metric_values(labels, output).items():
        logs[name] = float(values.mean())
    return logs


def evaluate_arrays(trainer, source, labels, batch_size):
    n = labels.shape[0]
    if n == 0:
        raise ShapeError("evaluate needs at least one sample", path=trainer.model.path)
    logs = _Logs()
    gather = _LabelGather(labels)
    for start, stop in _batches(n, batch_size):
        index = np.arange(start, stop)
        batch_labels = gather(index)
        losses, output = trainer.step(source.batch(index), batch_labels, train=False)
        logs.add(trainer, losses, output, batch_labels)
    return logs.logs()


class _LabelGather:
    """labels[index] into a buffer made once per batch length."""

    def __init__(self, labels):
        self.labels, self.buffers = labels, {}

    def __call__(self, index):
        out = self.buffers.get(len(index))
        if out is None:
            out = self.buffers[len(index)] = np.empty((len(index),) + self.labels.shape[1:],
                                                      self.labels.dtype)
        np.take(self.labels, index, axis=0, out=out)
        return out


def evaluate(model, x, y, batch_size=32):
    trainer = model.trainer
    if isinstance(x, FeatureCache):
        x.check(model)
        labels = trainer.labels_array(y, x.n, x.samples)
        return evaluate_arrays(trainer, x.source(), labels, batch_size)
    if is_batch_iterable(x):
        if y is not None:
            raise ValueError("y must not be given when x yields (x, y) batches")
        return evaluate_batches(trainer, x)
    if y is None:
        raise ValueError("evaluate needs labels y (or x yielding (x, y) batches)")
    inputs = _as_inputs(model, x)
    labels = trainer.labels_array(y, inputs[0].shape[0], _samples(inputs))
    return evaluate_arrays(trainer, BatchSource(trainer, inputs), labels, batch_size)


class FeatureCache:
    """The frozen prefix's output for a set of samples, made once by
    model.cache_features(x) and kept across fit/evaluate calls (a federated client trains
    the head round after round on the same local data: only the first round runs the
    frozen base).  Valid for the compiled model that made it while its frozen weights are
    unchanged (fit/evaluate check both and refuse a stale cache)."""

    def __init__(self, model, inputs, batch_size, path=None):
        trainer = model.trainer
        if not trainer.setup.cacheable:
            raise ValueError("cache_features needs every trained layer after a frozen, "
                             "deterministic part (the transfer setup); this model has none "
                             "to cache")
        self.n = inputs[0].shape[0]
        if self.n == 0:
            raise ShapeError("cache_features needs at least one sample", path=model.path)
        self.samples = _samples(inputs)
        self.itemsizes = [a.dtype.itemsize for a in inputs]
        self._trainer, self._version = trainer, model._frozen_version
        if path is not None and os.path.exists(path):
            self.caches = [_loaded_cache(model, trainer, inputs, path)]
            return
        self.caches = build_caches(trainer, inputs, batch_size)
        if path is not None:
            if len(self.caches) != 1:
                raise ValueError("cache_features(path=...) keeps one boundary tensor; this "
                                 f"model's frozen part ends in {len(self.caches)}")
            _write_npy_atomically(path, self.caches[0].array)

    @property
    def nbytes(self):
        return sum(c.array.nbytes for c in self.caches)

    def check(self, model):
        if self.caches is None or self.caches[0].array is None:
            raise ValueError("this FeatureCache was closed")
        if model.trainer is not self._trainer:
            raise ValueError("this FeatureCache was made by another model or before the "
                             "model was compiled again; make a new one with "
                             "model.cache_features(x)")
        if model._frozen_version != self._version:
            raise ValueError("the model's frozen weights changed since this FeatureCache "
                             "was made (set_weights on a frozen layer); make a new one")

    def source(self):
        return BatchSource(self._trainer, None, caches=self.caches)

    def close(self):
        for cache in self.caches:
            cache.close()


def _loaded_cache(model, trainer, inputs, path):
    from .cache import MemoryCache

    boundary = trainer.boundary_shapes([(1,) + tuple(a.shape[1:]) for a in inputs])
    want = (inputs[0].shape[0],) + tuple(boundary[0][1:])
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a feature cache written by cache_features ({exc})") \
            from None
    if len(boundary) != 1 or array.shape != want or array.dtype != np.float32:
        raise ShapeError(f"feature cache {path} holds {array.dtype} {array.shape}, the model "
                         f"needs float32 {want} for these samples", path=model.path)
    cache = MemoryCache(want)
    cache.array = array
    return cache


def _write_npy_atomically(path, array):
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def cache_features(model, x, batch_size=32, path=None):
    return FeatureCache(model, _as_inputs(model, x), _positive_batch(batch_size),
                        None if path is None else os.fspath(path))


def _fit_features(model, features, y, batch_size, epochs, verbose, callbacks, shuffle,
                  initial_epoch, checkpoint, resume):
    """fit on a FeatureCache: only the layers after the frozen prefix run."""
    trainer = model.trainer
    features.check(model)
    labels = trainer.labels_array(y, features.n, features.samples)
    run = RunShape(samples=features.samples, itemsizes=features.itemsizes, n=features.n,
                   label_bytes=labels.itemsize * int(np.prod(labels.shape[1:], dtype=np.int64)))
    batch_size = 32 if batch_size is None else _positive_batch(batch_size)
    _plan_run(trainer, run, batch_size, True, True)
    try:
        arrays = _ArrayEpochs(trainer, features.source(), labels, batch_size, shuffle)
        return _fit_loop(model, arrays, epochs, verbose, callbacks, None, initial_epoch,
                         checkpoint, resume)
    finally:
        trainer.run_parts = {}


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
        steps_per_epoch=None, feature_cache_dir=None, max_batch_size=AUTO_BATCH_CAP):
    trainer = model.trainer
    trainer.reseed()
    if feature_cache not in ("auto", True, False, "disk"):
        raise ValueError("feature_cache must be 'auto', True, False or 'disk'")
    if isinstance(x, FeatureCache):
        if validation_split or validation_data is not None or augment is not None \
                or batch_size == "auto" or steps_per_epoch is not None:
            raise ValueError("fit on a FeatureCache takes no validation_split, "
                             "validation_data, augment, steps_per_epoch or batch_size='auto' "
                             "(evaluate the held-out data with model.evaluate)")
        return _fit_features(model, x, y, batch_size, epochs, verbose, callbacks, shuffle,
                             initial_epoch, checkpoint, resume)
    # Set before the sources are built: the caching message reads it (it used to be set
    # only in _fit_loop, so a first fit never said it was caching).
    model._verbose_fit = _verbosity(verbose) > 0
    augment = _with_model_augmentation(trainer, augment, _verbosity(verbose))
    if isinstance(x, ImageDataset):
        if y is not None:
            raise ValueError("y must not be given when x is a dataset (its batches carry "
                             "the labels), as in Keras")
        if validation_split:
            raise ValueError("validation_split is not supported when x is a dataset (as in "
                             "Keras); make the validation subset with "
                             "image_dataset_from_directory(..., validation_split=, subset=)")
        return _fit_dataset(model, x, epochs, verbose, callbacks, validation_data,
                            initial_epoch, augment, feature_cache, feature_cache_dir,
                            checkpoint, resume, steps_per_epoch)
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
        val = _validation_arrays(model, validation_data)
    run = RunShape(samples=_samples(inputs), itemsizes=[a.dtype.itemsize for a in inputs], n=n,
                   val_n=0 if val is None else val[1].shape[0],
                   label_bytes=labels.itemsize * int(np.prod(labels.shape[1:], dtype=np.int64)),
                   augment=augment is not None)
    cacheable = trainer.setup.cacheable and augment is None and feature_cache is not False
    if batch_size == "auto":
        batch_size = _auto_batch(trainer, run, cacheable, feature_cache, max_batch_size,
                                 _verbosity(verbose))
    batch_size = 32 if batch_size is None else _positive_batch(batch_size)
    _plan_run(trainer, run, batch_size, cacheable, feature_cache)
    spill_dir = cache_directory(feature_cache_dir) if run.cache == "disk" else None
    caches = []
    try:
        train_source, val_source = _sources(trainer, inputs, val, run.cache != "none",
                                            spill_dir, batch_size, augment, caches)
        arrays = _ArrayEpochs(trainer, train_source, labels, batch_size, shuffle)
        validation = ((lambda: evaluate_arrays(trainer, val_source, val[1], batch_size))
                      if val is not None else _validation(model, validation_data, batch_size))
        return _fit_loop(model, arrays, epochs, verbose, callbacks, validation,
                         initial_epoch, checkpoint, resume)
    finally:
        for cache in caches:
            cache.close()
        trainer.run_parts = {}


def _with_model_augmentation(trainer, augment, verbosity):
    """fit's per-batch transform: the user's augment, then the model's own leading
    augmentation layers (Keras applies those to the batch the model receives)."""
    layers = trainer.setup.input_augmentation
    if not layers:
        return augment
    from .augment import InputAugmentation

    model_augment = InputAugmentation(layers)
    if verbosity and trainer.setup.cacheable:
        print(f"Feature cache bypassed: {', '.join(model_augment.names)} "
              f"augment{'s' if len(layers) == 1 else ''} the input before the frozen layers, "
              f"so they run on every batch")
    if augment is None:
        return model_augment
    return lambda x, rng: model_augment(augment(x, rng), rng)


def _positive_batch(batch_size):
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    return int(batch_size)


def _validation_arrays(model, validation_data):
    """(inputs, labels) of validation_data=(x, y), checked; Keras's third element, sample
    weights, is refused rather than ignored (edgecore has no sample weighting)."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError("validation_data must be a tuple (x, y) of arrays, or a dataset or "
                         f"generator of (x, y) batches; got {type(validation_data).__name__}"
                         + (f" of length {len(validation_data)}"
                            if isinstance(validation_data, (tuple, list)) else ""))
    if len(validation_data) == 3:
        raise ValueError("validation_data=(x, y, sample_weight): sample weights are not "
                         "supported by edgecore; pass (x, y)")
    val_inputs = _as_inputs(model, validation_data[0])
    if val_inputs[0].shape[0] == 0:
        raise ShapeError("validation_data has no samples", path=model.path)
    return val_inputs, model.trainer.labels_array(validation_data[1], val_inputs[0].shape[0],
                                                  _samples(val_inputs))


def _run_shapes(run, batch_size):
    """The input shapes of every batch a run uses (full, last partial, validation's)."""
    lengths = set(batch_lengths(run.n, batch_size))
    if run.val_n:
        lengths |= set(batch_lengths(run.val_n, run.val_batch or batch_size))
    return [[(length,) + tuple(s) for s in run.samples] for length in sorted(lengths)]


def _with_lengths(run, batch_size, cache):
    run.cache = cache
    run.lengths = batch_lengths(run.n, batch_size)
    run.val_lengths = batch_lengths(run.val_n, run.val_batch or batch_size) if run.val_n else []
    return run


def _cache_choice(trainer, run, batch_size, cacheable, feature_cache):
    """"memory", "disk" or "none" for the feature cache, honouring the budget."""
    if not cacheable:
        return "none"
    if feature_cache == "disk":
        return "disk"
    if trainer.budget is None:
        return "memory"
    parts = run_parts(trainer, _with_lengths(run, batch_size, "memory"))
    try:
        trainer.check_fits(trainer.arena_for(_run_shapes(run, batch_size)), "the training run "
                           "with its feature cache in memory", parts)
        return "memory"
    except MemoryBudgetError:
        if feature_cache is True:
            raise
        return "disk"  # "auto": spill the cache to a temporary file


def _auto_batch(trainer, run, cacheable, feature_cache, cap, verbosity):
    """batch_size="auto": the largest batch up to `cap` whose whole run fits the budget."""
    cap = _positive_batch(cap)

    def run_for(batch):
        cache = "none" if not cacheable else ("memory" if feature_cache is True else "disk")
        return _run_shapes(run, batch), run_parts(trainer, _with_lengths(run, batch, cache))

    batch = trainer.auto_batch_size(run_for, run.samples, run.n, cap)
    if verbosity:
        print(f"batch_size='auto': {batch} (the largest batch up to {cap} whose run fits the "
              f"memory budget; raise max_batch_size to allow larger ones)")
    return batch


def _plan_run(trainer, run, batch_size, cacheable, feature_cache):
    """Size everything the run holds, plan every step shape and check the budget, all
    before the first step (a refusal leaves nothing done)."""
    cache = _cache_choice(trainer, run, batch_size, cacheable, feature_cache)
    trainer.run_parts = run_parts(trainer, _with_lengths(run, batch_size, cache))
    try:
        shapes = _run_shapes(run, batch_size)
        trainer.check_fits(trainer.arena_for(shapes), f"the training run (batch size "
                           f"{batch_size}, {run.n} samples)")
        for batch_shapes in shapes:
            trainer.plans_for(batch_shapes)
    except BaseException:
        trainer.run_parts = {}
        raise


def run_memory(trainer, samples, itemsizes, n, val_n, batch_size, feature_cache="auto",
               augment=False):
    """(parts, input shapes of every batch) of a fit on n samples of these per-sample
    shapes and itemsizes, for Model.memory_plan(training=True)."""
    out = trainer.model.output_shapes_for(samples)[0]
    label_bytes = 8 if trainer.loss.kind == "sparse_ce" else 4 * int(np.prod(out, dtype=np.int64))
    run = RunShape(samples=[tuple(s) for s in samples], itemsizes=list(itemsizes), n=n,
                   val_n=val_n, label_bytes=label_bytes, augment=augment)
    cacheable = trainer.setup.cacheable and not augment and feature_cache is not False
    cache = _cache_choice(trainer, run, batch_size, cacheable, feature_cache)
    return run_parts(trainer, _with_lengths(run, batch_size, cache)), _run_shapes(run, batch_size)


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
    done = initial_epoch
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
        done = epoch + 1
        if checkpoint is not None:  # what changed, each epoch
            checkpoints.save(model, checkpoint, done, history)
        if model.stop_training:
            break
    for callback in [history, progress] + callbacks:
        callback.on_train_end()
    if checkpoint is not None and done > initial_epoch:  # the whole model, once, at the end
        checkpoints.save(model, checkpoint, done, history, full=True)
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
        self.gather = _LabelGather(labels)

    def run_epoch(self, epoch, callbacks):
        trainer, labels = self.trainer, self.labels
        n = labels.shape[0]
        order = trainer.rng.permutation(n) if self.shuffle else np.arange(n)
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        logs = _Logs()
        for step, (start, stop) in enumerate(_batches(n, self.batch_size)):
            index = order[start:stop]
            batch_labels = self.gather(index)
            losses, output = trainer.step(self.source.batch(index), batch_labels, train=True)
            _check_finite(trainer.model, losses, callbacks, epoch, step)
            current = logs.add(trainer, losses, output, batch_labels)
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


def _sources(trainer, inputs, val, use_cache, spill_dir, batch_size, augment, caches):
    if not use_cache:
        val_source = BatchSource(trainer, val[0]) if val else None
        return BatchSource(trainer, inputs, augment=augment, rng=trainer.rng), val_source
    if trainer.model._verbose_fit:
        where = f"a temporary file in {spill_dir}" if spill_dir else "memory"
        print(f"Caching the frozen layers' output for {inputs[0].shape[0]} samples in {where} "
              f"(once; epochs then train only the trainable layers)")
    train_caches = build_caches(trainer, inputs, batch_size, spill_dir)
    caches.extend(train_caches)
    val_source = None
    if val is not None:
        val_caches = build_caches(trainer, val[0], batch_size, spill_dir)
        caches.extend(val_caches)
        val_source = BatchSource(trainer, val[0], caches=val_caches)
    return BatchSource(trainer, inputs, caches=train_caches), val_source


def _verbosity(verbose):
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return verbose


# --- streaming photo datasets (edgecore.utils.image_dataset_from_directory) -------------

def _labelled_dataset(model, ds, what):
    if not isinstance(ds, ImageDataset):
        return
    if ds.label_mode is None:
        raise ValueError(f"{what} needs labels: the dataset was made with label_mode=None (or "
                         f"labels=None)")
    if ds.batch_size is None:
        raise ValueError(f"{what} needs a batched dataset: it was made with batch_size=None")


def _fit_dataset(model, ds, epochs, verbose, callbacks, validation_data, initial_epoch,
                 augment, feature_cache, feature_cache_dir, checkpoint, resume,
                 steps_per_epoch):
    """fit on a streaming dataset: every batch shape of the run (training and validation,
    full and last) is planned and the run's memory, the decoded batches included, checked
    before any photo is decoded.  With the frozen-prefix cache, the first epoch decodes
    each batch, runs the prefix on it, writes the features into the cache and trains on
    them; later epochs read only the cache (in a new order each epoch when the dataset
    shuffles).  The validation dataset is cached the same way on its first pass."""
    trainer = model.trainer
    _labelled_dataset(model, ds, "fit")
    val = validation_data if isinstance(validation_data, ImageDataset) else None
    _labelled_dataset(model, val, "validation_data")
    shape = ds.element_shape
    one = trainer.labels_array(ds.encode_labels(ds.labels[:1]), 1, [shape])
    run = RunShape(samples=[shape], itemsizes=[4], n=ds.samples,
                   val_n=val.samples if val is not None else 0,
                   label_bytes=one.nbytes, augment=augment is not None,
                   val_batch=val.batch_size if val is not None else 0,
                   stream_bytes=ds.memory_bytes() + (val.memory_bytes() if val else 0))
    if steps_per_epoch is not None and int(steps_per_epoch) < len(ds):
        feature_cache = False  # epochs that see part of the data cannot fill a cache
    cacheable = trainer.setup.cacheable and augment is None and feature_cache is not False
    _plan_run(trainer, run, ds.batch_size, cacheable, feature_cache)
    spill_dir = cache_directory(feature_cache_dir) if run.cache == "disk" else None
    streams = []
    try:
        if run.cache == "none":
            source = _BatchStream(trainer, ds, augment, steps_per_epoch)
            validation = (_validation(model, validation_data, ds.batch_size)
                          if val is None else (lambda: evaluate_batches(trainer, val)))
        else:
            if _verbosity(verbose):
                where = f"a temporary file in {spill_dir}" if spill_dir else "memory"
                print(f"Caching the frozen layers' output for {ds.samples} photos in {where} "
                      f"during the first epoch (then epochs train only the trainable layers)")
            source = _CachedStream(trainer, ds, spill_dir)
            streams.append(source)
            if val is not None:
                val_stream = _CachedStream(trainer, val, spill_dir)
                streams.append(val_stream)
                validation = val_stream.evaluate
            else:
                validation = _validation(model, validation_data, ds.batch_size)
        return _fit_loop(model, source, epochs, verbose, callbacks, validation,
                         initial_epoch, checkpoint, resume)
    finally:
        for stream in streams:
            stream.close()
        trainer.run_parts = {}


class _CachedStream:
    """Epochs over a dataset through the frozen-prefix cache: the first pass decodes,
    runs the prefix and fills the cache (rows in the order that pass met the photos, with
    their labels); later passes gather cached rows in the dataset's order for that pass."""

    def __init__(self, trainer, ds, spill_dir):
        self.trainer, self.ds = trainer, ds
        self.steps = len(ds)
        n, shape = ds.samples, ds.element_shape
        boundary = trainer.boundary_shapes([(1,) + shape])
        self.caches = [SpilledCache((n,) + tuple(s[1:]), spill_dir) if spill_dir is not None
                       else MemoryCache((n,) + tuple(s[1:])) for s in boundary]
        self.labels = None  # made at the first batch, in the trainer's label layout
        self.filled = 0
        self.gather_buffers = {}

    def close(self):
        for cache in self.caches:
            cache.close()

    def _fill_batches(self, epoch):
        trainer, model = self.trainer, self.trainer.model
        for x, y in self.ds.iterate(epoch):
            inputs = _as_inputs(model, x)
            n = inputs[0].shape[0]
            labels = trainer.labels_array(y, n, _samples(inputs))
            if self.labels is None:
                self.labels = np.empty((self.ds.samples,) + labels.shape[1:], labels.dtype)
            features = trainer.boundary_of(inputs)
            for cache, rows in zip(self.caches, features):
                cache.write(self.filled, rows)
            self.labels[self.filled:self.filled + n] = labels
            self.filled += n
            yield features, labels
        if self.filled != self.ds.samples:  # a photo vanished or was added mid-run
            raise ShapeError(f"the dataset yielded {self.filled} samples, expected "
                             f"{self.ds.samples}", path=model.path)

    def _cached_batches(self, epoch):
        order = self.ds.order(epoch)
        gather = _LabelGather(self.labels)
        for start in range(0, len(order), self.ds.batch_size):
            index = order[start:start + self.ds.batch_size]
            buffers = self.gather_buffers.get(len(index))
            if buffers is None:
                buffers = self.gather_buffers[len(index)] = [
                    np.empty((len(index),) + c.shape[1:], np.float32) for c in self.caches]
            for cache, out in zip(self.caches, buffers):
                cache.gather(index, out)
            yield buffers, gather(index)

    def batches(self, epoch):
        if self.filled < self.ds.samples:
            if self.filled:  # an earlier pass stopped part way: start the cache again
                self.filled = 0
            return self._fill_batches(epoch)
        return self._cached_batches(epoch)

    def run_epoch(self, epoch, callbacks):
        trainer, model = self.trainer, self.trainer.model
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        logs = _Logs()
        for step, (features, labels) in enumerate(self.batches(epoch)):
            losses, output = trainer.step(features, labels, train=True)
            _check_finite(model, losses, callbacks, epoch, step)
            current = logs.add(trainer, losses, output, labels)
            for callback in callbacks:
                callback.on_batch_end(step, current)
            if model.stop_training:
                break
        return logs.logs()

    def evaluate(self):
        logs = _Logs()
        for features, labels in self.batches(0):
            losses, output = self.trainer.step(features, labels, train=False)
            logs.add(self.trainer, losses, output, labels)
        return logs.logs()
