"""Flower apps (Message API, flwr 1.42): a ClientApp around HeadClient and a ServerApp
running one of Flower's strategies.  Nothing here does networking; Flower does.

Client settings come from the SuperNode's --node-config (or a simulation's node config):
  data             the .npz (x_train, y_train, x_test, y_test) the slice is taken from
  backbone         the Keras backbone file
  partition-id     this client's slice, 0..num-partitions-1
  num-partitions   how many slices the data is split into
  skew             share of each class on its home client (default 0.8)
  image-size       images are resized to this square size, RGB (default 96)
  limit            keep only the first `limit` training samples (a tiny-data client)
  cache-dir        where the backbone's features are kept across rounds (default: none)
  checkpoint       a .h5 saved atomically after each local fit (default: none)
  local-dp-epsilon > 0: Flower's LocalDpMod clips this client's update and adds noise
                   before it leaves (with local-dp-clip, local-dp-sensitivity, local-dp-delta)
Server settings come from the run config (pyproject [tool.flwr.app.config]).
"""
import json
import os
import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import LocalDpMod
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp import strategy as strategies

from .. import load, transfer, utils
from .client import HeadClient, trainable_arrays
from .data import client_slice


def _setting(config, key, default=None):
    value = config.get(key, default)
    return default if value == "" else value


def client_from_config(node_config, run_config):
    """The HeadClient a node's configuration describes."""
    data = _setting(node_config, "data")
    backbone = _setting(node_config, "backbone")
    if data is None or backbone is None:
        raise ValueError("the SuperNode needs --node-config with data=... and backbone=... "
                         "(see edgecore/federated/apps.py)")
    limit = _setting(node_config, "limit")
    x_train, y_train, x_test, y_test = client_slice(
        data, int(node_config.get("partition-id", 0)), int(node_config.get("num-partitions", 1)),
        float(node_config.get("skew", 0.8)), int(node_config.get("split-seed", 0)),
        None if limit is None else int(limit))
    size = int(node_config.get("image-size", 96))
    return HeadClient(backbone, int(run_config.get("classes", 10)),
                      utils.resize_images(x_train, size), y_train,
                      utils.resize_images(x_test, size), y_test,
                      learning_rate=float(run_config.get("learning-rate", 1e-3)),
                      batch_size=int(run_config.get("batch-size", 32)),
                      seed=int(node_config.get("partition-id", 0)),
                      cache_dir=_setting(node_config, "cache-dir"),
                      checkpoint=_setting(node_config, "checkpoint"))


def _metrics(values, seconds):
    return MetricRecord({**values, "seconds": float(seconds)})


def local_dp_mod(msg, context, call_next):
    """Flower's LocalDpMod on train replies when the node config asks for it
    (local-dp-epsilon > 0); evaluate replies carry no arrays and pass as they are."""
    config = context.node_config
    epsilon = float(config.get("local-dp-epsilon", 0.0))
    if epsilon <= 0 or msg.metadata.message_type.split(".")[0] != "train":
        return call_next(msg, context)
    mod = LocalDpMod(clipping_norm=float(config.get("local-dp-clip", 10.0)),
                     sensitivity=float(config.get("local-dp-sensitivity", 1.0)),
                     epsilon=epsilon, delta=float(config.get("local-dp-delta", 1e-5)))
    return mod(msg, context, call_next)


def make_client_app(client_factory=None):
    """A ClientApp: on 'train' it installs the received arrays, fits the head for
    config['local-epochs'] epochs and replies with the trainable arrays and scalar metrics;
    on 'evaluate' it installs them and replies with held-out loss and accuracy.
    client_factory(context) -> HeadClient (default: from the node config)."""
    factory = client_factory or (lambda ctx: client_from_config(ctx.node_config, ctx.run_config))
    app = ClientApp(mods=[local_dp_mod])

    @app.train()
    def train(msg: Message, context: Context):
        start = time.perf_counter()
        client = factory(context)
        client.set_trainable(msg.content["arrays"].to_numpy_ndarrays())
        config = msg.content.get("config", ConfigRecord({}))
        metrics = client.fit(int(config.get("local-epochs", 1)))
        arrays = client.get_trainable()
        metrics["sent-array-bytes"] = int(sum(a.nbytes for a in arrays))
        content = RecordDict({"arrays": ArrayRecord(arrays),
                              "metrics": _metrics(metrics, time.perf_counter() - start)})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context):
        start = time.perf_counter()
        client = factory(context)
        client.set_trainable(msg.content["arrays"].to_numpy_ndarrays())
        metrics = client.evaluate()
        content = RecordDict({"metrics": _metrics(metrics, time.perf_counter() - start)})
        return Message(content=content, reply_to=msg)

    return app


def make_strategy(run_config):
    """Flower's FedAvg or FedAdam (run config 'strategy'), optionally inside Flower's
    server-side fixed-clipping differential privacy ('dp-noise' > 0)."""
    common = dict(fraction_train=float(run_config.get("fraction-train", 1.0)),
                  fraction_evaluate=float(run_config.get("fraction-evaluate", 1.0)),
                  min_train_nodes=int(run_config.get("min-train-nodes", 2)),
                  min_evaluate_nodes=int(run_config.get("min-evaluate-nodes", 2)),
                  min_available_nodes=int(run_config.get("min-available-nodes", 2)))
    name = str(run_config.get("strategy", "fedavg")).lower()
    if name == "fedavg":
        strategy = strategies.FedAvg(**common)
    elif name == "fedadam":
        strategy = strategies.FedAdam(**common, eta=float(run_config.get("eta", 1e-2)),
                                      eta_l=float(run_config.get("learning-rate", 1e-3)))
    else:
        raise ValueError(f"strategy must be 'fedavg' or 'fedadam', got {name!r}")
    noise = float(run_config.get("dp-noise", 0.0))
    if noise > 0:
        strategy = strategies.DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=noise,
            clipping_norm=float(run_config.get("dp-clip", 1.0)),
            num_sampled_clients=int(run_config.get("min-train-nodes", 2)))
    return strategy


def initial_arrays(backbone, classes, seed=0):
    """The head every client starts from (Glorot-uniform kernel, zero bias, as Keras)."""
    return trainable_arrays(transfer.new_head(load(backbone), classes=classes, seed=seed))


def make_server_app():
    """A ServerApp: R rounds of the run config's strategy from a fresh head, each round
    evaluated on every sampled client's held-out data; writes a JSON summary (per round:
    aggregated train/evaluate metrics; wall time) to run config 'summary' if given."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context):
        config = context.run_config
        start = time.perf_counter()
        arrays = initial_arrays(config["backbone"], int(config.get("classes", 10)))
        strategy = make_strategy(config)
        result = strategy.start(
            grid=grid, initial_arrays=ArrayRecord(arrays),
            num_rounds=int(config.get("num-server-rounds", 3)),
            timeout=float(config.get("round-timeout", 600)),
            train_config=ConfigRecord({"local-epochs": int(config.get("local-epochs", 1))}))
        summary = {
            "strategy": str(config.get("strategy", "fedavg")),
            "rounds": int(config.get("num-server-rounds", 3)),
            "wall_seconds": time.perf_counter() - start,
            "train": {int(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
            "evaluate": {int(r): dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
            "head_shapes": [list(a.shape) for a in result.arrays.to_numpy_ndarrays()],
        }
        path = _setting(config, "summary")
        if path:
            temporary = f"{path}.{os.getpid()}.tmp"
            with open(temporary, "w") as f:
                json.dump(summary, f, indent=1)
            os.replace(temporary, path)
        final = _setting(config, "final-arrays")
        if final:
            np.savez(final, *result.arrays.to_numpy_ndarrays())

    return app
