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
