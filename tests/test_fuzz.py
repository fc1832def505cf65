"""Hypothesis mutates valid model files; loading and predicting must either work or raise an
edgecore exception naming the file (STYLE.md 19).  Anything else fails: KeyError,
IndexError, TypeError, OSError/RuntimeError leaking from h5py, RecursionError, ...

Mutations start from the ~16 KB bn_after_conv_bias fixture in its three flavours: bytes
overwritten, flipped, inserted, deleted, truncated, and 64-bit words set to edge values
(sizes and addresses are 64-bit in these files); for .keras also the model.weights.h5 inside
the archive (re-zipped, so the damage reaches HDF5 rather than zipfile's CRC check); and
the model config text (JSON tokens replaced by sizes past every limit, wrong types, names of
other layers), of that fixture and of three graphs (two inputs, a nested model, a shared
layer).  Deterministic (derandomize) and in-process, so a crash kills the run; one
batch also runs in a subprocess with a timeout, which is how a hang or a segfault shows.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from badfiles import (BASE, FLAVOURS, H5_FLAVOURS, TOKENS, WORDS, apply_mutation,
                      copy_fixture, outcome, reference_input)

TESTS = Path(__file__).resolve().parent

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=200,
                suppress_health_check=[HealthCheck.too_slow])

position = st.integers(min_value=0, max_value=1 << 20)  # reduced modulo the file's length
byte_op = st.one_of(
    st.tuples(st.just("set"), position, st.integers(0, 255)),
    st.tuples(st.just("flip"), position, st.integers(0, 7)),
    st.tuples(st.just("word"), position, st.sampled_from(WORDS)),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), position, st.integers(1, 64)),
    st.tuples(st.just("truncate"), position),
)
text_op = st.one_of(
    st.tuples(st.just("token"), position, st.sampled_from(TOKENS)),
    st.tuples(st.just("char"), position, st.sampled_from(list('{}[]",:0123456789-.eE xn'))),
    st.tuples(st.just("cut"), position, st.integers(1, 40)),
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _check(workdir, flavour, target, ops, case=BASE):
    path = copy_fixture(workdir, case, flavour, name=f"mutant.{flavour}")
    apply_mutation(path, target, ops)
    outcome(path, reference_input(case, flavour))  # raises on anything but clean outcomes


@FUZZ
@given(flavour=st.sampled_from(H5_FLAVOURS), ops=st.lists(byte_op, min_size=1, max_size=6))
def test_fuzz_hdf5_bytes(workdir, flavour, ops):
    _check(workdir, flavour, "bytes", ops)


@FUZZ
@given(target=st.sampled_from(["bytes", "weights", "weights"]),
       ops=st.lists(byte_op, min_size=1, max_size=6))
def test_fuzz_keras_archive(workdir, target, ops):
    _check(workdir, "keras", target, ops)


# Config mutations also run on graphs with several inputs, a nested model, a shared layer.
CONFIG_CASES = (BASE, "graph_multi_input", "graph_nested_sequential", "graph_shared_conv")


@FUZZ
@given(case=st.sampled_from(CONFIG_CASES), flavour=st.sampled_from(FLAVOURS),
       ops=st.lists(text_op, min_size=1, max_size=4))
def test_fuzz_config_text(workdir, case, flavour, ops):
    _check(workdir, flavour, "config", ops, case)


# One batch in a fresh interpreter: the mutations are drawn from a seeded random.Random with
# the same operations, and the child reports one JSON line per file.  A hang shows as the
# timeout, a segfault as a negative return code.
_CHILD = """
import json, random, sys
sys.path[:0] = [{tests!r}]  # not the repo root: the installed edgecore, not its source
from pathlib import Path
import badfiles as b

rng = random.Random(20261124)
work = Path(sys.argv[1])
for i in range({count}):
    flavour = b.FLAVOURS[i % 3]
    target = ("config" if i % 4 == 0 else "weights" if flavour == "keras" and i % 2 else
              "bytes")
    ops = []
    for _ in range(rng.randint(1, 6)):
        pos = rng.randrange(1 << 20)
        if target == "config":
            ops.append(("token", pos, rng.choice(b.TOKENS)) if rng.random() < 0.7 else
                       ("cut", pos, rng.randint(1, 40)))
        else:
            kind = rng.choice(["set", "flip", "word", "insert", "delete", "truncate"])
            arg = {{"set": rng.randrange(256), "flip": rng.randrange(8),
                   "word": rng.choice(b.WORDS), "insert": rng.randbytes(rng.randint(1, 16)),
                   "delete": rng.randint(1, 64)}}.get(kind)
            ops.append((kind, pos) if arg is None else (kind, pos, arg))
    path = b.copy_fixture(work, b.BASE, flavour, name=f"child{{i}}.{{flavour}}")
    b.apply_mutation(path, target, ops)
    print(json.dumps({{"i": i, "file": path.name, "outcome": b.outcome(
        path, b.reference_input(b.BASE, flavour))}}), flush=True)
"""


def test_mutation_batch_in_a_subprocess(tmp_path):
    pytest.importorskip("h5py")  # the child rewrites config attributes with h5py
    count = 60
    code = _CHILD.format(tests=str(TESTS), count=count)
    try:
        # cwd: python -c puts it first on sys.path, and the repo root holds the source tree.
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        done = (exc.stdout or b"").decode(errors="replace").strip().splitlines()
        pytest.fail(f"mutation batch hung after {len(done)} files: {done[-1:]}")
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert proc.returncode == 0, (f"child died (rc {proc.returncode}) after "
                                  f"{lines[-1:] if lines else 'no files'}: {proc.stderr[-3000:]}")
    assert len(lines) == count
    outcomes = {line["outcome"] for line in lines}
    assert outcomes <= {"ok", "ModelFormatError", "UnsupportedLayerError", "ShapeError",
                        "FileNotFoundError"}, outcomes
    assert "ModelFormatError" in outcomes  # the mutations did reach the parser
