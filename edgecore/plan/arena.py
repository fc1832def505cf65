"""Arena planning: place every buffer of a plan in one float32 arena.

Each buffer (a graph tensor, a temporary, an op's scratch) has a size and a lifetime
[first op that writes it, last op that reads it]; graph inputs are live from before op 0
and graph outputs until after the last op.  Buffers whose lifetimes overlap must not
overlap in memory; everything else may share.  Placement is greedy by size (largest
first, lowest offset that fits among the already-placed buffers live at the same time),
the strategy of TFLite Micro's GreedyMemoryPlanner, which is close to the lower bound
(max over time of live bytes) on CNN chains.

Padding: every buffer is rounded up to ALIGN_FLOATS (64 bytes) so vector loops may read
up to a cache line past a buffer's end; they never write there.
"""
from dataclasses import dataclass

import numpy as np

ALIGN_FLOATS = 16


def align(n):
    return (n + ALIGN_FLOATS - 1) // ALIGN_FLOATS * ALIGN_FLOATS


def aligned_empty(n_floats, align_bytes=64):
    """A float32 array of n_floats whose data starts on an align_bytes boundary."""
    raw = np.empty(n_floats + align_bytes // 4, dtype=np.float32)
    start = (-raw.ctypes.data % align_bytes) // 4
    return raw[start:start + n_floats]


@dataclass
class Buffer:
    name: str
    size: int  # floats, aligned
    first: int  # index of the first op that writes it (-1: before the first op)
    last: int  # index of the last op that reads it
    offset: int = -1


def place(buffers):
    """Assign `offset` to every buffer; returns the arena size in floats."""
    placed = []
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        live = sorted((p for p in placed if p.first <= buf.last and buf.first <= p.last),
                      key=lambda p: p.offset)
        offset = 0
        for other in live:
            if offset + buf.size <= other.offset:
                break
            offset = max(offset, other.offset + other.size)
        buf.offset = offset
        placed.append(buf)
    return max((b.offset + b.size for b in buffers), default=0)


def live_lower_bound(buffers, n_ops):
    """Max over op steps of the total size of buffers live at that step: no placement
    can use less arena than this."""
    best = 0
    for step in range(-1, n_ops + 1):
        best = max(best, sum(b.size for b in buffers if b.first <= step <= b.last))
    return best


def overlapping_pairs(buffers):
    """Pairs of buffers live at the same time whose memory overlaps (must be empty)."""
    bad = []
    for i, a in enumerate(buffers):
        for b in buffers[i + 1:]:
            if a.first <= b.last and b.first <= a.last and \
                    a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                bad.append((a.name, b.name))
    return bad
