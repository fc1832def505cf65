"""edgecore.federated: the Flower ClientApp/ServerApp around a HeadClient, run in-process
(the ClientApps called directly by a local Grid that records everything the server
receives).  The multi-process run on loopback is tests/test_federated_loopback.py (slow)."""
import json
import subprocess
import sys

import numpy as np
import pytest

flwr = pytest.importorskip("flwr", reason="needs edgecore[federated] (flwr)")

import edgecore as ec  # noqa: E402
from fixtures import REPO  # noqa: E402

from edgecore.federated import (HeadClient, class_skewed_split, client_slice,  # noqa: E402
                                make_client_app, make_server_app, make_strategy)
from flwr.app import (ArrayRecord, ConfigRecord, Context, Message, MetricRecord,  # noqa: E402
                      RecordDict)
from flwr.serverapp import Grid  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402
from flwr.serverapp import strategy as strategies  # noqa: E402

DATA = REPO / "weights/datasets/fashion_mnist_small.npz"
BACKBONE = REPO / "weights/pretrained/mobilenet_v2_imagenet.h5"
SIZE = 32  # small images keep the default suite fast; the loopback run uses 96


def test_the_split_is_disjoint_complete_and_class_skewed():
    y = np.load(DATA)["y_train"]
    parts = class_skewed_split(y, 3, skew=0.8, seed=0)
    together = np.concatenate(parts)
    assert len(together) == len(y) and len(np.unique(together)) == len(y)
    for k, part in enumerate(parts):
        counts = np.bincount(y[part], minlength=10)
        home = [c for c in range(10) if c % 3 == k]
        assert all(counts[c] == 240 for c in home)  # 80 % of each home class's 300
        assert all(counts[c] in (30,) for c in range(10) if c not in home)
    assert [len(p) for p in class_skewed_split(y, 1)] == [len(y)]
    with pytest.raises(ValueError, match="skew"):
        class_skewed_split(y, 3, skew=1.5)


def _client(k=0, clients=3, limit=24, tmp=None, **kw):
    x_train, y_train, x_test, y_test = client_slice(DATA, k, clients, limit=limit)
    return HeadClient(BACKBONE, 10, ec.utils.resize_images(x_train, SIZE), y_train,
                      ec.utils.resize_images(x_test[:16], SIZE), y_test[:16],
                      cache_dir=tmp, **kw)


def test_only_the_head_travels_and_set_installs_it(tmp_path):
    client = _client(tmp=tmp_path)
    arrays = client.get_trainable()
    assert [a.shape for a in arrays] == [(1280, 10), (10,)]
    frozen_before = client.model.non_trainable_weights
    new = [np.full_like(a, 0.01 * (i + 1)) for i, a in enumerate(arrays)]
    client.set_trainable(new)
    for got, want in zip(client.model.get_layer("head").get_weights(), new):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(client.model.non_trainable_weights, frozen_before):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="shape"):
        client.set_trainable([arrays[0].T, arrays[1]])
    with pytest.raises(ValueError, match="arrays given"):
        client.set_trainable(arrays[:1])


def test_rounds_after_the_first_run_only_the_head(tmp_path):
    client = _client(tmp=tmp_path)
    first = client.fit(1)
    assert first["num-examples"] == 24 and len(list(tmp_path.glob("features-train-*.npy"))) == 1
    again = _client(tmp=tmp_path)  # a new ClientApp process for the next round
    again.model.trainer.boundary_of = None  # the frozen base must not run
    again.set_trainable(client.get_trainable())
    assert np.isfinite(again.fit(1)["train_loss"])


def test_checkpoint_is_a_complete_keras_file(tmp_path):
    client = _client(tmp=tmp_path, checkpoint=tmp_path / "client.h5")
    client.fit(1)
    saved = ec.load(tmp_path / "client.h5")
    for got, want in zip(saved.get_layer("head").get_weights(), client.get_trainable()):
        np.testing.assert_array_equal(got, want)
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.fixture(autouse=True)
def _task_identity():
    """In-process, this is what the SuperLink/SuperNode runtimes set for each process."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


class LocalGrid(Grid):
    """Delivers each message to a ClientApp in this process and keeps every reply: what
    the server receives."""

    def __init__(self, apps):
        self.apps, self.received, self._run = apps, [], None

    def set_run(self, run):
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type, group_id=group_id)

    def get_node_ids(self):
        return list(self.apps)

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for i, message in enumerate(messages):
            message.metadata.__dict__["_message_id"] = f"m{len(self.received)}-{i}"
            app, context = self.apps[message.metadata.dst_node_id]
            TaskIdentity._node_id = message.metadata.dst_node_id  # now the client's process
            try:
                reply = app(message, context)
            finally:
                TaskIdentity._node_id = 0
            self.received.append(reply)
            replies.append(reply)
        return replies


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """Three clients made once for the module (loading the backbone is most of a test's
    time); each run installs the server's head first, so runs do not leak into each other."""
    root = tmp_path_factory.mktemp("clients")
    return {k: _client(k, 3, 24, root / f"c{k}") for k in range(3)}


def _grid(made, run_config=None):
    apps = {}
    for k in made:
        app = make_client_app(lambda context, k=k: made[k])
        apps[1000 + k] = (app, Context(1, 1000 + k, {}, RecordDict(), run_config or {}))
    return LocalGrid(apps)


def _run(tmp_path, grid, **config):
    run_config = {"backbone": str(BACKBONE), "num-server-rounds": 2, "local-epochs": 2,
                  "min-train-nodes": 3, "min-evaluate-nodes": 3, "min-available-nodes": 3,
                  "summary": str(tmp_path / "summary.json"), **config}
    make_server_app()(grid, Context(1, 0, {}, RecordDict(), run_config))
    return json.loads((tmp_path / "summary.json").read_text())


def test_the_server_receives_only_head_weights_and_scalar_metrics(tmp_path, three):
    clients, grid = three, _grid(three)
    summary = _run(tmp_path, grid)
    assert sorted(map(int, summary["evaluate"])) == [1, 2]
    assert summary["head_shapes"] == [[1280, 10], [10]]
    head_bytes = 4 * (1280 * 10 + 10)
    train_replies = [m for m in grid.received if "arrays" in m.content]
    assert len(train_replies) == 6 and len(grid.received) == 12  # 3 train + 3 evaluate, x2
    private = []
    for client in clients.values():
        private += [client.x_train, client.x_test, client.y_train, client.y_test,
                    client.features("train").caches[0].array]
    for reply in grid.received:
        assert not reply.has_error()
        content = reply.content
        assert set(content.keys()) <= {"arrays", "metrics"}
        assert not content.config_records
        metrics = content["metrics"]
        assert isinstance(metrics, MetricRecord)
        assert all(isinstance(v, (int, float)) for v in metrics.values())  # scalars only
        if "arrays" in content:
            arrays = content["arrays"].to_numpy_ndarrays()
            assert [a.shape for a in arrays] == [(1280, 10), (10,)]
            assert sum(a.nbytes for a in arrays) == head_bytes == metrics["sent-array-bytes"]
            for a in arrays:  # no image, label or feature values among them
                assert not any(a.shape == p.shape for p in private)
    # what each client sent is its own trained head
    last = [m for m in train_replies][-3:]
    by_node = {m.metadata.src_node_id: m for m in last}
    for k, client in clients.items():
        for got, want in zip(by_node[1000 + k].content["arrays"].to_numpy_ndarrays(),
                             client.get_trainable()):
            assert got.shape == want.shape


def test_fedadam_and_dp_are_flower_strategies(tmp_path, three):
    assert isinstance(make_strategy({}), strategies.FedAvg)
    assert isinstance(make_strategy({"strategy": "fedadam"}), strategies.FedAdam)
    dp = make_strategy({"dp-noise": 0.1, "dp-clip": 5.0, "min-train-nodes": 3})
    assert isinstance(dp, strategies.DifferentialPrivacyServerSideFixedClipping)
    with pytest.raises(ValueError, match="strategy"):
        make_strategy({"strategy": "mine"})
    summary = _run(tmp_path, _grid(three), strategy="fedadam", **{"num-server-rounds": 1})
    assert summary["strategy"] == "fedadam" and summary["evaluate"]["1"]["eval_accuracy"] >= 0
    summary = _run(tmp_path, _grid(three), **{"num-server-rounds": 1, "dp-noise": 0.01})
    assert np.isfinite(summary["evaluate"]["1"]["eval_loss"])


def test_local_dp_noises_what_leaves_the_client(tmp_path, three):
    """Flower's LocalDpMod, switched on by the node config: the head that leaves is the
    trained one clipped and noised, still only the head."""
    grid = _grid(three)
    for k in grid.apps:
        app, context = grid.apps[k]
        context.node_config.update({"local-dp-epsilon": 1.0, "local-dp-clip": 1.0})
    _run(tmp_path, grid, **{"num-server-rounds": 1})
    replies = [m for m in grid.received if "arrays" in m.content]
    assert len(replies) == 3
    for reply in replies:
        sent = reply.content["arrays"].to_numpy_ndarrays()
        mine = three[reply.metadata.src_node_id - 1000].get_trainable()
        assert [a.shape for a in sent] == [a.shape for a in mine]
        assert not all(np.array_equal(a, b) for a, b in zip(sent, mine))


def test_a_tiny_data_client_takes_part(tmp_path, three):
    clients = {0: three[0], 1: three[1], 2: _client(2, 3, 3, tmp_path)}
    grid = _grid(clients)
    summary = _run(tmp_path, grid, **{"num-server-rounds": 1})
    tiny = [m for m in grid.received if m.metadata.src_node_id == 1002 and "arrays" in m.content]
    assert len(tiny) == 1 and tiny[0].content["metrics"]["num-examples"] == 3
    assert np.isfinite(summary["train"]["1"]["train_loss"])
    assert summary["evaluate"]["1"]["eval_accuracy"] > 0


def test_without_flower_the_import_names_the_extra():
    code = ("import sys; sys.modules['flwr'] = None\n"
            "try:\n    import edgecore.federated\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(REPO.parent)).stdout
    assert 'pip install "edgecore[federated]"' in out
