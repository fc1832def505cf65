#!/usr/bin/env python3
"""Dev-only: write the comparison models as Keras files, LiteRT (.tflite) and ONNX.

Needs TensorFlow + Keras + tf2onnx — the same dev virtualenv as weights/generate.py, never a
run-time or test-time dependency of edgecore:

    /path/to/keras-venv/bin/python bench/convert_models.py          # writes bench/models/
    /path/to/keras-venv/bin/python bench/convert_models.py resnet50_224

For each model, bench/models/ gets `<name>.h5` (written by Keras 3's `model.save`: the file
edgecore loads), `<name>.tflite` (TFLiteConverter from a SavedModel export) and `<name>.onnx`
(tf2onnx, opset 17).  All three hold the same float32 weights, so bench/compare_runtimes.py
and bench/bench_models.py compare like with like; the input is fixed to batch 1.  The
architectures are keras.applications with random weights (seeded), except MobileNetV2 1.0,
which is the bundled ImageNet file.  bench/models/ is not committed (it is ~200 MB).
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "models"

# name: (input shape, how to build it in Keras)
MODELS = {
    "mobilenet_v2_0.35_96": ((96, 96, 3), "MobileNetV2(alpha=0.35, input_shape=(96, 96, 3))"),
    "mobilenet_v2_1.0_224": ((224, 224, 3), REPO / "weights/pretrained/mobilenet_v2_imagenet.h5"),
    "mobilenet_v3_small_224": ((224, 224, 3), "MobileNetV3Small(input_shape=(224, 224, 3))"),
    "efficientnet_b0_224": ((224, 224, 3), "EfficientNetB0(input_shape=(224, 224, 3))"),
    "resnet50_224": ((224, 224, 3), "ResNet50(input_shape=(224, 224, 3))"),
}


def build(keras, recipe):
    if isinstance(recipe, Path):
        return keras.models.load_model(recipe, compile=False)
    keras.utils.set_random_seed(0)
    return eval("keras.applications." + recipe[:-1] + ", weights=None)",  # noqa: S307
                {"keras": keras})


def randomise_batch_norm_statistics(model, np):
    """Random weights leave every BatchNormalization at mean 0, variance 1, which no trained
    model has; give them trained-like statistics so nothing is an identity by accident."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.1, beta.shape).astype("float32"),
                               rng.normal(0, 0.1, mean.shape).astype("float32"),
                               rng.uniform(0.5, 2.0, var.shape).astype("float32")])


def main(names):
    import keras
    import numpy as np
    import tensorflow as tf

    OUT.mkdir(exist_ok=True)
    for name in names:
        shape, recipe = MODELS[name]
        model = build(keras, recipe)
        if not isinstance(recipe, Path):
            randomise_batch_norm_statistics(model, np)
        model.save(OUT / f"{name}.h5")
        spec = tf.TensorSpec((1,) + shape, tf.float32, name="input")
        # Through a SavedModel: converting a tf.function directly dropped the variables
        # (the .tflite came out 200 KB and returned NaN).
        with tempfile.TemporaryDirectory() as saved:
            model.export(saved, format="tf_saved_model", input_signature=[spec])
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            (OUT / f"{name}.tflite").write_bytes(converter.convert())
            # ONNX from the same SavedModel (frozen by tf2onnx): converting a tf.function
            # turned EfficientNet's Normalization constants into extra graph inputs.
            subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved,
                            "--opset", "17", "--output", str(OUT / f"{name}.onnx")],
                           check=True, capture_output=True)
        print(f"wrote {name}.h5, .tflite and .onnx", flush=True)


if __name__ == "__main__":
    wanted = sys.argv[1:] or list(MODELS)
    unknown = [n for n in wanted if n not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    main(wanted)
