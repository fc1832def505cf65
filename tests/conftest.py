"""Shared pytest setup.

pyproject runs pytest with --import-mode=importlib, which does not put tests/ on sys.path
(tests/ deliberately has no __init__.py), so it goes on here for `shapes`, `fixtures` and
the `reference` package.  The repository root is NOT added: the tests import the installed
edgecore (`pip install .` or `pip install -e .`), never the uncompiled source tree.
"""
import os
import sys

import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


def pytest_generate_tests(metafunc):
    # Tests asking for `gemm_isa` run once per GEMM variant this CPU supports, unless they
    # parametrize it themselves (GEMM cases depend on each variant's tile).
    explicit = any("gemm_isa" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize"))
    if "gemm_isa" in metafunc.fixturenames and not explicit:
        from edgecore import _kernels
        metafunc.parametrize("gemm_isa", _kernels.available_gemm_isas(), indirect=True)


@pytest.fixture
def gemm_isa(request):
    """Select a GEMM variant for one test, restore the previous one after; yields
    (name, MR, NR).  Weights must be packed after selecting (NR is the variant's)."""
    from edgecore import _kernels
    previous = _kernels.gemm_isa()[0]
    _kernels.set_gemm_isa(request.param)
    try:
        yield _kernels.gemm_isa()
    finally:
        _kernels.set_gemm_isa(previous)


@pytest.fixture(scope="session")
def keras_py():
    """A Python with TensorFlow and Keras (EDGECORE_KERAS_PYTHON, or this one if it has
    them) for the tests marked `keras`; without one those tests are skipped."""
    from fixtures import keras_python       # reads the fixture manifest: only when asked for
    python = keras_python()
    if python is None:
        pytest.skip("no TensorFlow/Keras python (set EDGECORE_KERAS_PYTHON)")
    return python


@pytest.fixture(autouse=True, scope="session")
def _children_start_outside_the_source_tree(tmp_path_factory):
    """`python -c` and `python -m` put their working directory first on sys.path; from the
    repository root that is the uncompiled source tree, so a child process would import it
    instead of the installed edgecore (it only works with an editable install).  Every test
    runs from an empty directory, so a subprocess started without cwd= is safe too."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(previous)
