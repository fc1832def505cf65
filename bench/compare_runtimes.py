#!/usr/bin/env python3
"""edgecore beside LiteRT (XNNPACK) and ONNX Runtime on the same Keras-made models, timed
interleaved in one process: the table in README.md.

    pip install ".[bench]"                                  # onnxruntime, ai-edge-litert
    /path/to/keras-venv/bin/python bench/convert_models.py  # once: writes bench/models/
    python bench/compare_runtimes.py --threads 1,2

Every runtime gets the same float32 batch-1 input and its output is checked against
edgecore's before anything is timed.  Each round runs every runtime in turn, in a rotating
order, a short burst each (its first call untimed: the previous runtime's spinning worker
threads would be charged to it), so the machine's noise (it is shared) falls on all
alike; the numbers reported are medians over the rounds, and the ratio is edgecore's median
over the best reference's (below 1.0: edgecore is faster).
"""
import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

from peers import litert_runner, onnxruntime_runner

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
NAMES = ["mobilenet_v2_0.35_96", "mobilenet_v2_1.0_224", "mobilenet_v3_small_224",
         "efficientnet_b0_224", "resnet50_224"]
BURST = 4  # calls per runtime per round; the first is not timed


def runners(name, threads, x):
    """{runtime: zero-argument callable returning the output}; the references that are not
    installed or whose converted file is missing are left out (and said so)."""
    import edgecore as ec

    found = {}
    model = ec.load(MODELS / f"{name}.h5", num_threads=threads)
    found["edgecore"] = lambda: model.predict(x)
    for runtime, module, runner, suffix in (
            ("onnxruntime", "onnxruntime", onnxruntime_runner, ".onnx"),
            ("litert", "ai_edge_litert", litert_runner, ".tflite")):
        if importlib.util.find_spec(module) is None:
            print(f"{module} not installed", file=sys.stderr)
            continue
        path = MODELS / f"{name}{suffix}"
        try:
            found[runtime] = runner(path, threads, x)
        except Exception as exc:  # a missing or broken converted file: leave it out, say why
            print(f"{name}: {runtime} left out: {path.name}: {exc}", file=sys.stderr)
    return found


def compare(name, threads, rounds, seconds):
    import numpy as np

    shape = (96, 96, 3) if name.endswith("_96") else (224, 224, 3)
    x = np.random.default_rng(0).uniform(0, 255, (1,) + shape).astype(np.float32)
    impls = runners(name, threads, x)
    ref = np.asarray(impls["edgecore"]())
    for impl, run in list(impls.items()):
        err = float(np.abs(np.asarray(run()) - ref).max())
        if not err <= 1e-4 * max(1.0, float(np.abs(ref).max())):  # NaN included
            # a stale converted file (weights from another convert run) is not a timing to
            # report; edgecore's own disagreement with Keras is tests/test_keras_parity.py's
            print(f"{name}: {impl} left out: its output differs from edgecore's by {err} "
                  "(re-run bench/convert_models.py)", file=sys.stderr)
            del impls[impl]
    for run in impls.values():          # warm up (lazy packing, caches, thread pools)
        for _ in range(3):
            run()
    times = {impl: [] for impl in impls}
    order = list(impls)
    deadline = time.perf_counter() + seconds
    for r in range(rounds):
        for impl in order[r % len(order):] + order[:r % len(order)]:
            # A short burst per runtime, its first call untimed: the previous runtime's
            # worker threads may still be spinning (ORT's and XNNPACK's pools spin after a
            # run) and would be charged to this one.
            for k in range(BURST):
                start = time.perf_counter()
                impls[impl]()
                if k:
                    times[impl].append(time.perf_counter() - start)
        if r >= 10 and time.perf_counter() > deadline:
            break
    return {impl: statistics.median(t) * 1e3 for impl, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--models", default=",".join(NAMES))
    parser.add_argument("--rounds", type=int, default=200, help="at most this many rounds")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="per model and thread count, stop after this long (>= 10 rounds)")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    names = args.models.split(",")
    missing = [n for n in names if not (MODELS / f"{n}.h5").exists()]
    if missing:
        raise SystemExit(f"missing {missing} in {MODELS}: run bench/convert_models.py with "
                         "the Keras dev venv first")
    print(f"# {os.cpu_count()} CPUs visible; medians of interleaved rounds, batch 1, float32")
    header = "| model | " + " | ".join(
        f"LiteRT {t}t | ORT {t}t | edgecore {t}t | edgecore / best {t}t" for t in threads) + " |"
    print(header)
    print("|" + "---|" * (1 + 4 * len(threads)))
    for name in names:
        cells = []
        for t in threads:
            med = compare(name, t, args.rounds, args.seconds)
            refs = [med[k] for k in ("litert", "onnxruntime") if k in med]
            ratio = med["edgecore"] / min(refs) if refs else float("nan")
            cells += [f"{med.get('litert', float('nan')):.2f}",
                      f"{med.get('onnxruntime', float('nan')):.2f}",
                      f"{med['edgecore']:.2f}", f"{ratio:.2f}x"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
