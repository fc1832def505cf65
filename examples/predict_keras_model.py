"""Predict with a plain Keras model file: no training, no TensorFlow.

    python examples/predict_keras_model.py [MODEL] [PHOTO ...]

MODEL: any Keras .h5 (Keras 2 or 3) or .keras file; default the bundled ImageNet
MobileNetV2 (weights/pretrained/mobilenet_v2_imagenet.h5).  PHOTOS: default two real photos
from weights/pretrained/photos224_reference.npz, written as PNG files here.  Each photo is
read as Keras's load_img / img_to_array read it, resized to the model's input (224x224 for
an open input size), and the top-3 classes printed (ImageNet names for a 1000-class model,
as keras.applications' decode_predictions).  Needs Pillow: pip install "edgecore[images]".
"""
import sys
from pathlib import Path

import numpy as np

import edgecore as ec

REPO = Path(__file__).resolve().parent.parent


def sample_photos():
    from PIL import Image

    ref = np.load(REPO / "weights" / "pretrained" / "photos224_reference.npz")
    names = [str(n) for n in ref["names"]]
    paths = []
    for k in (names.index("squirrel_cls.jpg"), names.index("orange.jpg")):
        path = Path(names[k].rsplit(".", 1)[0] + ".png")
        Image.fromarray(ref["x"][k]).save(path)
        paths.append(path)
    return paths


def main(argv):
    model_path = argv[0] if argv else REPO / "weights" / "pretrained" / "mobilenet_v2_imagenet.h5"
    photos = argv[1:] or sample_photos()
    model = ec.load(model_path)
    _, h, w, channels = model.input_shape
    size = (h or 224, w or 224)
    mode = {1: "grayscale", 3: "rgb", 4: "rgba"}[channels]
    x = np.stack([ec.utils.img_to_array(ec.utils.load_img(p, color_mode=mode, target_size=size,
                                                          interpolation="bilinear"))
                  for p in photos])
    probs = model.predict(x)
    for path, row in zip(photos, probs):
        print(path)
        if row.shape[-1] == 1000:
            for _, name, p in ec.utils.decode_predictions(row[None], top=3)[0]:
                print(f"  {name:<28} {p:.3f}")
        else:
            for i in np.argsort(row)[::-1][:3]:
                print(f"  class {i:<22} {row[i]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
