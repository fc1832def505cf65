"""From a folder of labelled photos to a trained model, in Python (the CLI version is
train_and_predict.sh beside this file).

    python examples/photo_classifier/photo_classifier.py [--data DIR] [--epochs 5]
                                                         [--image-size 96] [--out clothes.h5]

DIR holds one sub-folder of photos per class (JPEG, PNG, BMP, GIF), the layout Keras's
image_dataset_from_directory reads.  Without --data, real Fashion-MNIST photos (the subset
committed in weights/datasets) are written as PNG files into ./fashion_photos first
(--per-class of each of --classes classes).

The photos stream from disk one batch at a time; the bundled ImageNet MobileNetV2 stays
frozen, its features are computed once (during the first epoch) and cached, and a new
Dense softmax head learns.  Then the model is saved (Keras opens it) and predicts.
Needs Pillow: pip install "edgecore[images]".
"""
import argparse
from pathlib import Path

import numpy as np

import edgecore as ec

REPO = Path(__file__).resolve().parent.parent.parent
BACKBONE = REPO / "weights" / "pretrained" / "mobilenet_v2_imagenet.h5"
FASHION = REPO / "weights" / "datasets" / "fashion_mnist_small.npz"


def write_fashion_photos(root, per_class, classes):
    """root/<class>/<n>.png: real Fashion-MNIST photos from the committed subset."""
    from PIL import Image

    data = np.load(FASHION)
    names = [str(n).replace("/", "_") for n in data["class_names"]]
    root = Path(root)
    for c in range(classes):
        folder = root / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        for k in np.flatnonzero(data["y_train"] == c)[:per_class]:
            Image.fromarray(data["x_train"][k, :, :, 0]).save(folder / f"{k:04d}.png")
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="one sub-folder of photos per class")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--write-only", action="store_true",
                        help="only write the Fashion-MNIST photo folder (for the CLI script)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--out", default="clothes.h5")
    args = parser.parse_args(argv)

    data = Path(args.data) if args.data else write_fashion_photos(
        "fashion_photos", args.per_class, args.classes)
    if args.write_only:
        print(f"wrote {data}")
        return 0
    size = (args.image_size, args.image_size)
    train, val = ec.utils.image_dataset_from_directory(
        data, image_size=size, batch_size=32, validation_split=0.2, subset="both", seed=1337)

    model = ec.transfer.new_head(ec.load(BACKBONE), classes=len(train.class_names))
    model.compile(optimizer=ec.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train, epochs=args.epochs, validation_data=val, verbose=2)
    loss, accuracy = model.evaluate(val)
    print(f"validation accuracy {100 * accuracy:.1f} % on {val.samples} photos")
    model.save(args.out)

    # Predict single photos, as Keras's load_img / img_to_array do it.
    reloaded = ec.load(args.out)
    for path in val.file_paths[:3]:
        x = ec.utils.img_to_array(ec.utils.load_img(path, target_size=size,
                                                    interpolation="bilinear"))
        probs = reloaded.predict(x[None])[0]
        print(f"{path}: {train.class_names[int(probs.argmax())]} ({probs.max():.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
