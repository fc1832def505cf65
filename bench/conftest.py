"""Benchmark conventions: single-threaded references, ratios printed in the same run.

Every benchmark sets `benchmark.group` to the problem and `benchmark.extra_info["impl"]`
to "edgecore" or the name of a reference ("numpy", "onnxruntime", "litert").  At the end
of the run the summary below prints, per group, each implementation's median and its
ratio to edgecore's (reference median / edgecore median: above 1 means edgecore is
faster).  The machine is shared and noisy, so medians and ratios are the numbers to
quote, never one absolute time.

Run:  OPENBLAS_NUM_THREADS=1 pytest bench --benchmark-only
"""
import os
import sys

import pytest

# References run single-threaded like edgecore; must be set before numpy loads OpenBLAS.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if "numpy" in sys.modules and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
    print("bench: numpy was imported before OPENBLAS_NUM_THREADS=1 could be set; "
          "run with OPENBLAS_NUM_THREADS=1", file=sys.stderr)

sys.path.insert(0, os.path.dirname(__file__))


def pytest_terminal_summary(terminalreporter):
    _memory_table(terminalreporter)
    session = getattr(terminalreporter.config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups = {}
    for bench in session.benchmarks:
        if bench.stats is None:
            continue
        impl = bench.extra_info.get("impl", bench.name)
        groups.setdefault(bench.group, {})[impl] = bench.stats.median
    terminalreporter.section("edgecore vs references (median; ratio = reference / edgecore)")
    for group in sorted(groups, key=str):
        impls = groups[group]
        ours = impls.get("edgecore")
        cells = []
        for impl, median in sorted(impls.items(), key=lambda kv: kv[0] != "edgecore"):
            cell = f"{impl} {median * 1e3:.3f} ms"
            if ours and impl != "edgecore":
                cell += f" (x{median / ours:.2f})"
            cells.append(cell)
        terminalreporter.write_line(f"{group}: " + ", ".join(cells))


@pytest.fixture(scope="session")
def memory_results(request):
    """bench_memory.py's rows, kept on the config for the summary below."""
    request.config._edgecore_memory = {}
    return request.config._edgecore_memory


def _memory_table(terminalreporter):
    """bench_memory.py's fresh-process measurements, if that module ran."""
    results = getattr(terminalreporter.config, "_edgecore_memory", None)
    if not results:
        return
    terminalreporter.section("peak RSS and import time (fresh process, MobileNetV2-1.0-224, "
                             "load + 10 batch-1 predictions; medians of 3)")
    for name, row in results.items():
        extra = ""
        if "weights_mb" in row:
            extra = f"   (weights {row['weights_mb']:.1f} MiB, arena {row['arena_mb']:.1f} MiB)"
        terminalreporter.write_line(f"{name:24s} peak {row['peak_mb']:7.1f} MiB   "
                                    f"import {row['import_ms']:7.1f} ms   first prediction "
                                    f"{row['first_ms']:7.1f} ms{extra}")
