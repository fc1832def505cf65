"""How the polynomial coefficients in kernels/f32_vector_math.h were made (run as a script
to print them again).  Near-minimax fits in float64 by Lawson's iteratively reweighted
least squares on Chebyshev nodes, then rounded to float32 one coefficient at a time from
the highest degree, refitting the lower ones after each rounding so the rounding of the
high ones is absorbed.  Not run by the tests: the tests measure the kernels themselves."""
import math

import numpy as np


def minimax(f, lo, hi, degrees, weight, iters=60, nodes=4000):
    """Coefficients for the monomials `degrees` minimising max |weight * (f - p)|."""
    x = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.linspace(0, np.pi, nodes))
    basis = np.stack([x ** k for k in degrees], 1)
    w, fx = weight(x), f(x)
    lam = np.full(nodes, 1.0 / nodes)
    for _ in range(iters):
        sw = np.sqrt(lam) * w
        c = np.linalg.lstsq(basis * sw[:, None], fx * sw, rcond=None)[0]
        err = np.abs(w * (fx - basis @ c))
        lam = lam * err / (lam * err).sum()
    return c, err.max()


def fit_float32(f, lo, hi, degree, weight):
    """float32 coefficients c[0..degree], rounded from the top down with refits."""
    fixed = {}
    for k in range(degree, -1, -1):
        free = [j for j in range(degree + 1) if j not in fixed]
        rest = lambda x: f(x) - sum(v * x ** j for j, v in fixed.items())  # noqa: E731
        c, err = minimax(rest, lo, hi, free, weight)
        fixed[k] = float(np.float32(dict(zip(free, c))[k]))
    return [fixed[k] for k in range(degree + 1)], err


def exp_q():
    """e^r = 1 + r + r^2 Q(r) on [-ln2/2, ln2/2], relative error of e^r - 1 (expm1 and exp)."""
    half = math.log(2) / 2
    q = lambda r: (np.expm1(r) - r) / (r * r)  # noqa: E731
    return fit_float32(q, -half, half, 4, lambda r: r * r / np.abs(np.expm1(r)))


def log1p_r():
    """log1p(e) = 2 s (1 + w R(w)), s = e / (2 + e), w = s^2 in [0, 1/9]."""
    r = lambda w: (np.arctanh(np.sqrt(w)) / np.sqrt(w) - 1) / w  # noqa: E731
    return fit_float32(r, 1e-12, 1 / 9, 3, lambda w: w)


GELU_A = float(np.float32(0.3))
GELU_ZMAX = 14.5


def gelu_g():
    """Phi(-z) = exp(-z^2/2) G(t), t = 1 / (1 + a z), z in [0, 14.5], relative error."""
    erfc = np.frompyfunc(math.erfc, 1, 1)

    def g(t):
        z = (1 / t - 1) / GELU_A
        return 0.5 * erfc(z / math.sqrt(2)).astype(np.float64) * np.exp(z * z / 2)
    return fit_float32(g, 1 / (1 + GELU_A * GELU_ZMAX), 1.0, 10, lambda t: 1 / g(t))


if __name__ == "__main__":
    for name, (coef, err) in (("EXP_Q", exp_q()), ("LOG1P_R", log1p_r()), ("GELU_G", gelu_g())):
        print(f"{name}: fit error {err:.3g}")
        for k, v in enumerate(coef):
            print(f"#define EC_VM_{name}{k} {v!r}f")
