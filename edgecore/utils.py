"""edgecore.utils: set_random_seed (like keras.utils.set_random_seed), resize_images,
decode_predictions (like keras.applications.imagenet_utils.decode_predictions), and for
photos (Pillow, the extra `edgecore[images]`) Keras's image_dataset_from_directory,
load_img and img_to_array (edgecore/datasets.py, edgecore/images.py).

The seed drives what is random in edgecore's training: the per-epoch shuffle in fit and
the Dropout masks (a counter-based generator, kernels/elementwise.pxi).  Keras's own
random streams cannot be reproduced, so runs are repeatable within edgecore, not
identical to a Keras run with the same seed.
"""
import secrets

from .datasets import image_dataset_from_directory  # noqa: F401  (Keras's names)
from .images import img_to_array, load_img  # noqa: F401

_SEED = None
_GENERATION = 0  # how many times set_random_seed was called


def set_random_seed(seed):
    """Make edgecore's shuffling and dropout repeatable from now on: the next fit or
    train_on_batch of every compiled model starts its random stream from this seed,
    whether the model was compiled before or after (as keras.utils.set_random_seed)."""
    global _SEED, _GENERATION
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    _SEED = seed
    _GENERATION += 1


def _seed_generation():
    return _GENERATION


def _global_seed():
    """The seed set by set_random_seed, or fresh entropy when none was set."""
    return _SEED if _SEED is not None else secrets.randbits(63)


def resize_images(images, size):
    """Bilinear resize of NHWC images to size (h, w) or size x size, with half-pixel
    centres like tf.image.resize(method="bilinear") (what Keras's Resizing layer and the
    Keras transfer-learning examples use).  A 1-channel input becomes 3 channels (ImageNet
    backbones want RGB).  The dtype is kept (uint8 stays uint8, rounded), so a dataset
    stays small; fit and predict convert each batch to float32 themselves."""
    import numpy as np

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W[, C]), got shape {images.shape}")
    out_h, out_w = (size, size) if isinstance(size, int) else size
    n, h, w, c = images.shape

    def taps(out, inp):
        centre = np.clip((np.arange(out) + 0.5) * inp / out - 0.5, 0, inp - 1)
        lo = np.floor(centre).astype(np.intp)
        return lo, np.minimum(lo + 1, inp - 1), (centre - lo).astype(np.float32)

    y0, y1, fy = taps(out_h, h)
    x0, x1, fx = taps(out_w, w)
    fy, fx = fy[None, :, None, None], fx[None, None, :, None]
    result = np.empty((n, out_h, out_w, 3 if c == 1 else c), images.dtype)
    for start in range(0, n, 256):  # in chunks: the float32 intermediate stays small
        chunk = images[start:start + 256].astype(np.float32)
        top = chunk[:, y0][:, :, x0] * (1 - fx) + chunk[:, y0][:, :, x1] * fx
        bottom = chunk[:, y1][:, :, x0] * (1 - fx) + chunk[:, y1][:, :, x1] * fx
        mixed = top * (1 - fy) + bottom * fy
        if np.issubdtype(images.dtype, np.integer):
            info = np.iinfo(images.dtype)
            mixed = np.clip(np.rint(mixed), info.min, info.max)
        result[start:start + 256] = mixed if c != 1 else np.repeat(mixed, 3, axis=-1)
    return result


_IMAGENET = None


def _imagenet_classes():
    """[(wnid, Keras's class name)] in ImageNet-1k index order, read once (installed with
    edgecore: decode_predictions and `edgecore predict` share it)."""
    global _IMAGENET
    if _IMAGENET is None:
        from importlib import resources

        text = resources.files("edgecore").joinpath("data/imagenet_class_index.tsv").read_text()
        _IMAGENET = [tuple(line.split("\t")) for line in text.splitlines()]
    return _IMAGENET


def decode_predictions(preds, top=5):
    """Keras's decode_predictions for an ImageNet-1k classifier: for each row of preds
    (N, 1000), the `top` classes by score as (wnid, class name, score) tuples, best first.
    The class index (wnids and Keras's names) is installed with edgecore, so nothing is
    downloaded, unlike Keras."""
    import numpy as np

    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError("decode_predictions expects a batch of predictions (i.e. a 2D array "
                         f"of shape (samples, 1000)). Found array with shape: {preds.shape}")
    classes = _imagenet_classes()
    results = []
    for row in preds:
        best = np.argsort(row, kind="stable")[-top:][::-1]
        results.append([classes[i] + (row[i],) for i in best])
    return results
