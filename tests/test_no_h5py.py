"""edgecore runs with numpy alone (issue 15): in a fresh interpreter where `import h5py`
fails (a sys.meta_path finder refuses it, as on Termux where there is no h5py), load each
flavour (.h5 Keras 2 and 3, .keras), predict, fit with checkpoints, save, and load the
saved file again.  The child also reports whether anything imported h5py."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "weights" / "fixtures"

CHILD = r"""
import json, sys
class NoH5py:
    def find_spec(self, name, path=None, target=None):
        if name == "h5py" or name.startswith("h5py."):
            raise ImportError("h5py is blocked in this test")
        return None
sys.meta_path.insert(0, NoH5py())

import numpy as np
import edgecore as ec

fixtures, tmp = sys.argv[1], sys.argv[2]
out = {}
for flavour in ("k2.h5", "k3.h5", "keras"):
    model = ec.load(f"{fixtures}/bn_after_dense.{flavour}")
    ref = np.load(f"{fixtures}/bn_after_dense.{'k3' if flavour == 'keras' else flavour[:2]}.npz")
    x = ref[ref.files[0]]
    out[flavour] = float(np.abs(model.predict(x)).sum())
model = ec.load(f"{fixtures}/bn_after_dense.k3.h5")
model.compile(optimizer="adam", loss="mse")
x = np.random.default_rng(0).standard_normal((16,) + tuple(model.input_shape[1:])).astype("float32")
y = np.zeros((16,) + tuple(model.output_shape[1:]), "float32")
history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, checkpoint=f"{tmp}/ckpt.h5")
model.save(f"{tmp}/saved.h5")
again = ec.load(f"{tmp}/saved.h5")
out["same_after_save"] = (
    all(all(np.array_equal(a, b) for a, b in zip(l1.get_weights(), l2.get_weights()))
        for l1, l2 in zip(model.layers, again.layers))
    and bool(np.allclose(again.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)))
resumed = ec.load(f"{tmp}/ckpt.h5")
out["checkpoint_loads"] = resumed.predict(x).shape == model.predict(x).shape
out["h5py_imported"] = any(m == "h5py" or m.startswith("h5py.") for m in sys.modules)
print(json.dumps(out))
"""


def test_load_predict_fit_save_without_h5py(tmp_path):
    result = subprocess.run([sys.executable, "-c", CHILD, str(FIXTURES), str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["h5py_imported"] is False
    assert out["same_after_save"] is True and out["checkpoint_loads"] is True
    assert all(out[f] > 0 for f in ("k2.h5", "k3.h5", "keras"))
