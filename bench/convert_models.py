#!/usr/bin/env python3
"""Dev-only: convert the benchmark models to LiteRT (.tflite) and ONNX for comparison.

Needs TensorFlow + Keras (+ tf2onnx for ONNX) — the same dev virtualenv as
weights/generate.py, never a run-time or test-time dependency of edgecore:

    /path/to/keras-venv/bin/python bench/convert_models.py      # writes bench/models/

The converted files are not committed (bench/models/ is ignored).  Both are float32 with
the same weights as the Keras file, so bench/bench_models.py compares like with like;
the input is fixed to the benchmark's batch-1 shape.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = {
    "mobilenet_v2_1.0_224": (REPO / "weights/pretrained/mobilenet_v2_imagenet.h5", (224, 224, 3)),
    "mobilenet_v2_0.35_96": (REPO / "weights/fixtures/mobilenet_v2.k3.h5", (96, 96, 3)),
}


def fixed_shape_function(model, shape):
    import tensorflow as tf

    spec = tf.TensorSpec((1,) + shape, tf.float32, name="input")
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


def main():
    import tempfile

    import keras
    import tensorflow as tf

    out_dir = HERE / "models"
    out_dir.mkdir(exist_ok=True)
    for name, (path, shape) in MODELS.items():
        model = keras.models.load_model(path, compile=False)
        fn = fixed_shape_function(model, shape)
        # Through a SavedModel: converting the tf.function directly dropped the variables
        # (the .tflite came out 200 KB and returned NaN).
        with tempfile.TemporaryDirectory() as saved:
            model.export(saved, format="tf_saved_model",
                         input_signature=[tf.TensorSpec((1,) + shape, tf.float32)])
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            (out_dir / f"{name}.tflite").write_bytes(converter.convert())
        try:
            import tf2onnx
        except ImportError:
            print("tf2onnx not installed: no ONNX model", file=sys.stderr)
            continue
        tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=17,
                                      output_path=str(out_dir / f"{name}.onnx"))
        print(f"wrote {name}.tflite and {name}.onnx")


if __name__ == "__main__":
    main()
