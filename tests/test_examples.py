"""Smoke tests of examples/, each run as a user would from a clean clone (a subprocess in
an empty folder), on small data."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import REPO

EXAMPLES = REPO / "examples"


def run(args, cwd, **env):
    bin_dir = str(Path(sys.executable).parent)  # the `edgecore` command beside this Python
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
                               "PYTHON": sys.executable, **env})


def test_photo_classifier_in_python(tmp_path):
    pytest.importorskip("PIL")
    proc = run([sys.executable, EXAMPLES / "photo_classifier" / "photo_classifier.py",
                "--per-class", "16", "--classes", "2", "--epochs", "2", "--image-size", "32"],
               tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Found 32 files belonging to 2 classes." in proc.stdout
    assert "validation accuracy" in proc.stdout and (tmp_path / "clothes.h5").exists()
    assert proc.stdout.count("fashion_photos/") == 3  # three photos predicted


def test_photo_classifier_with_the_cli(tmp_path):
    pytest.importorskip("PIL")
    proc = run(["sh", EXAMPLES / "photo_classifier" / "train_and_predict.sh", "", "1", "32"],
               tmp_path, PER_CLASS="8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "clothes.h5").exists() and (tmp_path / "clothes.labels.txt").exists()
    assert proc.stdout.count("  1. ") == 4  # one photo of each of the 4 classes predicted


def test_health_adviser(tmp_path):
    proc = run([sys.executable, EXAMPLES / "health_adviser" / "health_adviser.py",
                "--epochs", "1", "--out", "adviser.h5"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diff = float(proc.stdout.split("largest difference from Keras's outputs: ")[1].split()[0])
    assert diff < 1e-5
    assert "before: test loss" in proc.stdout and "% benign" in proc.stdout
    assert (tmp_path / "adviser.h5").exists()


def test_predict_with_a_plain_keras_model(tmp_path):
    pytest.importorskip("PIL")
    proc = run([sys.executable, EXAMPLES / "predict_keras_model.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "squirrel_cls.png" and lines[1].split()[0] == "fox_squirrel"
    assert lines[4] == "orange.png" and lines[5].split()[0] == "orange"
