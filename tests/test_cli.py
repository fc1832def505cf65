"""python -m edgecore: the commands a user types, run as a user would (a subprocess)."""
import subprocess
import sys

from fixtures import FIXTURES


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "edgecore", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_info_prints_flavour_and_summary(tmp_path):
    proc = run("info", FIXTURES / "mobilenet_v2.k2.h5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "format: h5-keras2 (written by Keras 2.21.0)" in proc.stdout
    assert "Total params:" in proc.stdout and "Conv1 (Conv2D)" in proc.stdout


def test_a_bad_file_is_one_line_on_stderr_and_exit_2(tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("not a model")
    proc = run("info", bad, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "notes.h5" in proc.stderr


def test_lambda_model_is_refused_by_name(tmp_path):
    proc = run("info", FIXTURES / "bad_lambda.k3.h5", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Lambda" in proc.stderr and "bytecode" in proc.stderr


def test_a_closed_pipe_is_not_a_traceback(tmp_path):
    """`edgecore info model.h5 | head -1`: the reader leaves early."""
    proc = subprocess.Popen([sys.executable, "-m", "edgecore", "info",
                             str(FIXTURES / "mobilenet_v2.k3.h5")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as head does once it has its lines: every write now fails
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err


BLOCK_H5PY = "import sys; sys.modules['h5py'] = None; sys.argv[0] = 'edgecore'; "


def test_without_h5py_load_and_the_cli_work(tmp_path):
    """h5py is not a run-time dependency (issue 15): with it unimportable, load and the
    CLI read the file through edgecore's own HDF5 reader."""
    code = (BLOCK_H5PY + "import edgecore as ec\n"
            "print(ec.load(sys.argv[1]).count_params())\n")
    proc = subprocess.run([sys.executable, "-c", code, str(FIXTURES / "mobilenet_v2.k3.h5")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and int(proc.stdout.split()[-1]) > 0, proc.stderr
    cli = BLOCK_H5PY + "from edgecore.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", cli, "info", str(FIXTURES / "mobilenet_v2.k3.h5")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


# --- predict, train, info --memory, bench, --help: as a shell user runs them ---------------

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import edgecore as ec  # noqa: E402
from fixtures import REPO  # noqa: E402

MOBILENET = REPO / "weights/pretrained/mobilenet_v2_imagenet.h5"


def script(*args, cwd):
    """The installed `edgecore` command (beside this Python), as a shell user types it."""
    exe = Path(sys.executable).parent / "edgecore"
    if not exe.exists():
        exe = shutil.which("edgecore")
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("command", ["predict", "train", "info", "bench", "demo"])
def test_every_command_has_help(tmp_path, command):
    proc = run(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "usage: edgecore " + command in proc.stdout


def test_no_command_or_a_bad_option_is_usage_exit_2(tmp_path):
    assert run(cwd=tmp_path).returncode == 2
    proc = run("predict", MOBILENET, "x.png", "--top", "many", cwd=tmp_path)
    assert proc.returncode == 2 and "--top" in proc.stderr


def _real_photos(tmp_path, count=3):
    """Real photos (weights/pretrained/photos224_reference.npz) as PNG files, with Keras's
    probabilities for them."""
    from PIL import Image

    ref = np.load(REPO / "weights/pretrained/photos224_reference.npz")
    paths = []
    for k in range(count):
        path = tmp_path / f"{str(ref['names'][k]).rsplit('.', 1)[0]}.png"
        Image.fromarray(ref["x"][k]).save(path)
        paths.append(path)
    return paths, ref["probs_mobilenet_v2"][:count]


def test_predict_the_bundled_backbone_prints_imagenet_labels(tmp_path):
    pytest.importorskip("PIL")
    paths, probs = _real_photos(tmp_path)
    proc = script("predict", MOBILENET, *paths, "--top", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (REPO / "edgecore/data/imagenet_class_index.tsv").read_text().splitlines()
    names = [line.split("\t")[1].replace("_", " ") for line in text]
    for path, row in zip(paths, probs):
        assert str(path) in proc.stdout
        assert f"1. {names[int(row.argmax())]}" in proc.stdout  # Keras's top-1
    proc = run("predict", MOBILENET, tmp_path, "--json", "--top", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert [g["file"] for g in got] == sorted(str(p) for p in paths)  # a folder: sorted walk
    by_file = {g["file"]: g["top"][0] for g in got}
    for path, row in zip(paths, probs):
        assert by_file[str(path)]["index"] == int(row.argmax())
        assert abs(by_file[str(path)]["probability"] - row.max()) < 1e-4  # 224x224 already


def test_predict_errors_name_what_is_wrong(tmp_path):
    proc = run("predict", MOBILENET, tmp_path / "missing.jpg", cwd=tmp_path)
    assert proc.returncode == 2 and "missing.jpg" in proc.stderr and "Traceback" not in proc.stderr
    pytest.importorskip("PIL")  # without Pillow every photo gets the "pip install pillow" error
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nno")
    proc = run("predict", MOBILENET, tmp_path / "broken.png", cwd=tmp_path)
    assert proc.returncode == 2 and "broken.png" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run("predict", MOBILENET, tmp_path / "empty", cwd=tmp_path)
    assert proc.returncode == 2 and "no photos" in proc.stderr
    good = tmp_path / "labels.txt"
    good.write_text("a\nb\n")
    (tmp_path / "one").mkdir()
    _real_photos(tmp_path / "one", 1)
    proc = run("predict", MOBILENET, tmp_path / "one", "--labels", good, cwd=tmp_path)
    assert proc.returncode == 2 and "has 2 labels but the model has 1000" in proc.stderr


def test_predict_without_pillow_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['PIL'] = None; sys.argv[0] = 'edgecore'\n"
            "from edgecore.cli import main; sys.exit(main(sys.argv[1:]))")
    (tmp_path / "a.png").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-c", code, "predict", str(MOBILENET),
                           str(tmp_path / "a.png")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "edgecore[images]" in proc.stderr


def test_train_then_predict_with_its_labels(tmp_path):
    """The photo-folder job from the shell: train a head on real Fashion-MNIST photos,
    then predict with the saved model and the labels file written beside it."""
    pytest.importorskip("PIL")
    from photofolders import write_fashion_folder

    data = write_fashion_folder(tmp_path / "data", 60, classes=2)
    out = tmp_path / "clothes.h5"
    proc = script("train", MOBILENET, data, "--out", out, "--epochs", "2", "--image-size",
                  "32", "--batch-size", "8", "--validation-split", "0.25", "--threads", "1",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Epoch 2/2" in proc.stdout and "validation accuracy" in proc.stdout
    labels = (tmp_path / "clothes.labels.txt").read_text().splitlines()
    assert labels == ["# image_size=32,32 (what edgecore predict resizes to)",
                      "T-shirt_top", "Trouser"]
    model = ec.load(out)  # Keras-loadable .h5 (Keras's own reading: tests/test_save.py)
    assert model.output_shape == (None, 2)
    photo = sorted((data / "Trouser").iterdir())[0]
    proc = run("predict", out, photo, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)[0]["top"]
    assert {t["label"] for t in top} == {"T-shirt_top", "Trouser"}
    assert len(top) == 2 and abs(sum(t["probability"] for t in top) - 1) < 1e-5


def test_train_refuses_bad_input_with_exit_2(tmp_path):
    proc = run("train", MOBILENET, tmp_path / "nothere", "--out", tmp_path / "o.h5",
               cwd=tmp_path)
    assert proc.returncode == 2 and "nothere" in proc.stderr
    proc = run("train", MOBILENET, tmp_path, "--out", tmp_path / "o.keras", cwd=tmp_path)
    assert proc.returncode == 2 and ".h5" in proc.stderr


def test_train_grayscale_end_to_end(tmp_path):
    """--grayscale: grey photos, the backbone's first convolution folded to one channel; the
    saved model takes (H, W, 1), predicts grey photos, and equals the live model."""
    pytest.importorskip("PIL")
    from photofolders import write_fashion_folder

    data = write_fashion_folder(tmp_path / "data", 24, classes=2)
    out = tmp_path / "grey.h5"
    proc = run("train", MOBILENET, data, "--out", out, "--grayscale", "--image-size", "32",
               "--epochs", "1", "--batch-size", "8", "--validation-split", "0.25", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "validation accuracy" in proc.stdout
    saved = ec.load(out)
    assert saved.input_shape[-1] == 1 and saved.output_shape[-1] == 2
    photo = sorted((data / "Trouser").iterdir())[0]
    proc = run("predict", out, photo, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)[0]["top"]
    from edgecore import images
    x = np.empty((1, 32, 32, 1), np.float32)  # as `predict` reads it: 1 channel, bilinear
    images.resize_image(images.decode_image(photo, 1), (32, 32), out=x[0])
    assert abs(top[0]["probability"] - float(saved.predict(x)[0].max())) < 1e-5


def test_info_memory_prints_the_plan(tmp_path):
    proc = run("info", MOBILENET, "--memory", "--input-shape", "96,96,3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "memory plan for inputs [(1, 96, 96, 3)]" in proc.stdout
    proc = run("info", MOBILENET, "--memory", cwd=tmp_path)  # open input size
    assert proc.returncode == 2 and "--input-shape" in proc.stderr


def test_bench_with_threads(tmp_path):
    proc = run("bench", MOBILENET, "--threads", "1", "--input-shape", "32,32,3",
               "--repeats", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 thread(s)" in proc.stdout and "median" in proc.stdout
