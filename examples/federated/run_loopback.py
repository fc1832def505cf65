"""One command for the whole federated run on this machine, on loopback:

    python examples/federated/run_loopback.py            # 3 clients, 5 rounds, FedAvg

starts a Flower SuperLink and N SuperNodes as separate processes on 127.0.0.1 (Flower's
deployment engine, --insecure: loopback only), each SuperNode holding a disjoint,
class-skewed slice of weights/datasets/fashion_mnist_small.npz; submits the app in this
directory with `flwr run`; trains the same head centrally on all the data for comparison;
prints accuracy per round, bytes sent per client per round, wall time; writes the JSON
summary (--out).  Faults: --kill K (SIGKILL client K's SuperNode and its ClientApp during
round 2), --late K (client K's SuperNode starts only after round 1), --tiny K (client K
keeps 8 training images).  Every process started here is stopped at the end.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(ROOT, "weights", "datasets", "fashion_mnist_small.npz")
BACKBONE = os.path.join(ROOT, "weights", "pretrained", "mobilenet_v2_imagenet.h5")
BIN = os.path.dirname(sys.executable)


def _tool(name):
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else shutil.which(name) or name


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--strategy", default="fedavg", choices=["fedavg", "fedadam"])
    p.add_argument("--eta", type=float, default=0.01, help="FedAdam's server learning rate")
    p.add_argument("--dp-noise", type=float, default=0.0,
                   help="> 0: Flower's DifferentialPrivacyServerSideFixedClipping")
    p.add_argument("--dp-clip", type=float, default=10.0)
    p.add_argument("--local-dp-epsilon", type=float, default=0.0,
                   help="> 0: Flower's LocalDpMod on every client (clip: --dp-clip)")
    p.add_argument("--skew", type=float, default=0.8)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--min-nodes", type=int, default=None,
                   help="min train/evaluate/available nodes (default: all clients, or one "
                        "fewer with --kill/--late)")
    p.add_argument("--kill", type=int, default=None, metavar="K")
    p.add_argument("--late", type=int, default=None, metavar="K")
    p.add_argument("--tiny", type=int, default=None, metavar="K")
    p.add_argument("--no-central", action="store_true", help="skip the central baseline")
    p.add_argument("--port", type=int, default=19091, help="first of the ports used")
    p.add_argument("--workdir", default=None, help="logs, caches (default: a temporary dir)")
    p.add_argument("--out", default=None, help="write the JSON summary here")
    p.add_argument("--timeout", type=float, default=1200)
    return p.parse_args(argv)


class Processes:
    def __init__(self):
        self.running = []

    def start(self, name, command, log_dir, env):
        log = open(os.path.join(log_dir, f"{name}.log"), "w")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # its own group: killed as one
        proc.name, proc.log_path = name, log.name
        self.running.append(proc)
        return proc

    @staticmethod
    def kill(proc, sig=signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop_all(self):
        for proc in self.running:
            self.kill(proc, signal.SIGTERM)
        deadline = time.time() + 10
        for proc in self.running:
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self.kill(proc)
                proc.wait()


def _wait_for(path, text, timeout, count=1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path) as f:
                if f.read().count(text) >= count:
                    return True
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    return False


def _wait_for_superlink(env, timeout):
    """Until the SuperLink's Control API answers (`flwr ls`)."""
    deadline = time.time() + min(timeout, 120)
    while time.time() < deadline:
        done = subprocess.run([_tool("flwr"), "ls", "loopback"], env=env,
                              capture_output=True, text=True)
        if done.returncode == 0:
            return
        time.sleep(1)
    raise SystemExit("the SuperLink did not come up: " + done.stdout[-500:])


def central_baseline(args, cache_dir):
    """The same head, recipe and total epochs, trained in one place on all the data."""
    import numpy as np

    from edgecore import utils
    from edgecore.federated import HeadClient

    with np.load(DATA) as d:
        x_train, y_train, x_test, y_test = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    start = time.perf_counter()
    client = HeadClient(BACKBONE, 10, utils.resize_images(x_train, args.image_size), y_train,
                        utils.resize_images(x_test, args.image_size), y_test,
                        cache_dir=cache_dir, seed=0)
    fit = client.fit(args.rounds * args.local_epochs)
    result = client.evaluate()
    return {"epochs": args.rounds * args.local_epochs, "train_accuracy": fit["train_accuracy"],
            "test_accuracy": result["eval_accuracy"], "test_loss": result["eval_loss"],
            "seconds": time.perf_counter() - start}


def run(args):
    work = args.workdir or tempfile.mkdtemp(prefix="edgecore-fl-")
    os.makedirs(work, exist_ok=True)
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    home = os.path.join(work, "flwr-home")
    os.makedirs(home, exist_ok=True)
    # flwr 1.42: the SuperLink serves its Runtime, Fleet and Control APIs over HTTP on one
    # host:port (the separate gRPC addresses of earlier releases are deprecated).
    link = f"127.0.0.1:{args.port}"
    # flwr 1.42 reads SuperLink connections from $FLWR_HOME/config.toml (the pyproject
    # [tool.flwr.federations] table is legacy and only migrated from).
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
                f'address = "{link}"\ninsecure = true\n')
    # Flower starts its helpers (flower-superexec, flwr-serverapp, flwr-clientapp) by name.
    env = dict(os.environ, FLWR_HOME=home, PYTHONUNBUFFERED="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    summary_path = os.path.join(work, "summary.json")
    if os.path.exists(summary_path):
        os.unlink(summary_path)
    faults = [k for k in (args.kill, args.late) if k is not None]
    min_nodes = args.min_nodes or (args.clients - len(set(faults)))
    procs = Processes()
    started = time.perf_counter()
    try:
        procs.start("superlink", [_tool("flower-superlink"), "--insecure", "--host",
                                  "127.0.0.1", "--port", str(args.port)], logs, env)
        nodes = {}

        def start_node(k):
            config = {"data": DATA, "backbone": BACKBONE, "partition-id": k,
                      "num-partitions": args.clients, "skew": args.skew,
                      "image-size": args.image_size,
                      "cache-dir": os.path.join(work, f"cache-{k}"),
                      "checkpoint": os.path.join(work, f"client-{k}.h5")}
            if k == args.tiny:
                config["limit"] = 8
            if args.local_dp_epsilon > 0:
                config.update({"local-dp-epsilon": args.local_dp_epsilon,
                               "local-dp-clip": args.dp_clip})
            text = " ".join(f'{key}="{v}"' if isinstance(v, str) else f"{key}={v}"
                            for key, v in config.items())
            nodes[k] = procs.start(f"supernode-{k}", [
                _tool("flower-supernode"), "--insecure",
                "--superlink", link,
                "--port", str(args.port + 10 + k), "--node-config", text], logs, env)

        for k in range(args.clients):
            if k != args.late:
                start_node(k)
        _wait_for_superlink(env, args.timeout)
        overrides = {"num-server-rounds": args.rounds, "local-epochs": args.local_epochs,
                     "strategy": args.strategy, "eta": args.eta, "dp-noise": args.dp_noise,
                     "dp-clip": args.dp_clip, "min-train-nodes": min_nodes,
                     "min-evaluate-nodes": min_nodes, "min-available-nodes": min_nodes,
                     "round-timeout": 120.0 if faults else 600.0,
                     "backbone": BACKBONE, "summary": summary_path,
                     "final-arrays": os.path.join(work, "final-head.npz")}
        command = [_tool("flwr"), "run", HERE, "loopback", "--stream"]
        for key, v in overrides.items():
            command += ["--run-config", f'{key}="{v}"' if isinstance(v, str) else f"{key}={v}"]
        flwr = procs.start("flwr-run", command, logs, env)
        server_log = os.path.join(logs, "flwr-run.log")
        if args.late is not None:  # joins once round 1 is aggregated
            _wait_for(server_log, "[ROUND 2/", args.timeout)
            start_node(args.late)
        if args.kill is not None:  # mid-round: once it has taken round 2's train message
            _wait_for(server_log, "[ROUND 2/", args.timeout)
            _wait_for(os.path.join(logs, f"supernode-{args.kill}.log"),
                      "Receiving: train message", 120, count=2)  # round 2's train message
            time.sleep(1.0)  # its ClientApp process is loading the model and training
            Processes.kill(nodes[args.kill])  # SIGKILL: SuperNode and ClientApp alike
        deadline = time.time() + args.timeout
        while not os.path.exists(summary_path) and time.time() < deadline \
                and flwr.poll() is None:
            time.sleep(0.5)
        _wait_for(summary_path, "}", 30)
        wall = time.perf_counter() - started
    finally:
        procs.stop_all()
    if not os.path.exists(summary_path):
        raise SystemExit(f"the run did not finish: see the logs in {logs}")
    with open(summary_path) as f:
        summary = json.load(f)
    summary.update(wall_seconds_all=wall, clients=args.clients, workdir=work,
                   faults={"kill": args.kill, "late": args.late, "tiny": args.tiny},
                   image_size=args.image_size, skew=args.skew, local_epochs=args.local_epochs)
    if not args.no_central:
        summary["central"] = central_baseline(args, os.path.join(work, "cache-central"))
    return summary


def report(summary):
    lines = [f"{summary['clients']} clients, {summary['rounds']} rounds x "
             f"{summary['local_epochs']} local epochs, {summary['strategy']}; wall "
             f"{summary['wall_seconds_all']:.1f} s (ServerApp {summary['wall_seconds']:.1f} s)",
             "round  eval accuracy  eval loss  train loss  sent bytes/client  client s/round"]
    for r in sorted(summary["evaluate"], key=int):
        e, t = summary["evaluate"][r], summary["train"].get(r, {})
        lines.append(f"{int(r):5d}  {100 * e['eval_accuracy']:12.1f}%  {e['eval_loss']:9.4f}"
                     f"  {t.get('train_loss', float('nan')):10.4f}"
                     f"  {t.get('sent-array-bytes', 0):17.0f}  {t.get('seconds', 0):14.2f}")
    if "central" in summary:
        c = summary["central"]
        lines.append(f"central: {c['epochs']} epochs on all data, test accuracy "
                     f"{100 * c['test_accuracy']:.1f}% ({c['seconds']:.1f} s)")
    return "\n".join(lines)


def main(argv=None):
    args = parse(argv)
    summary = run(args)
    print(report(summary))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
