"""Every trainable layer's backward, in context, against finite differences of the training
loss (the second check of STYLE's "backward checked twice"; the first is the Keras
traces in test_training_parity.py).

For each Keras-written training fixture: every layer the file leaves trainable trains, the
loss is MSE against fixed random targets, and the gradient the training step writes into
the grads buffer is compared with central differences of the same step's loss along the
gradient itself and along a random direction.  The loss is the training step's (Dropout
off at rate 0, BatchNormalization on batch statistics), evaluated with the parameters
and moving statistics restored after every step.
"""
import numpy as np
import pytest

import edgecore as ec
from fixtures import CASES, FIXTURES

TRAINING = sorted(name for name, case in CASES.items()
                  if "training" in case.get("tags", ()) and not case.get("large")
                  and (FIXTURES / f"{name}.k3.h5").exists()
                  and "train/x" in np.load(FIXTURES / f"{name}.k3.npz").files)


def _step_loss(model, x, y, w):
    """The training step's loss at trainable parameters w (everything restored after)."""
    trainer = model.trainer
    saved = trainer.params.copy()
    trainer.params[:trainer.n_trainable] = w
    try:
        return float(np.float64(model.train_on_batch(x, y)))
    finally:
        trainer.params[:] = saved


def _directional(model, x, y, w0, v, h):
    """d/dt loss(w0 + t v) at 0, 4th-order central differences, in float64."""
    total = 0.0
    for offset, weight in ((-2, 1 / 12), (-1, -8 / 12), (1, 8 / 12), (2, -1 / 12)):
        total += weight * _step_loss(model, x, y, (w0 + offset * h * v).astype(np.float32))
    return total / h


@pytest.mark.parametrize("case", TRAINING)
def test_training_gradients_match_finite_differences(case):
    ref = np.load(FIXTURES / f"{case}.k3.npz")
    x = ref["train/x"][0]
    model = ec.load(FIXTURES / f"{case}.k3.h5")
    out_shape = model.output_shape
    y = np.random.default_rng(0).standard_normal((len(x),) + tuple(out_shape[1:]))
    y = y.astype(np.float32)
    model.compile(optimizer=ec.optimizers.SGD(1e-3), loss="mse")
    trainer = model.trainer
    w0 = trainer.params[:trainer.n_trainable].astype(np.float64)
    _step_loss(model, x, y, w0.astype(np.float32))  # fills the grads buffer at w0
    grad = trainer.grads.astype(np.float64)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    rng = np.random.default_rng(1)
    for v in (grad / np.linalg.norm(grad), rng.standard_normal(grad.shape)):
        v = v / np.linalg.norm(v)
        # |v| = 1 over every trained parameter: a step of 1e-3 keeps the 4th-order
        # truncation far below the tolerance even on the transfer head (1280 ReLU6
        # features, large curvature), measured converged from 3e-3 down to 3e-4.
        h = 1e-3
        fd = _directional(model, x, y, w0, v, h)
        exact = float(grad @ v)
        # Round-off of the float32 loss (a few ulp of |L| per evaluation, over h).
        loss = abs(_step_loss(model, x, y, w0.astype(np.float32)))
        tolerance = 1e-3 * np.linalg.norm(grad) + 100 * 6e-8 * loss / h
        assert abs(fd - exact) <= tolerance, (case, fd, exact, tolerance)
