"""A loss on a feature-map output (N, H, W, C): Keras averages the per-pixel losses over
N*H*W (sum_over_batch_size).  The step plan once sized its per-sample loss buffer (N,)
while the loss kernel wrote N*H*W rows into it: a heap overflow (free(): invalid next
size at exit).  Run in a fresh process, so a corruption fails this test, not the session."""
import subprocess
import sys

from fixtures import FIXTURES

SCRIPT = """
import sys, numpy as np, edgecore as ec
m = ec.load(sys.argv[1], num_threads=1)
rng = np.random.default_rng(1)
x = rng.uniform(0, 1, (4, 9, 7, 5)).astype(np.float32)
y = rng.standard_normal((4, 9, 7, 4)).astype(np.float32)
pred = m.predict(x).astype(np.float64)
keras_loss = float(np.mean(np.mean((pred - y) ** 2, axis=-1)))
m.compile(optimizer=ec.optimizers.SGD(0.0), loss="mse")
loss = m.train_on_batch(x, y)
assert abs(loss - keras_loss) <= 1e-5 * keras_loss, (loss, keras_loss)
ev = m.evaluate(x, y, batch_size=3)
assert abs(ev - keras_loss) <= 1e-5 * keras_loss, (ev, keras_loss)
m.compile(optimizer=ec.optimizers.SGD(1e-2), loss="mse")
h = m.fit(x, y, epochs=3, batch_size=4, verbose=0)
assert h.history["loss"][-1] < h.history["loss"][0]
print("ok")
"""


def test_mse_on_a_feature_map_output_is_keras_mean_and_stays_in_bounds():
    proc = subprocess.run([sys.executable, "-c", SCRIPT,
                           str(FIXTURES / "conv2d_3x3_same_s1_d1.k3.h5")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split()[-1:] == ["ok"], \
        (proc.returncode, proc.stderr[-1500:])
