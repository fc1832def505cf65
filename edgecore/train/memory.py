"""What a training run will hold, by name, known before its first step.

The compiled model's fixed buffers (packed weights, params, gradients, optimizer state) and
the arena of the largest plan are counted by the trainer; a run adds, for the batch
lengths it will use (a full batch, the last partial one, and validation's):

    labels            the label arrays of the training and validation samples
    feature cache     the frozen prefix's output per sample, when it is kept in memory
                      (a spilled cache lives in the page cache, not the process)
    batch gathers     each batch's inputs (or cached features) and labels, gathered into
                      buffers made once per batch length
    staging           the frozen prefix's output for one batch, per batch length
    augmentation      a float32 copy of a batch and the augmented batch, per length
    step outputs      per-sample losses and model outputs, per step plan
    decoded batches   a streaming dataset's (edgecore.utils.image_dataset_from_directory)
                      decoded float32 batches: the prefetch queue, the batch being
                      decoded and the one in use, for training and validation

memory_budget is checked against the sum before any work (fit, batch_size="auto") and
memory_plan(training=True, samples=...) prints the same parts.
"""
from dataclasses import dataclass, field


def _floats(shape):
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass
class RunShape:
    """A training run's data, as the memory plan needs it."""
    samples: list  # per-sample input shapes
    itemsizes: list  # bytes per element of each input array (uint8 images: 1)
    n: int  # training samples
    val_n: int = 0  # validation samples
    label_bytes: int = 8  # per sample (int64 class ids, or float32 targets)
    cache: str = "none"  # "memory", "disk" or "none"
    augment: bool = False
    lengths: list = field(default_factory=list)  # batch lengths of training steps
    val_lengths: list = field(default_factory=list)
    val_batch: int = 0  # validation's batch size when it differs (a dataset's); 0: the same
    stream_bytes: int = 0  # what streaming datasets hold while decoding ahead


def batch_lengths(n, batch_size):
    lengths = {batch_size} if n >= batch_size else set()
    if n % batch_size:
        lengths.add(n % batch_size)
    return sorted(lengths)


def run_parts(trainer, run):
    """{name: bytes} a run holds beyond the compiled model's fixed buffers and arena."""
    boundary = trainer.boundary_shapes([(1,) + tuple(s) for s in run.samples])
    per_sample = sum(_floats(s[1:]) for s in boundary)
    out_floats = sum(_floats(s) for s in trainer.model.output_shapes_for(run.samples))
    input_bytes = sum(_floats(s) * size for s, size in zip(run.samples, run.itemsizes))
    input_floats = sum(_floats(s) for s in run.samples)
    lengths = sorted(set(run.lengths) | set(run.val_lengths))
    prefix = bool(trainer.setup.prefix.nodes)
    parts = {"labels": run.label_bytes * (run.n + run.val_n)}
    if run.cache == "memory":
        parts["feature cache"] = 4 * per_sample * (run.n + run.val_n)
    gather = (4 * per_sample if run.cache != "none" else input_bytes) + run.label_bytes
    parts["batch gathers"] = gather * (sum(run.lengths) + sum(run.val_lengths))
    if prefix:
        parts["staging"] = 4 * per_sample * sum(lengths)
    if run.augment:
        parts["augmentation"] = 2 * 4 * input_floats * sum(set(run.lengths))
    parts["step outputs"] = 2 * 4 * (1 + out_floats) * sum(lengths)
    if run.stream_bytes:
        parts["decoded batches"] = run.stream_bytes
    return parts
