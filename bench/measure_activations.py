"""Measure the float32 vector activations' error against the exact functions
(tests/reference/vmath.py), per ISA, over every STEP-th finite float32 (both signs) plus
every float32 in [-16, 16] that is a multiple of 2^-16... and print the max ulp error, where
it occurs, and the share of results that are not exact.

    python bench/measure_activations.py [--step 97] [--isa avx2 ...] [--names swish ...]

The bounds stated in kernels/activations.pxi and asserted by the tests come from this."""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from edgecore import _kernels as K  # noqa: E402
from reference.vmath import EXACT, exact, finite_float32, ulp_error  # noqa: E402

PARAMS = {"elu": {"alpha": 1.0}, "celu": {"alpha": 1.0}}


def inputs(step):
    """Every step-th finite float32 and the dense middle: all floats with |x| in
    [2^-8, 32) whose low 6 mantissa bits are zero (2.7M values)."""
    dense_bits = np.arange(np.float32(2.0 ** -8).view(np.uint32), np.float32(32).view(np.uint32),
                           64, dtype=np.uint32)
    dense = dense_bits.view(np.float32)
    return np.concatenate([finite_float32(step), dense, -dense])


def measure(name, x, chunk=1 << 22):
    worst, at, inexact = 0.0, None, 0
    y = np.empty(chunk, np.float32)
    for i in range(0, x.size, chunk):
        xs = np.ascontiguousarray(x[i:i + chunk])
        ys = y[:xs.size]
        K.activation(xs, ys, K.ACTIVATION_CODES[name], **PARAMS.get(name, {}))
        ref = exact(xs, name)
        err = ulp_error(ys, ref)
        j = int(np.nanargmax(err))
        inexact += int((err > 0.5).sum())
        if err[j] > worst or np.isnan(err[j]):
            worst, at = float(err[j]), (float(xs[j]), float(ys[j]), float(ref[j]))
    return worst, at, inexact / x.size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--step", type=int, default=97)
    ap.add_argument("--isa", nargs="*", default=[i for i in K.available_activation_isas() if i != "scalar"])
    ap.add_argument("--names", nargs="*", default=sorted(EXACT))
    args = ap.parse_args()
    x = inputs(args.step)
    print(f"{x.size} inputs (every {args.step}th finite float32 and a dense [-32, 32])")
    for isa in args.isa:
        K.set_activation_isa(isa)
        for name in args.names:
            worst, at, share = measure(name, x)
            print(f"{isa:8s} {name:12s} max {worst:7.3f} ulp at x={at[0]!r:>14} "
                  f"(got {at[1]!r}, exact {at[2]!r}); {100 * share:.2f}% not correctly rounded")
    K.set_activation_isa(None)


if __name__ == "__main__":
    main()
