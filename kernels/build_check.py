"""What setup.py checks before compiling, so that a machine without a C compiler or without
Python's headers gets one message saying what to install instead of a compiler's traceback.
Kept apart from setup.py so a test can call it (tests/test_install_check.py)."""
import os
import shutil
import sysconfig

INSTALL_HINT = """\
Install a C compiler and Python's headers, then run pip again:
  Raspberry Pi OS / Debian / Ubuntu:  sudo apt install build-essential python3-dev python3-venv
  Termux (Android):                   pkg install clang python
  Fedora:                             sudo dnf install gcc python3-devel
  macOS:                              xcode-select --install"""


def missing_build_tools(compiler_cmd, include_dir=None):
    """None when the build can go on, else the message to stop with.  compiler_cmd: the
    command setuptools would run (e.g. ["gcc", "-pthread", ...] or from $CC)."""
    include_dir = sysconfig.get_paths()["include"] if include_dir is None else include_dir
    exe = compiler_cmd[0] if compiler_cmd else None
    if not exe or shutil.which(exe) is None:
        return (f"edgecore build: no C compiler found (looked for {exe!r}"
                f"{', from $CC' if os.environ.get('CC') else ''}): edgecore compiles its "
                f"kernels when it is installed.\n" + INSTALL_HINT)
    if not os.path.exists(os.path.join(include_dir, "Python.h")):
        return (f"edgecore build: Python's C headers are missing ({include_dir}/Python.h not "
                f"found): edgecore compiles its kernels when it is installed.\n" + INSTALL_HINT)
    return None
