"""`pip install .` on a machine without a C compiler (or without Python's headers) stops
with one message saying what to install (kernels/build_check.py, called by setup.py)."""
import importlib.util
import os
import subprocess
import sys

import pytest

from fixtures import REPO

spec = importlib.util.spec_from_file_location("build_check", REPO / "kernels" / "build_check.py")
build_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_check)


def test_no_compiler_says_what_to_install():
    message = build_check.missing_build_tools(["/nonexistent/cc", "-O2"])
    assert "no C compiler found" in message and "'/nonexistent/cc'" in message
    assert "sudo apt install build-essential python3-dev" in message
    assert "pkg install clang python" in message


def test_no_python_headers_says_what_to_install(tmp_path):
    message = build_check.missing_build_tools([sys.executable], include_dir=str(tmp_path))
    assert "Python.h not found" in message and "python3-dev" in message


def test_a_working_setup_passes():
    import shutil
    import sysconfig

    cc = (sysconfig.get_config_var("CC") or "cc").split()
    if shutil.which(cc[0]) is None or not os.path.exists(
            os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        pytest.skip("this machine cannot build C extensions itself")
    assert build_check.missing_build_tools(cc) is None


@pytest.mark.slow
def test_pip_install_without_a_compiler_fails_with_the_message(tmp_path):
    # With build isolation, as a user's `pip install` runs: pyproject's build requirements
    # (setuptools>=77 reads its SPDX license; the running env's setuptools may be older).
    proc = subprocess.run([sys.executable, "-m", "pip", "install", str(REPO), "--no-deps",
                           "--target", str(tmp_path / "t")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CC": "/nonexistent/cc"})
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "no C compiler found" in out and "build-essential python3-dev" in out
