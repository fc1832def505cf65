"""The per-op profile of a plan: what each op is, its output shape, its median time over
repeated runs, its share of the total and its GFLOP/s (as benchncnn and TFLite's op
profiling report them), plus a summary by op kind.  Model.profile makes one."""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class OpTime:
    index: int
    op: str  # the runner's op name ("conv2d", "dwconv2d", ...)
    layer: str  # the Keras layer it came from
    shape: tuple  # output shape (None: it writes a model buffer)
    seconds: float  # median over the repeats
    flops: int

    @property
    def gflops(self):
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass
class Profile:
    input_shapes: list
    repeats: int
    num_threads: int
    ops: list = field(default_factory=list)  # OpTime per op, in plan order
    total_seconds: float = 0.0  # median of the whole runs

    def by_kind(self):
        """[(op name, seconds, share, count, GFLOP/s)], slowest first."""
        kinds = {}
        for t in self.ops:
            s, f, n = kinds.get(t.op, (0.0, 0, 0))
            kinds[t.op] = (s + t.seconds, f + t.flops, n + 1)
        total = sum(t.seconds for t in self.ops) or 1.0
        rows = [(op, s, s / total, n, f / s / 1e9 if s > 0 else 0.0)
                for op, (s, f, n) in kinds.items()]
        return sorted(rows, key=lambda r: -r[1])

    def __str__(self):
        return self.format()

    def format(self, top=None):
        total = sum(t.seconds for t in self.ops) or 1.0
        flops = sum(t.flops for t in self.ops)
        lines = [f"profile of inputs {self.input_shapes}: {self.repeats} runs, "
                 f"{self.num_threads} thread(s), median {self.total_seconds * 1e3:.3f} ms "
                 f"({flops / 1e9:.3f} GFLOP, {flops / max(self.total_seconds, 1e-12) / 1e9:.1f} "
                 f"GFLOP/s)",
                 "", "    #  op                 layer                           output shape"
                 "          ms   share  GFLOP/s"]
        order = sorted(self.ops, key=lambda t: -t.seconds) if top else self.ops
        for t in order[:top] if top else order:
            shape = "" if t.shape is None else str(t.shape)
            lines.append(f"{t.index:5d}  {t.op:<18.18} {t.layer:<31.31} {shape:<20.20}"
                         f"{t.seconds * 1e3:8.3f} {100 * t.seconds / total:6.1f}% "
                         f"{t.gflops:8.2f}")
        lines += ["", "  by op kind             ms   share  count  GFLOP/s"]
        for op, s, share, n, gf in self.by_kind():
            lines.append(f"  {op:<18.18} {s * 1e3:8.3f} {100 * share:6.1f}% {n:6d} {gf:8.2f}")
        return "\n".join(lines)


def profile_plan(plan, run_timed, repeats, warmup, input_shapes, num_threads):
    """run_timed(seconds) runs the plan once adding each op's time to seconds[i]."""
    n = len(plan.op_names)
    for _ in range(warmup):
        run_timed(np.zeros(n))
    samples = np.zeros((repeats, n))
    for r in range(repeats):
        run_timed(samples[r])
    per_op = np.median(samples, axis=0)
    result = Profile(input_shapes, repeats, num_threads,
                     total_seconds=float(np.median(samples.sum(axis=1))))
    for i, ((op, layer), seconds) in enumerate(zip(plan.op_names, per_op)):
        result.ops.append(OpTime(i, op, layer, plan.op_shapes[i], float(seconds),
                                 int(plan.op_flops[i])))
    return result
