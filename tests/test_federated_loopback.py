"""The real run: a Flower SuperLink and SuperNodes as separate processes on 127.0.0.1,
started by examples/federated/run_loopback.py (the documented command), with faults."""
import importlib.util

import numpy as np
import pytest

pytest.importorskip("flwr", reason="needs edgecore[federated] (flwr)")

import edgecore as ec  # noqa: E402
from fixtures import REPO  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _only_when_asked(request):
    """Minutes of real processes: run only when slow tests are selected explicitly."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the loopback run takes minutes: pytest -m slow "
                    "tests/test_federated_loopback.py")


def _runner():
    spec = importlib.util.spec_from_file_location(
        "run_loopback", REPO / "examples/federated/run_loopback.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_three_supernodes_on_loopback_reach_the_central_accuracy(tmp_path):
    runner = _runner()
    summary = runner.run(runner.parse(["--clients", "3", "--rounds", "10", "--local-epochs",
                                       "2", "--workdir", str(tmp_path), "--port", "19291"]))
    rounds = sorted(summary["evaluate"], key=int)
    assert [int(r) for r in rounds] == list(range(1, 11))
    for r in rounds:
        assert summary["train"][r]["sent-array-bytes"] == 4 * (1280 * 10 + 10)
    final = summary["evaluate"][rounds[-1]]["eval_accuracy"]
    central = summary["central"]["test_accuracy"]
    assert final >= central - 0.02, (final, central)
    for k in range(3):  # each client kept its features and wrote a complete checkpoint
        assert len(list((tmp_path / f"cache-{k}").glob("features-train-*.npy"))) == 1
        assert ec.load(tmp_path / f"client-{k}.h5").output_shape == (None, 10)


def test_a_killed_a_late_and_a_tiny_client_do_not_break_the_run(tmp_path):
    runner = _runner()
    summary = runner.run(runner.parse([
        "--clients", "4", "--rounds", "4", "--local-epochs", "1", "--kill", "3",
        "--late", "2", "--tiny", "1", "--no-central", "--workdir", str(tmp_path),
        "--port", "19391"]))
    rounds = sorted(summary["evaluate"], key=int)
    assert [int(r) for r in rounds] == [1, 2, 3, 4]
    assert summary["evaluate"][rounds[-1]]["eval_accuracy"] > 0.5
    logs = tmp_path / "logs"
    # the late SuperNode joined after round 1 and was sent work
    assert (logs / "supernode-2.log").read_text().count("Receiving: train message") >= 1
    # the killed client's checkpoint, if it got that far, is a complete Keras file
    checkpoint = tmp_path / "client-3.h5"
    if checkpoint.exists():
        assert ec.load(checkpoint).output_shape == (None, 10)
    for kept in (tmp_path / "cache-3").glob("features-*.npy"):  # atomic too: complete
        assert np.load(kept).shape[1:] == (1280,)
    server = (logs / "flwr-run.log").read_text()
    assert "failures" in server
    tiny = np.load(tmp_path / "final-head.npz")
    assert tiny["arr_0"].shape == (1280, 10)
