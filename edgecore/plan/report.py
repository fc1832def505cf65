"""The memory plan, printed: totals first, then (detail=True) every buffer and a timeline.

Modelled on TFLite Micro's GreedyMemoryPlanner::PrintMemoryPlan: one row per op step
drawing the live buffers across the arena, each buffer a letter, `!` where two live
buffers overlap (the planner guarantees none, and tests check it).
"""
from dataclasses import dataclass, field

FLOAT = 4
TIMELINE_WIDTH = 64
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def mib(n_bytes):
    return f"{n_bytes / (1 << 20):.2f} MiB"


@dataclass
class MemoryPlan:
    input_shapes: list
    arena_bytes: int  # the activation arena (activations + scratch), allocated once
    weights_bytes: int  # the packed weights buffer
    scratch_bytes: int  # the largest per-op scratch (im2col blocks, one per thread); reused
    naive_bytes: int  # every buffer in its own allocation, no reuse
    lower_bound_bytes: int  # max over op steps of the bytes live at that step
    buffers: list = field(default_factory=list)
    op_names: list = field(default_factory=list)
    training_bytes: int = 0  # trained params + their gradients + optimizer state
    run_parts: dict = field(default_factory=dict)  # what a fit holds (train/memory.py)
    num_threads: int = 1  # the threads the plan runs with (its per-thread scratch is in arena)

    @property
    def total_bytes(self):
        return (self.arena_bytes + self.weights_bytes + self.training_bytes
                + sum(self.run_parts.values()))

    def __str__(self):
        return self.format()

    def format(self, detail=False):
        ratio = self.arena_bytes / self.lower_bound_bytes if self.lower_bound_bytes else 1.0
        lines = [
            f"memory plan for inputs {self.input_shapes}, {self.num_threads} thread(s)",
            f"  arena (activations + scratch): {mib(self.arena_bytes)}"
            f"  = {ratio:.3f} x the lower bound {mib(self.lower_bound_bytes)}",
            f"  largest op scratch:            {mib(self.scratch_bytes)}"
            f" (for {self.num_threads} thread(s), in the arena)",
            f"  weights (packed, folded):      {mib(self.weights_bytes)}",
        ]
        if self.training_bytes:
            lines.append(f"  params + gradients + optimizer state: {mib(self.training_bytes)}")
        for name, size in self.run_parts.items():
            lines.append(f"  {name + ':':<37}{mib(size)}")
        lines += [
            f"  total:                         {mib(self.total_bytes)}",
            f"  naive (no buffer reuse):       {mib(self.naive_bytes)}",
        ]
        if detail:
            lines += self._buffer_table() + self._timeline()
        return "\n".join(lines)

    def _buffer_table(self):
        lines = ["", "  id  size(KiB)  offset(KiB)  first  last  buffer"]
        for i, buf in enumerate(sorted(self.buffers, key=lambda b: (b.first, b.offset))):
            letter = _LETTERS[i % len(_LETTERS)]
            lines.append(f"  {letter:>2}  {buf.size * FLOAT / 1024:9.1f}  "
                         f"{buf.offset * FLOAT / 1024:11.1f}  {buf.first:5d}  {buf.last:4d}  {buf.name}")
        return lines

    def _timeline(self):
        arena = max((b.offset + b.size for b in self.buffers), default=1) or 1
        order = sorted(self.buffers, key=lambda b: (b.first, b.offset))
        letters = {id(b): _LETTERS[i % len(_LETTERS)] for i, b in enumerate(order)}
        lines = ["", f"  timeline ({TIMELINE_WIDTH} columns = {mib(arena * FLOAT)})"]
        for step, (op, layer) in enumerate(self.op_names):
            row = ["."] * TIMELINE_WIDTH
            live_bytes = 0
            for buf in self.buffers:
                if not buf.first <= step <= buf.last:
                    continue
                live_bytes += buf.size * FLOAT
                start = buf.offset * TIMELINE_WIDTH // arena
                stop = max(start + 1, (buf.offset + buf.size) * TIMELINE_WIDTH // arena)
                for col in range(start, min(stop, TIMELINE_WIDTH)):
                    row[col] = letters[id(buf)] if row[col] == "." else "!"
            lines.append(f"  {step:4d} {''.join(row)} {live_bytes / 1024:9.1f} KiB  {op} {layer}")
        return lines


def memory_plan_of(plan, weights_floats):
    scratch = max((b.size for b in plan.buffers if b.name.startswith("scratch:")), default=0)
    return MemoryPlan(
        input_shapes=plan.input_shapes,
        arena_bytes=plan.arena_floats * FLOAT,
        weights_bytes=weights_floats * FLOAT,
        scratch_bytes=scratch * FLOAT,
        naive_bytes=plan.naive_floats * FLOAT,
        lower_bound_bytes=plan.lower_bound_floats * FLOAT,
        buffers=plan.buffers,
        op_names=plan.op_names,
        num_threads=plan.nthreads,
    )
