"""model.profile and `edgecore bench --profile`: per op of the plan, what ran, how long,
its share and its rate."""
import subprocess
import sys

import numpy as np

import edgecore as ec
from fixtures import FIXTURES

SMALL = FIXTURES / "mobilenet_v2.k3.h5"


def test_profile_reports_every_op_with_its_flops_and_shape(capsys):
    model = ec.load(SMALL)
    x = np.random.default_rng(0).uniform(0, 1, (2, 96, 96, 3)).astype(np.float32)
    profile = model.profile(x, repeats=5)
    plan = model._plan_for([x.shape])
    assert [(t.op, t.layer) for t in profile.ops] == plan.op_names
    first = profile.ops[0]
    assert first.op == "conv2d" and first.layer == "Conv1" and first.shape == (2, 48, 48, 16)
    # Conv1 of this MobileNetV2 (alpha 0.5): 3x3x3 -> 16 channels, stride 2
    assert first.flops == 2 * 2 * 48 * 48 * 16 * 3 * 3 * 3
    assert all(t.seconds > 0 for t in profile.ops)
    assert profile.total_seconds > 0  # (per-op medians need not add up to the runs' median)
    shares = sum(share for _, _, share, _, _ in profile.by_kind())
    assert abs(shares - 1.0) < 1e-9
    out = capsys.readouterr().out
    assert "GFLOP/s" in out and "Conv1" in out and "by op kind" in out
    np.testing.assert_array_equal(model.predict(x), ec.load(SMALL).predict(x))  # unchanged


def test_bench_command_profiles(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgecore", "bench", str(SMALL), "--profile",
                           "--repeats", "3", "--top", "5"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") > 8 and "by op kind" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "edgecore", "bench", str(SMALL), "--repeats", "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "median" in proc.stdout
