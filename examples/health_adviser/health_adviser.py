"""A tabular "personal health adviser" on the device: a Keras-made MLP (health_mlp.h5, made
by make_model.py with Keras on the breast-cancer set) runs and keeps learning with edgecore,
no TensorFlow.

    python examples/health_adviser/health_adviser.py [--epochs 5] [--out adviser.h5]

1. loads the Keras file and checks edgecore's outputs against Keras's own (recorded by
   make_model.py) on the 114 held-out cases;
2. evaluates it;
3. fine-tunes only the last layer on the training cases (as a device would on the data its
   user gathers), with Keras's loss and optimizer;
4. reads one person's 30 measurements and prints the estimate;
5. saves a Keras-loadable .h5.

An example of the mechanics, not medical advice.
"""
import argparse
from pathlib import Path

import numpy as np

import edgecore as ec

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "weights" / "datasets" / "breast_cancer.npz"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="adviser.h5")
    args = parser.parse_args(argv)

    data = np.load(DATA)
    x_train, y_train = data["x_train"], data["y_train"].astype(np.float32)
    x_test, y_test = data["x_test"], data["y_test"].astype(np.float32)
    model = ec.load(HERE / "health_mlp.h5")
    model.summary()

    keras_probs = np.load(HERE / "health_mlp_keras_outputs.npz")["probs"]
    ours = model.predict(x_test)
    print(f"largest difference from Keras's outputs: {np.abs(ours - keras_probs).max():.2e}")

    for layer in model.layers:
        layer.trainable = layer.name == "benign"  # only the last layer learns
    model.compile(optimizer=ec.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  metrics=["accuracy"])
    loss, accuracy = model.evaluate(x_test, y_test)
    print(f"before: test loss {loss:.4f}, accuracy {100 * accuracy:.1f} %")
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=2,
              validation_data=(x_test, y_test))
    loss, accuracy = model.evaluate(x_test, y_test)
    print(f"after:  test loss {loss:.4f}, accuracy {100 * accuracy:.1f} %")

    person = x_test[:1]  # one person's measurements
    p_benign = float(model.predict(person)[0, 0])
    names = [str(n) for n in data["feature_names"]]
    print("measurements: " + ", ".join(f"{n} {v:.3g}" for n, v in zip(names[:4], person[0])) + ", ...")
    print(f"estimate: {100 * p_benign:.1f} % benign -> "
          + ("looks benign; keep the usual check-ups" if p_benign >= 0.5
             else "looks malignant; see a doctor soon"))
    print("(an example of on-device learning, not medical advice)")
    model.save(args.out)
    print(f"saved {args.out} (keras.models.load_model opens it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
