"""Real labelled photos written as the folders image_dataset_from_directory reads.

Fashion-MNIST: the 3,000-image subset committed in weights/datasets (always there), or the
full 70,000 from Debian's dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`,
idx files under /usr/share/datasets/fashion-mnist) when more are asked for.
"""
import gzip
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "weights" / "datasets" / "fashion_mnist_small.npz"
FULL = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle_boot"]


def _idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_arrays(n):
    """(images uint8 (n, 28, 28), labels) of the first n training images."""
    if n <= 3000:
        data = np.load(SMALL)
        return data["x_train"][:n, :, :, 0], data["y_train"][:n]
    images = FULL / "train-images-idx3-ubyte.gz"
    if not images.exists():
        import pytest

        pytest.skip("needs the full Fashion-MNIST: apt-get install dataset-fashion-mnist")
    return _idx(images)[:n], _idx(FULL / "train-labels-idx1-ubyte.gz")[:n]


def write_fashion_folder(root, n, classes=10):
    """root/<class name>/<k>.png for the first n images of the first `classes` classes."""
    from PIL import Image

    x, y = fashion_arrays(n if classes == 10 else 3000)
    keep = np.flatnonzero(y < classes)[:n]
    root = Path(root)
    for c in range(classes):
        (root / CLASSES[c]).mkdir(parents=True, exist_ok=True)
    for k in keep:
        Image.fromarray(x[k]).save(root / CLASSES[y[k]] / f"{k:05d}.png")
    return root
