"""Comparison helpers shared by the kernel tests.

Tolerance: a float32 kernel summing terms t_i has error bounded by a multiple of
eps32 * sum |t_i|, not of |result|: when terms cancel the result can be tiny while the
error is not (and aarch64 GCC fuses multiply-adds, changing the rounding of every term).
So a check is |got - ref| <= rtol * magnitude + atol, where magnitude is the same
computation run on absolute values (e.g. conv(|x|, |w|) + |bias|).
"""
import threading

import numpy as np


def assert_close(got, ref, magnitude=None, rtol=1e-5, atol=1e-6, what=""):
    """Fail with indices, reference, got and the problem size if any element is out."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    mag = np.abs(ref) if magnitude is None else np.asarray(magnitude, dtype=np.float64)
    tol = rtol * mag + atol
    err = np.abs(got - ref)
    bad = ~(err <= tol)         # also catches NaN in got
    if bad.any():
        idx = np.argwhere(bad)
        lines = [f"{what}: {bad.sum()} of {bad.size} elements out of tolerance "
                 f"(rtol={rtol}, atol={atol}), shape {ref.shape}"]
        for i in idx[:8]:
            i = tuple(int(v) for v in i)
            lines.append(f"  at {i}: reference {ref[i]!r} got {got[i]!r} "
                         f"err {err[i]:.3g} tol {tol[i]:.3g}")
        raise AssertionError("\n".join(lines))


def assert_grads_close(got, ref_backward, x, w, dy, what, **geometry):
    """Compare a backward kernel's outputs, got = {"dx", "dw", "db": array or None (not
    asked for)}, with ref_backward(x, w, dy, **geometry), each within the magnitude the
    reference computes for it."""
    refs = ref_backward(x, w, dy, **geometry)
    mags = ref_backward(x, w, dy, magnitude=True, **geometry)
    for name, ref, mag in zip(("dx", "dw", "db"), refs, mags):
        if got[name] is not None:
            assert_close(got[name], ref, mag, what=f"{what} {name}")


def frozen(*arrays):
    """Read-only copies of the inputs (kernels must accept them) plus pristine copies to
    check afterwards that the kernel did not write to them."""
    out = []
    for a in arrays:
        a = np.array(a, dtype=np.float32, copy=True)
        a.setflags(write=False)
        out.append(a)
    return out, [a.copy() for a in out]


def assert_unchanged(arrays, copies, what=""):
    for i, (a, c) in enumerate(zip(arrays, copies)):
        assert np.array_equal(a, c, equal_nan=True), f"{what}: input {i} was modified"


def assert_same_in_thread(run, what=""):
    """run() -> array or tuple of arrays, computed afresh on each call: the result from a
    second threading.Thread must equal the main thread's bit for bit (kernels keep no
    per-thread or global state besides the GEMM variant, which is process-wide)."""
    here = run()
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("out", run()))
    worker.start()
    worker.join()
    there = box["out"]
    here, there = _as_tuple(here), _as_tuple(there)
    for i, (h, t) in enumerate(zip(here, there)):
        if h is None:
            assert t is None, f"{what}: output {i}"
            continue
        assert np.array_equal(np.asarray(h).view(np.uint32), np.asarray(t).view(np.uint32)), \
            f"{what}: output {i} differs between threads"


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)
