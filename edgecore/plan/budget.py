"""Memory budgets: parse "48MB" and refuse a plan that does not fit, before any work.

What counts: the buffers edgecore allocates for the model — the packed weights, the
activation arena (sized by the plan), and for training the gradient and optimizer-state
arenas and the feature cache.  The Python interpreter and numpy themselves are not
counted (bench/bench_memory.py measures the whole process).  Units: B, KB/MB/GB are
powers of 1000, KiB/MiB/GiB powers of 1024; a bare number is bytes.
"""
import re

from ..errors import MemoryBudgetError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(budget):
    """None, an int of bytes, or a string like "48MB", "1.5 GiB"; returns int or None."""
    if budget is None:
        return None
    if isinstance(budget, bool):
        raise ValueError(f"memory budget {budget!r} is not a size")
    if isinstance(budget, (int, float)):
        value = budget
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(budget))
        if not match or match.group(2).upper() not in _UNITS:
            raise ValueError(f"memory budget {budget!r} is not a size like '48MB' or '512MiB'")
        value = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if value <= 0:
        raise ValueError(f"memory budget {budget!r} must be positive")
    return int(value)


def human(n_bytes):
    return f"{n_bytes / 2**20:.1f} MiB ({n_bytes:,} bytes)"


def check_budget(budget, *, weights_bytes, arena_bytes, path=None, what=None, extra=None):
    """Raise MemoryBudgetError if weights + arena (+ extra {name: bytes}) exceed budget."""
    if budget is None:
        return
    parts = {"weights": weights_bytes, "arena": arena_bytes, **(extra or {})}
    required = sum(parts.values())
    if required <= budget:
        return
    detail = ", ".join(f"{name} {human(b)}" for name, b in parts.items() if b)
    raise MemoryBudgetError(
        f"{what or 'the plan'} needs {human(required)} ({detail}) but the memory budget "
        f"allows {human(budget)}", required_bytes=required, allowed_bytes=budget, path=path)
