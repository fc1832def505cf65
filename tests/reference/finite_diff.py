"""Central finite differences for the gradient checks (second item of STYLE's "backward
checked twice").

The kernels are float32, so the step trades truncation (h^4 for the 4th-order stencil)
against the rounding of f itself (~eps32 * |f| / h); callers pick h per function and size
tolerances with `rounding_error`.  For a function linear in the perturbed input (conv,
dense, pooling away from ties) the stencil is exact and only rounding remains, so a large
h is best there.
"""
import numpy as np

EPS32 = float(np.finfo(np.float32).eps)

# Weights and offsets of the central stencils for f'(0): 2nd and 4th order.
STENCILS = {2: ((-1, -0.5), (1, 0.5)), 4: ((-2, 1 / 12), (-1, -8 / 12), (1, 8 / 12), (2, -1 / 12))}


def directional(f, x, v, h, order=4):
    """d/dt f(x + t v) at t = 0, where f returns a float (evaluated in float64 from the
    kernel's float32 output); x and v float64 arrays, each point rounded to float32."""
    total = 0.0
    for offset, weight in STENCILS[order]:
        total += weight * f(np.asarray(x + offset * h * v, np.float32))
    return total / h


def elementwise(f, x, h, order=4):
    """f'(x) of an element-wise f (float32 in, float32 out) at every element at once; x and h
    must make x + k h exact in float32 (the tests use a binary grid)."""
    x = np.asarray(x, np.float64)
    total = np.zeros_like(x)
    for offset, weight in STENCILS[order]:
        total += weight * np.asarray(f(np.asarray(x + offset * h, np.float32)), np.float64)
    return total / h


def rounding_error(magnitude, h, order=4):
    """Bound on the stencil's error from rounding f to float32: sum |weights| * eps32 *
    magnitude / h (magnitude: the largest |f| over the stencil, or a sum of |terms|)."""
    return sum(abs(w) for _, w in STENCILS[order]) * EPS32 * np.asarray(magnitude) / h


def assert_bilinear_grads(loss, x, w, dx, dw, magnitude, rng, h=0.5):
    """Check dx and dw of loss(x, w) = sum(dy * op(x, w)) for an op linear in x and in w
    (dense, conv, depthwise conv): <grad, v> against the directional derivative along a
    random v.  The stencil is exact for a linear function, so the tolerance is the float32
    rounding of the forward (magnitude: the sum of |terms| of loss) plus 1e-5 of the terms
    of <grad, v>."""
    for name, base, grad in (("x", x, dx), ("w", w, dw)):
        v = rng.standard_normal(base.shape)
        f = (lambda t: loss(t, w)) if name == "x" else (lambda t: loss(x, t))
        fd = directional(f, base.astype(np.float64), v, h=h)
        tol = rounding_error(4 * magnitude, h) + 1e-5 * float((np.abs(grad) * np.abs(v)).sum())
        assert abs(fd - float((grad * v).sum())) <= tol, (name, fd, float((grad * v).sum()))
