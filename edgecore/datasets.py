"""image_dataset_from_directory with Keras 3.15's arguments, file order, splits and
errors, returning a dataset that decodes and resizes one batch at a time.

What matches Keras exactly (tests/test_datasets.py, and against Keras itself in the
`keras`-marked test): the files found (a sorted walk of each class folder, extensions
.bmp .gif .jpeg .jpg .png in any case, hidden class folders skipped), `class_names`,
the labels and their encodings, the global shuffle of the file list by
numpy.random.RandomState(seed) (so the same seed puts the same files in the training
and validation subsets as Keras), `file_paths`, the split, the messages Keras prints
and the ValueErrors for bad arguments.  The images are tf.image.resize's (bilinear,
half-pixel centres, no antialiasing, or nearest) of Pillow's decode.

What does not: Keras also shuffles the training subset again on every pass with
tf.data's shuffle buffer (batch_size * 8) and TensorFlow's random stream, which cannot
be reproduced without TensorFlow.  Here each pass over a shuffled dataset is a full
permutation drawn from numpy.random.default_rng((seed, pass)): repeatable for a seed,
not Keras's batch order.  Keras's `format`, `data_format="channels_first"` and
`pad_to_aspect_ratio`, and interpolations other than bilinear and nearest, are refused.

Memory: a pass holds at most `prefetch` decoded batches in a queue, the one a
background thread is filling and the one the caller has: (prefetch + 2) batches of
float32 images, whatever the number of files (`memory_bytes()`).  The thread decodes
while the caller's compiled plan runs (Pillow and the kernels release the GIL).
"""
import math
import os
import queue
import threading

import numpy as np

from . import images

PREFETCH = 2  # batches decoded ahead of the consumer


def check_validation_split_arg(validation_split, subset, shuffle, seed):
    """Keras's dataset_utils.check_validation_split_arg, same messages."""
    if validation_split and not 0 < validation_split < 1:
        raise ValueError("`validation_split` must be between 0 and 1, "
                         f"received: {validation_split}")
    if (validation_split or subset) and not (validation_split and subset):
        raise ValueError("If `subset` is set, `validation_split` must be set, and inversely.")
    if subset not in ("training", "validation", "both", None):
        raise ValueError('`subset` must be either "training", '
                         f'"validation" or "both", received: {subset}')
    if validation_split and shuffle and seed is None:
        raise ValueError("If using `validation_split` and shuffling the data, you must "
                         "provide a `seed` argument, to make sure that there is no "
                         "overlap between the training and validation subset.")


def _valid_files(directory, follow_links, formats):
    for root, _, files in sorted(os.walk(directory, followlinks=follow_links),
                                 key=lambda x: x[0]):
        for fname in sorted(files):
            if fname.lower().endswith(formats):
                yield root, fname


def index_directory(directory, labels, formats, class_names=None, shuffle=True, seed=None,
                    follow_links=False, verbose=True):
    """(file_paths, labels, class_names) exactly as Keras's dataset_utils.index_directory."""
    if labels == "inferred":
        subdirs = []
        for subdir in sorted(os.listdir(directory)):
            if os.path.isdir(os.path.join(directory, subdir)) and not subdir.startswith("."):
                subdirs.append(subdir.rstrip("/") if subdir.endswith("/") else subdir)
        if class_names is not None:
            if not set(class_names).issubset(set(subdirs)):
                raise ValueError(
                    "The `class_names` passed did not match the names of the subdirectories "
                    f"of the target directory. Expected: {subdirs} (or a subset of it), but "
                    f"received: class_names={class_names}")
            subdirs = class_names
    else:
        subdirs = [""]
        if class_names is not None:
            if labels is None:
                raise ValueError("When `labels=None` (no labels), argument `class_names` "
                                 "cannot be specified.")
            raise ValueError("When argument `labels` is specified, argument `class_names` "
                             "cannot be specified (the `class_names` will be the sorted list "
                             "of labels).")
    class_names = subdirs
    class_indices = dict(zip(class_names, range(len(class_names))))
    filenames, labels_list = [], []
    for subdir in subdirs:
        dirpath = os.path.join(directory, subdir)
        dirname = os.path.basename(dirpath)
        found = []
        for root, fname in _valid_files(dirpath, follow_links, formats):
            found.append(os.path.join(dirname, os.path.relpath(os.path.join(root, fname),
                                                              dirpath)))
        filenames += found
        labels_list.append([class_indices[dirname]] * len(found))
    if labels == "inferred":
        labels = np.zeros((len(filenames),), dtype="int32")
        i = 0
        for part in labels_list:
            labels[i:i + len(part)] = part
            i += len(part)
    elif labels is None:
        class_names = None
    else:
        if len(labels) != len(filenames):
            raise ValueError(
                "Expected the lengths of `labels` to match the number of files in the target "
                f"directory. len(labels) is {len(labels)} while we found {len(filenames)} "
                f"files in directory {directory}.")
        class_names = [str(label) for label in sorted(set(labels))]
    if verbose:
        if labels is None:
            print(f"Found {len(filenames)} files.")
        else:
            print(f"Found {len(filenames)} files belonging to {len(class_names)} classes.")
    file_paths = [os.path.join(directory, fname) for fname in filenames]
    if shuffle:
        if seed is None:
            seed = np.random.randint(1e6)
        np.random.RandomState(seed).shuffle(file_paths)
        if labels is not None:
            np.random.RandomState(seed).shuffle(labels)
    return file_paths, labels, class_names


def split(samples, labels, validation_split, subset):
    """Keras's get_training_or_validation_split, its slicing and its messages."""
    if not validation_split:
        return samples, labels
    num_val = int(validation_split * len(samples))
    if subset == "training":
        print(f"Using {len(samples) - num_val} files for training.")
        samples = samples[:-num_val]
        labels = None if labels is None else labels[:-num_val]
    elif subset == "validation":
        print(f"Using {num_val} files for validation.")
        samples = samples[-num_val:]
        labels = None if labels is None else labels[-num_val:]
    else:
        raise ValueError(f'`subset` must be either "training" or "validation", received: '
                         f'{subset}')
    return samples, labels


def image_dataset_from_directory(directory, labels="inferred", label_mode="int",
                                 class_names=None, color_mode="rgb", batch_size=32,
                                 image_size=(256, 256), shuffle=True, seed=None,
                                 validation_split=None, subset=None, interpolation="bilinear",
                                 follow_links=False, crop_to_aspect_ratio=False,
                                 pad_to_aspect_ratio=False, data_format=None, verbose=True,
                                 prefetch=PREFETCH):
    """keras.utils.image_dataset_from_directory, streaming: returns an ImageDataset (or
    [training, validation] for subset="both") whose iteration yields (images, labels)
    batches as NumPy arrays (images float32 (batch, h, w, channels); labels int32 (batch,),
    float32 (batch, 1) for "binary", float32 one-hot for "categorical"; images alone when
    label_mode is None), decoded with Pillow one batch at a time, at most `prefetch`
    batches ahead.  `class_names` and `file_paths` are set as Keras sets them.  See the
    module docstring for what matches Keras exactly and what does not."""
    if labels not in ("inferred", None):
        if not isinstance(labels, (list, tuple)):
            raise ValueError(
                "`labels` argument should be a list/tuple of integer labels, of the same size "
                "as the number of image files in the target directory. If you wish to infer "
                "the labels from the subdirectory names in the target directory, pass "
                '`labels="inferred"`. If you wish to get a dataset that only contains images '
                f"(no labels), pass `labels=None`. Received: labels={labels}")
        if class_names:
            raise ValueError('You can only pass `class_names` if `labels="inferred"`. '
                             f"Received: labels={labels}, and class_names={class_names}")
    if label_mode not in {"int", "categorical", "binary", None}:
        raise ValueError('`label_mode` argument must be one of "int", "categorical", '
                         f'"binary", or None. Received: label_mode={label_mode}')
    if labels is None or label_mode is None:
        labels, label_mode = None, None
    channels = {"rgb": 3, "rgba": 4, "grayscale": 1}.get(color_mode)
    if channels is None:
        raise ValueError('`color_mode` must be one of {"rgb", "rgba", "grayscale"}. '
                         f"Received: color_mode={color_mode}")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    elif not isinstance(image_size, (list, tuple)) or not len(image_size) == 2:
        raise ValueError("Invalid `image_size` value. Expected a tuple of 2 integers. "
                         f"Received: image_size={image_size}")
    image_size = tuple(int(s) for s in image_size)
    interpolation = interpolation.lower()
    supported = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5",
                 "gaussian", "mitchellcubic")
    if interpolation not in supported:
        raise ValueError(f"Argument `interpolation` should be one of {supported}. "
                         f"Received: interpolation={interpolation}")
    if interpolation not in images.RESIZE_METHODS:
        raise ValueError(f"interpolation={interpolation!r}: edgecore reproduces Keras's "
                         f"{images.RESIZE_METHODS} resizing only")
    if pad_to_aspect_ratio:
        raise ValueError("pad_to_aspect_ratio=True is not supported by edgecore; use "
                         "crop_to_aspect_ratio=True or neither")
    if data_format not in (None, "channels_last"):
        raise ValueError(f"data_format={data_format!r}: edgecore's images are channels_last")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size
                                   or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    check_validation_split_arg(validation_split, subset, shuffle, seed)
    images.pil()  # MissingDependencyError naming the extra, before any work
    if seed is None:
        seed = np.random.randint(1e6)
    paths, labels, class_names = index_directory(
        directory, labels, formats=images.ALLOWLIST_FORMATS, class_names=class_names,
        shuffle=shuffle, seed=seed, follow_links=follow_links, verbose=verbose)
    if label_mode == "binary" and len(class_names) != 2:
        raise ValueError('When passing `label_mode="binary"`, there must be exactly 2 '
                         f"class_names. Received: class_names={class_names}")
    common = dict(image_size=image_size, channels=channels, label_mode=label_mode,
                  num_classes=len(class_names) if class_names else 0,
                  interpolation=interpolation, crop_to_aspect_ratio=crop_to_aspect_ratio,
                  batch_size=batch_size, seed=seed, class_names=class_names, prefetch=prefetch)
    if subset == "both":
        train_paths, train_labels = split(paths, labels, validation_split, "training")
        val_paths, val_labels = split(paths, labels, validation_split, "validation")
        if not train_paths:
            raise ValueError(f"No training images found in directory {directory}. "
                             f"Allowed formats: {images.ALLOWLIST_FORMATS}")
        if not val_paths:
            raise ValueError(f"No validation images found in directory {directory}. "
                             f"Allowed formats: {images.ALLOWLIST_FORMATS}")
        return [ImageDataset(train_paths, train_labels, shuffle=shuffle, **common),
                ImageDataset(val_paths, val_labels, shuffle=False, **common)]
    paths, labels = split(paths, labels, validation_split, subset)
    if not paths:
        raise ValueError(f"No images found in directory {directory}. "
                         f"Allowed formats: {images.ALLOWLIST_FORMATS}")
    return ImageDataset(paths, labels, shuffle=shuffle, **common)


class ImageDataset:
    """Batches of photos decoded on demand.  Iterating is one pass (an epoch); each new
    pass of a shuffled dataset has a new order.  len() is the number of batches.

    class_names, file_paths: as Keras's dataset attributes.  labels: the integer label
    of each file of file_paths (None without labels).  element_shape: (h, w, channels)."""

    def __init__(self, paths, labels, image_size, channels, label_mode, num_classes,
                 interpolation, crop_to_aspect_ratio, batch_size, shuffle, seed, class_names,
                 prefetch=PREFETCH):
        self.file_paths = list(paths)
        self.labels = None if labels is None else np.asarray(labels, np.int32)
        self.class_names = class_names
        self.image_size, self.channels = tuple(image_size), channels
        self.label_mode, self.num_classes = label_mode, num_classes
        self.interpolation, self.crop_to_aspect_ratio = interpolation, crop_to_aspect_ratio
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        if isinstance(prefetch, bool) or int(prefetch) != prefetch or prefetch < 1:
            raise ValueError(f"prefetch must be a positive integer, got {prefetch!r}")
        self.prefetch = int(prefetch)
        self.passes = 0  # how many passes have started (the shuffle of pass k uses k)

    @property
    def element_shape(self):
        return self.image_size + (self.channels,)

    @property
    def samples(self):
        return len(self.file_paths)

    def __len__(self):
        if self.batch_size is None:
            return self.samples
        return math.ceil(self.samples / self.batch_size)

    def __repr__(self):
        return (f"<ImageDataset {self.samples} files, {len(self)} batches of "
                f"{self.batch_size}, images {self.element_shape}, label_mode="
                f"{self.label_mode!r}, class_names={self.class_names}>")

    def order(self, epoch):
        """The file indices of pass `epoch`, in the order they are yielded."""
        n = self.samples
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng((int(self.seed), int(epoch))).permutation(n)

    def encode_labels(self, ids):
        """Keras's label encoding of integer labels for this label_mode."""
        if self.label_mode == "binary":
            return ids.astype(np.float32)[:, None]
        if self.label_mode == "categorical":
            out = np.zeros((len(ids), self.num_classes), np.float32)
            out[np.arange(len(ids)), ids] = 1.0
            return out
        return ids.astype(np.int32)

    def batch_bytes(self):
        """Bytes of one full batch (images and labels)."""
        b = self.batch_size or 1
        label = {"categorical": 4 * self.num_classes, "binary": 4, "int": 4, None: 0}
        return b * (4 * int(np.prod(self.element_shape)) + label[self.label_mode])

    def memory_bytes(self):
        """What a pass holds at most: the queued batches, the one being decoded and the
        one the caller has (each photo's own decoded pixels come on top, one at a time)."""
        return (self.prefetch + 2) * self.batch_bytes()

    def load(self, index):
        """float32 (len(index), h, w, channels) images of these files."""
        out = np.empty((len(index),) + self.element_shape, np.float32)
        for k, i in enumerate(index):
            pixels = images.decode_image(self.file_paths[i], self.channels)
            images.resize_image(pixels, self.image_size, self.interpolation,
                                self.crop_to_aspect_ratio, out=out[k])
        return out

    def _item(self, index):
        x = self.load(index)
        if self.label_mode is None:
            return x
        return x, self.encode_labels(self.labels[index])

    def __iter__(self):
        return self.iterate()

    def iterate(self, epoch=None, with_index=False):
        """One pass; with_index=True yields (file indices, batch) pairs."""
        if epoch is None:
            epoch = self.passes
        self.passes = max(self.passes, epoch + 1)
        order = self.order(epoch)
        if self.batch_size is None:  # unbatched, as Keras with batch_size=None
            for i in order:
                item = self._item(np.array([i]))
                item = item[0] if self.label_mode is None else (item[0][0], item[1][0])
                yield (np.array([i]), item) if with_index else item
            return
        chunks = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        for index, item in _prefetched(chunks, self._item, self.prefetch):
            yield (index, item) if with_index else item


_DONE = object()


def _prefetched(chunks, make, depth):
    """(chunk, make(chunk)) for each chunk, made by a background thread at most `depth`
    ahead.  An error in the thread is raised here; leaving the loop early stops it."""
    slots = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                item = (chunk, make(chunk))
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            slots.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    thread = threading.Thread(target=work, name="edgecore-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            got = slots.get()
            if got is _DONE:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
            del got
    finally:
        stop.set()
        while thread.is_alive():
            try:
                slots.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()
