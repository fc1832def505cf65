"""Training-mode normalization kernels: BatchNormalization with batch statistics (forward,
the moving-statistics update, the full backward) and the LayerNormalization /
RMSNormalization backward, against the float64 references of reference/normalization.py
on the shapes.norm_cases() grid, against finite differences of the forward kernels, with
large means, NaN, in-place use, optional outputs, bad shapes, a second thread and the plan
runner's op rows; and, with a Keras python, against TensorFlow itself."""
import threading

import numpy as np
import pytest

import shapes
from edgecore import _kernels as K
from edgecore.plan.planner import REF_BASE_SHIFT
from reference import normalization as ref
from reference.check import assert_close, assert_unchanged, frozen
from reference.finite_diff import EPS32, directional, rounding_error

CASES = shapes.norm_cases()
# (gamma, beta) present, cycled over the grid so every shape meets one variant and every
# variant many shapes.
AFFINE = [(True, True), (True, False), (False, True), (False, False)]
AFFINE_NAMES = {(True, True): "gamma_beta", (True, False): "gamma", (False, True): "beta",
                (False, False): "none"}
MODES = ["layer", "layer_rms_scaling", "rms"]


def _grid(extra=None):
    """The grid as pytest params (rows, c, gamma?, beta?, extra[i % len])."""
    out = []
    for i, (rows, c) in enumerate(CASES):
        affine = AFFINE[i % len(AFFINE)]
        e = extra[i % len(extra)] if extra else None
        tag = f"r{rows}_c{c}_{AFFINE_NAMES[affine]}" + (f"_{e}" if e is not None else "")
        out.append(pytest.param(rows, c, affine, e, id=tag))
    return out


def _bn_inputs(rows, c, seed, affine=(True, True), loc=1.0, spread=2.0):
    """Read-only x (rows, c) with per-channel offsets around loc, dy, gamma, beta, moving."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, c)) * spread * (0.5 + rng.random(c)) + loc * rng.standard_normal(c)
    moving = np.concatenate([rng.standard_normal(c), rng.random(c) + 0.5])
    (x, dy, gamma, beta), copies = frozen(x, rng.standard_normal((rows, c)),
                                          rng.standard_normal(c), rng.standard_normal(c))
    return (x, dy, gamma if affine[0] else None, beta if affine[1] else None,
            moving.astype(np.float32), copies)


def _train(x, moving, gamma, beta, momentum=0.99, epsilon=1e-3, bessel=False, y=None):
    rows, c = x.shape
    y = np.full((rows, c), np.nan, np.float32) if y is None else y
    saved = np.full(2 * c, np.nan, np.float32)
    K.batchnorm_train(x, moving, gamma, beta, y, saved, momentum, epsilon, bessel)
    return y, saved


def _outs(rows, c, want=("dx", "dgamma", "dbeta")):
    return [np.full(s, np.nan, np.float32) if name in want else None
            for name, s in (("dx", (rows, c)), ("dgamma", (c,)), ("dbeta", (c,)))]


def _bn_forward_tol(x, gamma, beta, epsilon):
    """Scale of the float32 rounding of y: |xhat * gamma| + |beta| (a few roundings)."""
    _, mean, inv = ref.batchnorm_train(x, epsilon=epsilon)
    g = 1.0 if gamma is None else np.abs(gamma.astype(np.float64))
    b = 0.0 if beta is None else np.abs(beta.astype(np.float64))
    return np.abs((x - mean) * inv) * g + b


# --- BatchNormalization, training mode: forward ------------------------------------------------

@pytest.mark.parametrize("rows, c, affine, bessel", _grid([False, True]))
def test_batchnorm_train_matches_reference(rows, c, affine, bessel):
    x, _, gamma, beta, moving0, copies = _bn_inputs(rows, c, rows * 1000 + c, affine)
    moving = moving0.copy()
    y, saved = _train(x, moving, gamma, beta, momentum=0.9, bessel=bessel)
    want_y, mean, inv = ref.batchnorm_train(x, gamma, beta, 1e-3)
    what = f"batchnorm_train r{rows} c{c}"
    assert_close(y, want_y, _bn_forward_tol(x, gamma, beta, 1e-3), rtol=5e-7, atol=1e-7,
                 what=f"{what} y")
    # The saved mean is the double mean rounded once; inv_std one rounding plus the double sums.
    assert_close(saved[:c], mean, np.abs(mean) + 1e-9 * np.abs(x).max(), rtol=2 ** -24 * 1.001,
                 atol=0, what=f"{what} mean")
    assert_close(saved[c:], inv, inv, rtol=1.2e-7, atol=0, what=f"{what} inv_std")
    want_moving = ref.moving_update(moving0, x, 0.9, bessel)
    m = moving0.astype(np.float64)
    stats = np.concatenate([mean, ref.moving_update(np.zeros(2 * c), x, 0.0, bessel)[c:]])
    assert_close(moving, want_moving, np.abs(m) * 0.9 + np.abs(stats) * 0.1, rtol=4e-7, atol=0,
                 what=f"{what} moving")
    assert_unchanged([x] + [a for a in (gamma, beta) if a is not None],
                     [copies[0]] + [cp for a, cp in zip((gamma, beta), copies[2:]) if a is not None],
                     "batchnorm_train")


@pytest.mark.parametrize("rows", [2, 7, 64, 1000])
def test_batchnorm_train_large_mean(rows):
    """Channels of mean 1e4 and spread 1 (and -3e5, 0.5): the two-pass double statistics and
    the hi + lo mean keep y, and the backward, at float32 accuracy of the normalised value."""
    rng = np.random.default_rng(rows)
    c = 17
    loc = np.where(np.arange(c) % 2, 1e4, -3e5)
    x = (rng.standard_normal((rows, c)) * np.where(np.arange(c) % 2, 1.0, 0.5) + loc).astype(np.float32)
    dy = rng.standard_normal((rows, c)).astype(np.float32)
    gamma, beta = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    moving = np.concatenate([np.zeros(c), np.ones(c)]).astype(np.float32)
    y, saved = _train(x, moving, gamma, beta, epsilon=1e-6)
    want_y, _, _ = ref.batchnorm_train(x, gamma, beta, 1e-6)
    assert_close(y, want_y, _bn_forward_tol(x, gamma, beta, 1e-6), rtol=5e-7, atol=1e-7,
                 what="large mean y")
    got = _outs(rows, c)
    K.batchnorm_train_grad(x, dy, saved, gamma, *got)
    refs = ref.batchnorm_train_backward(x, dy, gamma, 1e-6)
    mags = ref.batchnorm_train_backward(x, dy, gamma, 1e-6, magnitude=True)
    for name, g, r, m in zip(("dx", "dgamma", "dbeta"), got, refs, mags):
        assert_close(g, r, m, rtol=1e-6, atol=0, what=f"large mean {name}")


def test_batchnorm_train_in_place():
    x, _, gamma, beta, moving, _ = _bn_inputs(64, 300, 5)
    m1, m2 = moving.copy(), moving.copy()
    y, saved = _train(x, m1, gamma, beta)
    buf = x.copy()
    _, saved2 = _train(buf, m2, gamma, beta, y=buf)
    assert np.array_equal(buf, y) and np.array_equal(saved, saved2) and np.array_equal(m1, m2)


MOMENTA = [0.99, 0.9, 0.997, 0.5]


@pytest.mark.parametrize("bessel", [False, True], ids=["keras3", "bessel"])
@pytest.mark.parametrize("rows", [1, 2, 3, 64])
def test_moving_statistics_update_is_keras_float32(rows, bessel):
    """moving * float32(momentum) + stat * float32(1 - momentum), each product rounded to
    float32 then added (Keras 3's ops in TF), bit for bit; 1 - momentum is taken in double
    as Keras's Python float is, which for 0.99 differs from 1 - float32(0.99)."""
    c = 33
    x, _, gamma, beta, moving0, _ = _bn_inputs(rows, c, 40 + rows)
    # momentum 0: the stored statistics are the batch mean and var_u rounded once.
    stats = np.full(2 * c, 7.0, np.float32)
    _, saved = _train(x, stats, gamma, beta, momentum=0.0, bessel=bessel)
    want = ref.moving_update(np.zeros(2 * c), x, 0.0, bessel)
    assert np.array_equal(stats[:c], saved[:c])
    assert_close(stats, want, np.abs(want) + 1e-12, rtol=2 ** -24 * 1.001, atol=0,
                 what="batch statistics")
    if rows == 1:
        assert np.all(stats[c:] == 0)                   # var = 0; rows = 1 keeps it (TF)
        assert np.all(saved[c:] == np.float32(1 / np.sqrt(np.float64(np.float32(1e-3)))))
    assert np.float32(1 - 0.99) != np.float32(1) - np.float32(0.99)
    for momentum in MOMENTA:
        moving = moving0.copy()
        _train(x, moving, gamma, beta, momentum=momentum, bessel=bessel)
        keep, take = np.float32(momentum), np.float32(1.0 - momentum)
        expected = moving0 * keep + stats * take          # numpy: two roundings, then a third
        assert np.array_equal(moving, expected), (momentum, moving - expected)
    moving = moving0.copy()
    _train(x, moving, gamma, beta, momentum=1.0, bessel=bessel)
    assert np.array_equal(moving, moving0)


def test_batchnorm_train_nan_propagates():
    """A NaN in a channel makes that channel's y, saved statistics and moving statistics
    NaN, not a silent finite value; the other channels are untouched by it."""
    x, dy, gamma, beta, moving, _ = _bn_inputs(7, 5, 3)
    clean_moving = moving.copy()
    y_clean, saved_clean = _train(x, clean_moving, gamma, beta)
    xn = x.copy()
    xn[3, 2] = np.nan
    y, saved = _train(xn, moving, gamma, beta)
    assert np.isnan(y[:, 2]).all()
    assert np.isnan(saved[[2, 7]]).all() and np.isnan(moving[[2, 7]]).all()
    keep = [0, 1, 3, 4]
    assert np.array_equal(y[:, keep], y_clean[:, keep])
    assert np.array_equal(moving[keep], clean_moving[keep])
    got = _outs(7, 5)
    K.batchnorm_train_grad(xn, dy, saved, gamma, *got)
    assert all(np.isnan(g[..., 2]).all() for g in got[:2])
    dyn = dy.copy()
    dyn[0, 4] = np.nan
    K.batchnorm_train_grad(x, dyn, saved_clean, gamma, *got)
    assert all(np.isnan(g[..., 4]).all() for g in got)
    assert np.isfinite(got[0][:, :4]).all()


# --- BatchNormalization, training mode: backward -----------------------------------------------

@pytest.mark.parametrize("rows, c, affine, _", _grid())
def test_batchnorm_train_grad_matches_reference(rows, c, affine, _):
    x, dy, gamma, beta, moving, copies = _bn_inputs(rows, c, rows * 7 + c, affine)
    _, saved = _train(x, moving, gamma, beta)
    (saved,), saved_copy = frozen(saved)
    got = _outs(rows, c)
    K.batchnorm_train_grad(x, dy, saved, gamma, *got)
    refs = ref.batchnorm_train_backward(x, dy, gamma)
    mags = ref.batchnorm_train_backward(x, dy, gamma, magnitude=True)
    for name, g, r, m in zip(("dx", "dgamma", "dbeta"), got, refs, mags):
        assert_close(g, r, m, rtol=1e-6, atol=0, what=f"batchnorm_train_grad {name} r{rows} c{c}")
    assert_unchanged([x, dy, saved], [copies[0], copies[1], saved_copy[0]], "batchnorm_train_grad")


@pytest.mark.parametrize("want", [("dx",), ("dgamma",), ("dbeta",), ("dgamma", "dbeta"),
                                  ("dx", "dbeta")])
def test_batchnorm_train_grad_optional_outputs_and_in_place(want):
    rows, c = 64, 300
    x, dy, gamma, beta, moving, _ = _bn_inputs(rows, c, 11)
    _, saved = _train(x, moving, gamma, beta)
    full = _outs(rows, c)
    K.batchnorm_train_grad(x, dy, saved, gamma, *full)
    got = _outs(rows, c, want)
    K.batchnorm_train_grad(x, dy, saved, gamma, *got)
    for g, f in zip(got, full):
        assert g is None or np.array_equal(g, f)
    buf = dy.copy()
    K.batchnorm_train_grad(x, buf, saved, gamma, buf, got[1], got[2])       # dx is dy
    assert np.array_equal(buf, full[0])


def _fd_check(f, base, grad, v, h, magnitude, what):
    """<grad, v> against the 4th-order directional derivative of f along v.  Tolerance: the
    float32 rounding of f (magnitude: the sum of |terms| of f) and of the perturbed inputs
    (each rounded to float32: eps |base| per element through |grad|) over h, plus 1e-5 of the
    terms of <grad, v> (the kernel's own rounding and the stencil's truncation)."""
    fd = directional(f, base.astype(np.float64), v, h)
    g = float((grad.astype(np.float64) * v).sum())
    tol = (rounding_error(4 * magnitude, h) + rounding_error((np.abs(grad) * np.abs(base)).sum(), h)
           + 1e-5 * float((np.abs(grad) * np.abs(v)).sum()))
    assert abs(fd - g) <= tol, (what, fd, g, tol)
    return abs(fd - g) / float((np.abs(grad) * np.abs(v)).sum())


@pytest.mark.parametrize("rows, c", [(2, 3), (7, 5), (16, 4), (3, 17)])
def test_batchnorm_train_grad_matches_finite_differences(rows, c):
    """Loss sum(y * r) with a random r (sum(y) alone has zero gradient in x): directional
    derivatives through the forward kernel for x, gamma, beta; and the float64 reference
    backward against finite differences of the float64 reference forward, tightly."""
    x, _, gamma, beta, moving, _ = _bn_inputs(rows, c, 100 + rows)
    rng = np.random.default_rng(rows * c)
    r = rng.standard_normal((rows, c))
    dy = r.astype(np.float32)
    _, saved = _train(x, moving.copy(), gamma, beta)
    dx, dg, db = _outs(rows, c)
    K.batchnorm_train_grad(x, dy, saved, gamma, dx, dg, db)

    def loss(xv, g, b):
        y, _ = _train(xv, moving.copy(), g, b)
        return float((y * r).sum())

    mag = float((np.abs(ref.batchnorm_train(x, gamma, beta)[0]) * np.abs(r)).sum())
    for name, grad, base, f, h in (("x", dx, x, lambda t: loss(t, gamma, beta), 0.03),
                                   ("gamma", dg, gamma, lambda t: loss(x, t, beta), 0.25),
                                   ("beta", db, beta, lambda t: loss(x, gamma, t), 0.25)):
        _fd_check(f, base, grad, rng.standard_normal(base.shape), h, mag, f"batchnorm {name}")
    # The reference against itself in float64 (h = 1e-3: truncation ~1e-12, rounding ~1e-13).
    v = rng.standard_normal(x.shape)
    f64 = lambda t: float((ref.batchnorm_train(t, gamma, beta)[0] * r).sum())
    fd = sum(w * f64(x + o * 1e-3 * v) for o, w in ((-2, 1 / 12), (-1, -8 / 12), (1, 8 / 12), (2, -1 / 12))) / 1e-3
    want = float((ref.batchnorm_train_backward(x, r, gamma)[0] * v).sum())
    assert abs(fd - want) <= 1e-8 * (1 + abs(want))


# --- LayerNormalization / RMSNormalization backward -------------------------------------------

def _ln_variants(mode):
    return {"layer": [(True, True), (True, False), (False, False)],
            "layer_rms_scaling": [(True, False), (False, False)], "rms": [(True, False), (False, False)]}[mode]


def _ln_grid():
    out = []
    for i, (rows, cols) in enumerate(CASES):
        mode = MODES[i % 3]
        variants = _ln_variants(mode)
        affine = variants[(i // 3) % len(variants)]
        out.append(pytest.param(rows, cols, mode, affine,
                                id=f"r{rows}_c{cols}_{mode}_{AFFINE_NAMES[affine]}"))
    return out


def _ln_inputs(rows, cols, seed, affine, loc=1.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)) * 3 + loc * rng.standard_normal((rows, 1))
    (x, dy, gamma, beta), copies = frozen(x, rng.standard_normal((rows, cols)),
                                          rng.standard_normal(cols), rng.standard_normal(cols))
    return x, dy, gamma if affine[0] else None, beta if affine[1] else None, copies


def _ln_grad(x, dy, gamma, epsilon, mode, want=("dx", "dgamma", "dbeta")):
    rows, cols = x.shape
    if mode != "layer":
        want = tuple(w for w in want if w != "dbeta")
    got = _outs(rows, cols, want)
    K.layernorm_grad(x, dy, gamma, *got, epsilon=epsilon, mode=K.NORM_MODES[mode])
    return got


@pytest.mark.parametrize("rows, cols, mode, affine", _ln_grid())
def test_layernorm_grad_matches_reference(rows, cols, mode, affine):
    x, dy, gamma, _, copies = _ln_inputs(rows, cols, rows * 31 + cols, affine)
    eps = 1e-6 if mode == "rms" else 1e-3
    got = _ln_grad(x, dy, gamma, eps, mode)
    refs = ref.layernorm_backward(x, dy, gamma, eps, mode)
    mags = ref.layernorm_backward(x, dy, gamma, eps, mode, magnitude=True)
    for name, g, r, m in zip(("dx", "dgamma", "dbeta"), got, refs, mags):
        if r is None:
            assert g is None
            continue
        assert_close(g, r, m, rtol=1e-6, atol=0, what=f"layernorm_grad {mode} {name} r{rows} c{cols}")
    assert_unchanged([x, dy], copies[:2], "layernorm_grad")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cols", [64, 300])
def test_layernorm_grad_large_mean(mode, cols):
    """Rows of mean 1e4 and spread 1 (layer_rms_scaling then has b ~ mean / std large)."""
    rng = np.random.default_rng(cols)
    x = (rng.standard_normal((5, cols)) + 1e4).astype(np.float32)
    dy = rng.standard_normal((5, cols)).astype(np.float32)
    gamma = rng.standard_normal(cols).astype(np.float32)
    got = _ln_grad(x, dy, gamma, 1e-6, mode)
    refs = ref.layernorm_backward(x, dy, gamma, 1e-6, mode)
    mags = ref.layernorm_backward(x, dy, gamma, 1e-6, mode, magnitude=True)
    for name, g, r, m in zip(("dx", "dgamma", "dbeta"), got, refs, mags):
        if r is not None:
            assert_close(g, r, m, rtol=1e-6, atol=0, what=f"large mean {mode} {name}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cols", [33, 300])
def test_layernorm_grad_optional_outputs_and_in_place(mode, cols):
    x, dy, gamma, _, _ = _ln_inputs(9, cols, 3, (True, False))
    full = _ln_grad(x, dy, gamma, 1e-3, mode)
    for want in (("dx",), ("dgamma",), ("dbeta",), ("dx", "dgamma")):
        got = _ln_grad(x, dy, gamma, 1e-3, mode, want)
        for g, f in zip(got, full):
            assert g is None or np.array_equal(g, f)
    buf = dy.copy()
    K.layernorm_grad(x, buf, gamma, buf, full[1].copy(), None, mode=K.NORM_MODES[mode])  # dx is dy
    assert np.array_equal(buf, full[0])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rows, cols", [(1, 5), (3, 8), (4, 17)])
def test_layernorm_grad_matches_finite_differences(rows, cols, mode):
    affine = _ln_variants(mode)[0]
    x, _, gamma, beta, _ = _ln_inputs(rows, cols, 7 * rows + cols, affine)
    rng = np.random.default_rng(rows + cols)
    r = rng.standard_normal((rows, cols))
    eps = 1e-3
    dx, dg, db = _ln_grad(x, r.astype(np.float32), gamma, eps, mode)

    def loss(xv, g, b):
        y = np.empty(xv.shape, np.float32)
        K.layernorm(xv, y, g, b, epsilon=eps, mode=K.NORM_MODES[mode])
        return float((y * r).sum())

    mag = float((np.abs(ref.layernorm_forward(x, gamma, beta, eps, mode)) * np.abs(r)).sum())
    checks = [("x", dx, x, lambda t: loss(t, gamma, beta), 0.03),
              ("gamma", dg, gamma, lambda t: loss(x, t, beta), 0.25)]
    if db is not None:
        checks.append(("beta", db, beta, lambda t: loss(x, gamma, t), 0.25))
    for name, grad, base, f, h in checks:
        _fd_check(f, base, grad, rng.standard_normal(base.shape), h, mag, f"layernorm {mode} {name}")
    v = rng.standard_normal(x.shape)
    f64 = lambda t: float((ref.layernorm_forward(t, gamma, beta, eps, mode) * r).sum())
    fd = sum(w * f64(x + o * 1e-3 * v) for o, w in ((-2, 1 / 12), (-1, -8 / 12), (1, 8 / 12), (2, -1 / 12))) / 1e-3
    want = float((ref.layernorm_backward(x, r, gamma, eps, mode)[0] * v).sum())
    assert abs(fd - want) <= 1e-8 * (1 + abs(want))


def test_layernorm_grad_nan_propagates():
    x, dy, gamma, _, _ = _ln_inputs(4, 6, 1, (True, True))
    xn = x.copy()
    xn[2, 3] = np.nan
    dx, dg, db = _ln_grad(xn, dy, gamma, 1e-3, "layer")
    assert np.isnan(dx[2]).all() and np.isfinite(dx[[0, 1, 3]]).all()
    assert np.isnan(dg).all() and np.isfinite(db).all()


# --- validation ----------------------------------------------------------------------------

def test_training_normalization_validation():
    rows, c = 4, 3
    x = np.ones((rows, c), np.float32)
    y = np.empty((rows, c), np.float32)
    dy = np.ones((rows, c), np.float32)
    mv, saved, v3 = np.ones(2 * c, np.float32), np.ones(2 * c, np.float32), np.ones(c, np.float32)
    dx = np.empty((rows, c), np.float32)
    big = np.zeros(64, np.float32)
    bad = [
        lambda: K.batchnorm_train(x, mv[:-1], None, None, y, saved),
        lambda: K.batchnorm_train(x, mv, None, None, y, saved[:-1]),
        lambda: K.batchnorm_train(x, mv, None, None, y[:3], saved),
        lambda: K.batchnorm_train(x, mv, v3[:2], None, y, saved),
        lambda: K.batchnorm_train(x, mv, None, v3[:2], y, saved),
        lambda: K.batchnorm_train(x, mv, None, None, y, saved, epsilon=-1.0),
        lambda: K.batchnorm_train(x, mv, None, None, y, saved, momentum=1.5),
        lambda: K.batchnorm_train(np.ones((0, c), np.float32), mv, None, None,
                                  np.empty((0, c), np.float32), saved),
        lambda: K.batchnorm_train(x, mv, None, None, y, mv),                        # saved is moving
        lambda: K.batchnorm_train(x, big[:6], None, None, y, big[4:10]),            # they overlap
        lambda: K.batchnorm_train(x, mv, None, None, y, y.reshape(-1)[:6]),         # saved in y
        lambda: K.batchnorm_train(x, mv, mv[:3], None, y, saved),                   # gamma in moving
        lambda: K.batchnorm_train(big[:12].reshape(4, 3), mv, None, None,
                                  big[1:13].reshape(4, 3), saved),                   # y partially x
        lambda: K.batchnorm_inference(x, mv[:-1], None, None, y),
        lambda: K.batchnorm_inference(x, mv, None, None, y, epsilon=-1.0),
        lambda: K.batchnorm_inference(x, y.reshape(-1)[:6], None, None, y),         # y over moving
        lambda: K.batchnorm_train_grad(x, dy[:3], saved, None, dx, None, None),
        lambda: K.batchnorm_train_grad(x, dy, saved[:5], None, dx, None, None),
        lambda: K.batchnorm_train_grad(x, dy, saved, v3[:2], dx, None, None),
        lambda: K.batchnorm_train_grad(x, dy, saved, None, dx[:3], None, None),
        lambda: K.batchnorm_train_grad(x, dy, saved, None, None, np.empty(2, np.float32), None),
        lambda: K.batchnorm_train_grad(x, dy, saved, None, None, None, np.empty(c, np.float64)),
        lambda: K.batchnorm_train_grad(x, dy, saved, None, dx, dx[0], None),        # dgamma in dx
        lambda: K.batchnorm_train_grad(x, dy, saved, None, None, saved[:3], None),  # dgamma in saved
        lambda: K.batchnorm_train_grad(x, dy, saved, None, x, None, None),          # dx is x
        lambda: K.batchnorm_train_grad(big[:12].reshape(4, 3), big[12:24].reshape(4, 3), saved,
                                       None, big[13:25].reshape(4, 3), None, None),  # dx partly dy
        lambda: K.batchnorm_inference_grad(x, dy, mv[:5], None, dx, None, None),
        lambda: K.batchnorm_inference_grad(x, dy, mv, None, dx, None, None, epsilon=-1.0),
        lambda: K.layernorm_grad(x, dy[:, :2].copy(), None, dx, None, None),
        lambda: K.layernorm_grad(x, dy, v3[:2], dx, None, None),
        lambda: K.layernorm_grad(x, dy, None, dx, None, None, mode=7),
        lambda: K.layernorm_grad(x, dy, None, dx, None, v3.copy(), mode=K.NORM_MODES["rms"]),
        lambda: K.layernorm_grad(x, dy, None, dx, None, None, epsilon=-1.0),
        lambda: K.layernorm_grad(x, dy, None, dx, dx[1], None),                     # dgamma in dx
    ]
    for i, call in enumerate(bad):
        with pytest.raises(K.KernelShapeError):
            call()
            pytest.fail(f"case {i} was accepted")


# --- threads ---------------------------------------------------------------------------------

def _run_all(x, dy, gamma, beta, moving):
    """Every new kernel once, into fresh outputs."""
    moving = moving.copy()
    y, saved = _train(x, moving, gamma, beta, bessel=True)
    bn = _outs(*x.shape)
    K.batchnorm_train_grad(x, dy, saved, gamma, *bn)
    inf_y = np.empty_like(y)
    K.batchnorm_inference(x, moving, gamma, beta, inf_y)
    inf = _outs(*x.shape)
    K.batchnorm_inference_grad(x, dy, moving, gamma, *inf)
    ln = [g for mode in MODES for g in _ln_grad(x, dy, gamma, 1e-3, mode) if g is not None]
    return [y, saved, moving, inf_y] + bn + inf + ln


def test_kernels_give_the_same_bits_from_other_threads():
    """The kernels release the GIL and keep all state on the stack: two threads running them
    at once give bit for bit what the main thread gets."""
    x, dy, gamma, beta, moving, _ = _bn_inputs(1000, 300, 77)
    want = _run_all(x, dy, gamma, beta, moving)
    results, errors = {}, []

    def work(i):
        try:
            results[i] = [_run_all(x, dy, gamma, beta, moving) for _ in range(3)]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for runs in results.values():
        for got in runs:
            assert all(np.array_equal(g, w, equal_nan=True) for g, w in zip(got, want))


# --- the plan runner's op rows ---------------------------------------------------------------

def _plan_row(name, y=-1, x0=-1, x1=-1, w=-1, b=-1, y2=-1, x2=-1, ints=(), floats=()):
    ops = np.zeros((1, K.ROW_INTS), np.int64)
    f = np.zeros((1, K.ROW_FLOATS), np.float32)
    ops[0, :10] = [K.OPCODES[name], y, x0, x1, w, b, -1, y2, x2, 0]
    ops[0, K.ROW_PARAM_START:K.ROW_PARAM_START + len(ints)] = ints
    f[0, 3:3 + len(floats)] = floats
    return ops, f


def test_runner_ops_match_the_wrappers():
    """OP_BATCHNORM_FORWARD / _BACKWARD (moving statistics + epsilon),
    OP_BATCHNORM_TRAIN_FORWARD / _BACKWARD and OP_LAYERNORM_BACKWARD with the documented
    operand layout give the wrappers' bits."""
    rows, c = 7, 17
    x, dy, gamma, beta, moving, _ = _bn_inputs(rows, c, 9)
    n = rows * c
    # arena: x | dy | y | dx ; params: gamma | beta | moving | saved ; grads: dgamma | dbeta
    arena = np.concatenate([x.ravel(), dy.ravel(), np.full(2 * n, np.nan)]).astype(np.float32)
    params = np.concatenate([gamma, beta, moving, np.full(2 * c, np.nan)]).astype(np.float32)
    grads = np.full(2 * c, np.nan, np.float32)
    A = lambda off: off                                             # base 0
    P = lambda off: (2 << REF_BASE_SHIFT) | off
    G = lambda off: (3 << REF_BASE_SHIFT) | off
    X, DY, Y, DX = A(0), A(n), A(2 * n), A(3 * n)
    GAMMA, BETA, MOVING, SAVED = P(0), P(c), P(2 * c), P(4 * c)
    DG, DB = G(0), G(c)
    weights = np.zeros(1, np.float32)
    nr = K.gemm_isa()[2]

    def run(row):
        K.run_plan(row[0], row[1], arena, weights, arena.size, nr, params, grads)

    def view(buf, off, shape):
        return buf[off:off + int(np.prod(shape))].reshape(shape)

    eps, momentum = np.float32(1e-3), 0.99
    # training forward: the row carries float32(momentum) and float32(1 - momentum), the
    # difference taken in double as the wrapper (and Keras) take it
    want_moving = moving.copy()
    want_y, want_saved = _train(x, want_moving, gamma, beta, momentum=momentum,
                                epsilon=float(eps), bessel=True)
    run(_plan_row("batchnorm_train_forward", y=Y, x0=X, w=GAMMA, b=BETA, x2=MOVING, y2=SAVED,
                  ints=(rows, c, 1), floats=(momentum, eps, 1.0 - momentum)))
    assert np.array_equal(view(arena, 2 * n, (rows, c)), want_y)
    assert np.array_equal(params[4 * c:], want_saved)
    assert np.array_equal(params[2 * c:4 * c], want_moving)
    # training backward
    want = _outs(rows, c)
    K.batchnorm_train_grad(x, dy, want_saved, gamma, *want)
    run(_plan_row("batchnorm_train_backward", y=DX, x0=X, x1=DY, w=GAMMA, x2=SAVED, y2=DG, b=DB,
                  ints=(rows, c)))
    assert np.array_equal(view(arena, 3 * n, (rows, c)), want[0])
    assert np.array_equal(grads[:c], want[1]) and np.array_equal(grads[c:], want[2])
    # inference forward and backward from the (updated) moving statistics, no beta
    mv = params[2 * c:4 * c].copy()
    want_y = np.empty_like(x)
    K.batchnorm_inference(x, mv, gamma, None, want_y, epsilon=float(eps))
    run(_plan_row("batchnorm_forward", y=Y, x0=X, w=GAMMA, x2=MOVING, ints=(rows, c),
                  floats=(eps,)))
    assert np.array_equal(view(arena, 2 * n, (rows, c)), want_y)
    want = _outs(rows, c, ("dx", "dgamma"))
    K.batchnorm_inference_grad(x, dy, mv, gamma, *want, epsilon=float(eps))
    run(_plan_row("batchnorm_backward", y=DX, x0=X, x1=DY, w=GAMMA, x2=MOVING, y2=DG,
                  ints=(rows, c), floats=(eps,)))
    assert np.array_equal(view(arena, 3 * n, (rows, c)), want[0])
    assert np.array_equal(grads[:c], want[1])
    # layernorm backward, each mode
    for mode in MODES:
        want = _ln_grad(x, dy, gamma, float(eps), mode)
        grads[:] = np.nan
        run(_plan_row("layernorm_backward", y=DX, x0=X, x1=DY, w=GAMMA, y2=DG,
                      b=DB if mode == "layer" else -1, ints=(rows, c, K.NORM_MODES[mode]),
                      floats=(eps,)))
        assert np.array_equal(view(arena, 3 * n, (rows, c)), want[0]), mode
        assert np.array_equal(grads[:c], want[1]), mode
        if mode == "layer":
            assert np.array_equal(grads[c:], want[2])


def test_opcode_numbers():
    assert (K.OPCODES["batchnorm_train_forward"], K.OPCODES["batchnorm_train_backward"],
            K.OPCODES["layernorm_backward"]) == (40, 41, 42)
    assert len(set(K.OPCODES.values())) == len(K.OPCODES)


# --- against TensorFlow itself ---------------------------------------------------------------

_KERAS_SCRIPT = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras, tf_keras
spec = json.loads(sys.argv[1])
d = np.load(spec["inputs"])
out = {}

def grads(layer, x, r, names):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * r)
    vs = [getattr(layer, n) for n in names]
    g = tape.gradient(loss, [x] + vs)
    return [y.numpy()] + [t.numpy() for t in g]

for tag, x, r in (("2d", d["x2"], d["r2"]), ("4d", d["x4"], d["r4"])):
    c = x.shape[-1]
    weights = [d["gamma"][:c], d["beta"][:c], d["mm"][:c], d["mv"][:c]]
    bn = keras.layers.BatchNormalization(momentum=spec["momentum"], epsilon=spec["epsilon"])
    bn.build(x.shape)
    bn.set_weights(weights)
    y, dx, dg, db = grads(bn, x, r, ["gamma", "beta"])
    out.update({f"k3_{tag}_y": y, f"k3_{tag}_dx": dx, f"k3_{tag}_dgamma": dg,
                f"k3_{tag}_dbeta": db, f"k3_{tag}_mm": bn.moving_mean.numpy(),
                f"k3_{tag}_mv": bn.moving_variance.numpy()})
    tk = tf_keras.layers.BatchNormalization(momentum=spec["momentum"], epsilon=spec["epsilon"])
    tk.build(x.shape)
    tk.set_weights(weights)
    tk(tf.constant(x), training=True)
    out[f"tk_{tag}_mm"] = tk.moving_mean.numpy()
    out[f"tk_{tag}_mv"] = tk.moving_variance.numpy()
    out[f"tk_{tag}_fused"] = np.array(bool(tk.fused))

x, r = d["xl"], d["rl"]
c = x.shape[-1]
for mode, layer, names in (
        ("layer", keras.layers.LayerNormalization(epsilon=spec["epsilon"]), ["gamma", "beta"]),
        ("layer_rms_scaling", keras.layers.LayerNormalization(epsilon=spec["epsilon"], rms_scaling=True), ["gamma"]),
        ("rms", keras.layers.RMSNormalization(epsilon=spec["epsilon"]), ["scale"])):
    layer.build(x.shape)
    layer.set_weights([d["gamma"][:c], d["beta"][:c]][:len(names)])
    res = grads(layer, x, r, names)
    for name, v in zip(["y", "dx", "dgamma", "dbeta"], res):
        out[f"{mode}_{name}"] = v
np.savez(spec["out"], **out)
"""


@pytest.mark.keras
@pytest.mark.slow
def test_normalization_training_matches_tensorflow(keras_py, tmp_path):
    """Keras 3 BatchNormalization(training=True) and LayerNormalization / RMSNormalization
    under tf.GradientTape (y, the gradients of sum(y * r), the moving statistics), and the
    moving statistics of tf.keras's fused (4-D, Bessel) and non-fused (2-D) paths.  TF works
    in float32 with its own reductions and x * inv - mean * inv order, so the tolerances are
    a few float32 ulps of each result's magnitude (measured: y within 7, the gradients 3.5
    ulp of their magnitude); the moving statistics within 2 ulp (measured: Keras 3 and the
    fused tf.keras path bit for bit, tf.keras's 2-D assign_sub form within 1.3 ulp)."""
    from fixtures import run_keras_script       # reads the fixture manifest: only here

    rng = np.random.default_rng(2024)
    c = 17
    data = dict(x2=rng.standard_normal((9, c)) * 2 + 1, r2=rng.standard_normal((9, c)),
                x4=rng.standard_normal((3, 4, 5, c)) * 0.5 - 2, r4=rng.standard_normal((3, 4, 5, c)),
                xl=rng.standard_normal((6, c)) * 3 + 1, rl=rng.standard_normal((6, c)),
                gamma=rng.standard_normal(c), beta=rng.standard_normal(c),
                mm=rng.standard_normal(c), mv=rng.random(c) + 0.5)
    data = {k: v.astype(np.float32) for k, v in data.items()}
    momentum, epsilon = 0.99, 1e-3
    tf_out = run_keras_script(keras_py, _KERAS_SCRIPT, tmp_path, data, momentum=momentum,
                              epsilon=epsilon)
    moving0 = np.concatenate([data["mm"], data["mv"]])
    for tag in ("2d", "4d"):
        x = data[f"x{tag[0]}"].reshape(-1, c)
        r = data[f"r{tag[0]}"].reshape(-1, c)
        gamma, beta = data["gamma"], data["beta"]
        for bessel, prefix in ((False, "k3"), (tag == "4d", "tk")):
            moving = moving0.copy()
            y, saved = _train(x, moving, gamma, beta, momentum, epsilon, bessel)
            want = np.concatenate([tf_out[f"{prefix}_{tag}_mm"], tf_out[f"{prefix}_{tag}_mv"]])
            assert_close(moving, want, np.abs(want), rtol=2 * 2 ** -23, atol=0,
                         what=f"{prefix} {tag} moving statistics")
        assert bool(tf_out[f"tk_{tag}_fused"]) == (tag == "4d")
        mag = _bn_forward_tol(x, gamma, beta, epsilon) + 1
        assert_close(y, tf_out[f"k3_{tag}_y"].reshape(-1, c), mag, rtol=4e-6, atol=0,
                     what=f"BatchNormalization {tag} y")
        got = _outs(*x.shape)
        K.batchnorm_train_grad(x, r, saved, gamma, *got)
        mags = ref.batchnorm_train_backward(x, r, gamma, epsilon, magnitude=True)
        for name, g, m in zip(("dx", "dgamma", "dbeta"), got, mags):
            assert_close(g, tf_out[f"k3_{tag}_{name}"].reshape(g.shape), m, rtol=2e-6, atol=0,
                         what=f"BatchNormalization {tag} {name}")
    x, r = data["xl"], data["rl"]
    for mode in MODES:
        gamma = data["gamma"]
        beta = data["beta"] if mode == "layer" else None
        y = np.empty_like(x)
        K.layernorm(x, y, gamma, beta, epsilon=epsilon, mode=K.NORM_MODES[mode])
        assert_close(y, tf_out[f"{mode}_y"], np.abs(ref.layernorm_forward(x, gamma, beta, epsilon, mode)) + 1,
                     rtol=4e-6, atol=0, what=f"{mode} y")
        got = _ln_grad(x, r, gamma, epsilon, mode)
        mags = ref.layernorm_backward(x, r, gamma, epsilon, mode, magnitude=True)
        for name, g, m in zip(("dx", "dgamma", "dbeta"), got, mags):
            if g is not None:
                assert_close(g, tf_out[f"{mode}_{name}"], m, rtol=2e-6, atol=0,
                             what=f"{mode} {name}")
