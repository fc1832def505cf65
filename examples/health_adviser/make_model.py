"""Make the Keras MLP of the health-adviser example (run ONLY with a Keras/TensorFlow python:
`/work/kerasenv/bin/python examples/health_adviser/make_model.py` or any Python with
keras>=3 and tensorflow).  Writes examples/health_adviser/health_mlp.h5, committed.

The model: Normalization (adapted to the training features) -> Dense(16, relu) ->
Dense(8, relu) -> Dense(1, sigmoid), trained by Keras on the training split of the
breast-cancer set (weights/datasets/breast_cancer.npz: 30 measurements of a breast mass,
label 1 = benign, 0 = malignant, as scikit-learn's load_breast_cancer), seeded.
Pinned: Keras 3.15.1, TensorFlow 2.21.
"""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "weights" / "datasets" / "breast_cancer.npz"


def main():
    keras.utils.set_random_seed(0)
    data = np.load(DATA)
    x, y = data["x_train"], data["y_train"].astype("float32")
    norm = keras.layers.Normalization(name="normalize")
    norm.adapt(x)
    model = keras.Sequential([
        keras.Input((x.shape[1],), name="measurements"),
        norm,
        keras.layers.Dense(16, activation="relu", name="hidden1"),
        keras.layers.Dense(8, activation="relu", name="hidden2"),
        keras.layers.Dense(1, activation="sigmoid", name="benign"),
    ], name="health_mlp")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    loss, acc = model.evaluate(data["x_test"], data["y_test"].astype("float32"), verbose=0)
    model.save(HERE / "health_mlp.h5")
    probs = model.predict(data["x_test"], verbose=0)
    np.savez(HERE / "health_mlp_keras_outputs.npz", probs=probs)
    print(f"Keras {keras.__version__}: test accuracy {acc:.4f}, loss {loss:.4f}; wrote "
          f"{HERE / 'health_mlp.h5'} and Keras's test-set outputs")


if __name__ == "__main__":
    main()
