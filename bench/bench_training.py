"""Training speed against Keras's own model.fit, measured in one run (issue: train the final
layers at a fraction of Keras's cost).

Recipe (Keras's transfer-learning tutorial): the bundled ImageNet MobileNetV2, frozen, up to
its pooled features + a new Dense(10, softmax) head; 320 real Fashion-MNIST images (32 per
class) resized to 224x224 RGB; Adam(1e-3), sparse categorical cross-entropy, batch 32,
10 epochs, one thread.  Both sides start from the same file (written once by
edgecore.transfer.new_head) and run in fresh processes: Keras with the interpreter named by
EDGECORE_KERAS_PYTHON (TensorFlow is never an edgecore dependency), edgecore with this one.
Reported: wall time of fit, peak RSS, final training accuracy, accuracy on 500 test images.

Also: the per-step time of the Dense head alone (batch 32 of 1280-d features, Adam) against
LiteRT's on-device training signature for the same head (a TFLite model with a `train`
signature, converted in the Keras process and run by TensorFlow's LiteRT interpreter).

    EDGECORE_KERAS_PYTHON=/path/to/keras-venv/bin/python pytest bench/bench_training.py -s
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgecore as ec
from measure import PEAK_RSS_SOURCE

REPO = Path(__file__).resolve().parent.parent
BACKBONE = REPO / "weights/pretrained/mobilenet_v2_imagenet.h5"
DATA = REPO / "weights/datasets/fashion_mnist_small.npz"
KERAS_PYTHON = os.environ.get("EDGECORE_KERAS_PYTHON")
THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
           "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
           "TF_ENABLE_ONEDNN_OPTS": "0"}

pytestmark = pytest.mark.skipif(not KERAS_PYTHON, reason="set EDGECORE_KERAS_PYTHON to a "
                                "python with TensorFlow/Keras to compare against model.fit")

KERAS_FIT = PEAK_RSS_SOURCE + """
import json, resource, sys, time
import numpy as np, tensorflow as tf, keras
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
keras.utils.set_random_seed(0)
d = np.load(sys.argv[2])
x, y, xt, yt = (d[k] for k in ("x", "y", "xt", "yt"))
x, xt = x.astype("float32"), xt.astype("float32")
model = keras.models.load_model(sys.argv[1])
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
t0 = time.perf_counter()
history = model.fit(x, y, batch_size=32, epochs=10, verbose=0)
fit_s = time.perf_counter() - t0
test = model.evaluate(xt, yt, batch_size=32, verbose=0)[1]
print(json.dumps({"fit_s": fit_s, "train_accuracy": history.history["accuracy"][-1],
                  "test_accuracy": test,
                  "peak_mb": peak_rss_mb()}))
"""

EDGECORE_FIT = PEAK_RSS_SOURCE + """
import json, resource, sys, time
import numpy as np, edgecore as ec
ec.utils.set_random_seed(0)
d = np.load(sys.argv[2])
x, y, xt, yt = (d[k] for k in ("x", "y", "xt", "yt"))
model = ec.load(sys.argv[1])
model.compile(optimizer=ec.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
t0 = time.perf_counter()
history = model.fit(x, y, batch_size=32, epochs=10, verbose=0)
fit_s = time.perf_counter() - t0
test = model.evaluate(xt, yt, return_dict=True)["accuracy"]
print(json.dumps({"fit_s": fit_s, "train_accuracy": history.history["accuracy"][-1],
                  "test_accuracy": test,
                  "peak_mb": peak_rss_mb()}))
"""

LITERT_HEAD_STEP = """
import json, sys, tempfile, time
import numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)

# Dense(10) on 1280-d features with Adam (Keras's update rule) in tf.Variables, so the
# converted model owns all its state (a Keras 3 optimizer's variables are not tracked).
class Head(tf.Module):
    def __init__(self):
        rng = np.random.default_rng(0)
        limit = np.sqrt(6 / (1280 + 10))
        self.w = tf.Variable(rng.uniform(-limit, limit, (1280, 10)).astype("float32"))
        self.b = tf.Variable(np.zeros(10, "float32"))
        self.slots = [tf.Variable(tf.zeros_like(v)) for v in (self.w, self.b) for _ in "mv"]
        self.step = tf.Variable(0.0)

    @tf.function(input_signature=[tf.TensorSpec([32, 1280], tf.float32),
                                  tf.TensorSpec([32], tf.int32)])
    def train(self, x, y):
        with tf.GradientTape() as tape:
            logits = tf.matmul(x, self.w) + self.b
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, [self.w, self.b])
        self.step.assign_add(1.0)
        alpha = 1e-3 * tf.sqrt(1 - 0.999 ** self.step) / (1 - 0.9 ** self.step)
        for g, v, m, s in zip(grads, (self.w, self.b), self.slots[0::2], self.slots[1::2]):
            m.assign_add((g - m) * 0.1)
            s.assign_add((g * g - s) * 0.001)
            v.assign_sub(alpha * m / (tf.sqrt(s) + 1e-7))
        return {"loss": loss}

head = Head()
with tempfile.TemporaryDirectory() as d:
    tf.saved_model.save(head, d, signatures={"train": head.train.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_saved_model(d, signature_keys=["train"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    converter.experimental_enable_resource_variables = True
    model = converter.convert()
interpreter = tf.lite.Interpreter(model_content=model, num_threads=1)
train = interpreter.get_signature_runner("train")
rng = np.random.default_rng(1)
x = rng.standard_normal((32, 1280)).astype("float32")
y = rng.integers(0, 10, 32).astype("int32")
for _ in range(20):
    train(x=x, y=y)
times = []
for _ in range(300):
    t0 = time.perf_counter(); train(x=x, y=y); times.append(time.perf_counter() - t0)
print(json.dumps({"step_ms": float(np.median(times)) * 1e3}))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The initial model file and the data, shared by both sides."""
    tmp = tmp_path_factory.mktemp("fit")
    data = np.load(DATA)
    y_train, y_test = data["y_train"], data["y_test"]
    pick = np.concatenate([np.flatnonzero(y_train == c)[:32] for c in range(10)])
    test_pick = np.arange(500)
    arrays = {"x": ec.utils.resize_images(data["x_train"][pick], 224), "y": y_train[pick],
              "xt": ec.utils.resize_images(data["x_test"][test_pick], 224),
              "yt": y_test[test_pick]}
    np.savez(tmp / "data.npz", **arrays)
    ec.utils.set_random_seed(0)
    ec.transfer.new_head(ec.load(BACKBONE), classes=10, seed=0).save(tmp / "initial.h5")
    return tmp


def _run(python, code, *args):
    import tempfile

    env = dict(os.environ, **THREADS)
    with tempfile.TemporaryDirectory() as cwd:  # never the repo root: its source tree
        proc = subprocess.run([python, "-c", textwrap.dedent(code), *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=3600, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fit_is_at_least_10x_faster_than_keras_at_the_same_accuracy(setup):
    keras = _run(KERAS_PYTHON, KERAS_FIT, setup / "initial.h5", setup / "data.npz")
    ours = _run(sys.executable, EDGECORE_FIT, setup / "initial.h5", setup / "data.npz")
    print(f"\nfit, 320 images 224x224, 10 epochs, batch 32, Adam, 1 thread:"
          f"\n  Keras    {keras['fit_s']:7.1f} s   train accuracy {keras['train_accuracy']:.3f}"
          f"   test {keras['test_accuracy']:.3f}   peak RSS {keras['peak_mb']:.0f} MiB"
          f"\n  edgecore {ours['fit_s']:7.1f} s   train accuracy {ours['train_accuracy']:.3f}"
          f"   test {ours['test_accuracy']:.3f}   peak RSS {ours['peak_mb']:.0f} MiB"
          f"\n  edgecore is {keras['fit_s'] / ours['fit_s']:.1f}x faster")
    assert keras["fit_s"] >= 10 * ours["fit_s"]
    # Different shuffles and dropout streams: within noise of 320 samples / 500 tests.
    assert abs(ours["train_accuracy"] - keras["train_accuracy"]) <= 0.06
    assert abs(ours["test_accuracy"] - keras["test_accuracy"]) <= 0.05


def test_dense_head_step_beside_litert_training_signature():
    import time

    litert = _run(KERAS_PYTHON, LITERT_HEAD_STEP)
    model = ec.load(BACKBONE)
    # At the pooled features, like LiteRT's head: no Dropout in either step.
    head = ec.transfer.new_head(model, classes=10, at="global_average_pooling2d", seed=0)
    head.compile(optimizer=ec.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    trainer = head.trainer
    rng = np.random.default_rng(1)
    features = [rng.standard_normal((32, 1280)).astype(np.float32)]
    labels = rng.integers(0, 10, 32).astype(np.int64)
    for _ in range(20):
        trainer.step(features, labels)
    times = []
    for _ in range(300):
        t0 = time.perf_counter()
        trainer.step(features, labels)
        times.append(time.perf_counter() - t0)
    ours = float(np.median(times)) * 1e3
    print(f"\nDense head training step (batch 32, 1280 -> 10, Adam), median:"
          f"\n  LiteRT train signature {litert['step_ms']:.3f} ms"
          f"\n  edgecore               {ours:.3f} ms  ({litert['step_ms'] / ours:.2f}x)")
