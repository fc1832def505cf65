"""SGD, Adam, AdamW and RMSprop with Keras 3's defaults and update rules.

An optimizer updates the model's trainable parameters in one call per step: they sit
contiguously in the params buffer (Keras layout), the gradients in a buffer of the same
layout, and each optimizer slot (momentum, velocity...) is one more such buffer, so the
update is a single elementwise kernel (kernels/optimizers.pxi) over all of them, with
Keras's float32 operation order.  Alignment padding between parameters is zero in all
buffers and stays zero under every rule here.

Per-step scalars are computed in float32 like Keras's TensorFlow ops (kernels/
optimizers.pxi), e.g. Adam's alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) with
t = iterations + 1.
Weight decay (AdamW, or weight_decay= on any optimizer) applies w -= w * wd * lr before
the update, to every trainable variable, as Keras's _apply_weight_decay does.
"""
import math
import numbers

import numpy as np

from .. import _kernels

F32 = np.float32


def _finite(value, name, note=""):
    """A finite, non-negative float from a user's hyper-parameter, or a ValueError naming it
    (NaN would reach every weight through the first update)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 {note}, got {value!r}".replace(
            "  ", " ").replace(" ,", ","))
    return float(value)


class Optimizer:
    keras_name = None
    slot_names = ()

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, **unsupported):
        if unsupported:
            raise ValueError(f"{type(self).__name__}: unsupported options {sorted(unsupported)}")
        if clipnorm or clipvalue or global_clipnorm or use_ema:
            raise ValueError(f"{type(self).__name__}: gradient clipping and EMA are not "
                             "supported")
        self.learning_rate = _finite(learning_rate, "learning_rate", "(schedules are not "
                                     "supported); 0 is allowed, as in Keras")
        weight_decay = None if weight_decay is None else _finite(weight_decay, "weight_decay")
        self.weight_decay = None if not weight_decay else weight_decay
        self.iterations = 0
        self.slots = {}  # name -> float32 array, same layout as the trainable params

    # --- state -----------------------------------------------------------------------
    def build(self, n_floats, make_buffer):
        """Allocate one zeroed slot buffer per slot name via make_buffer(n) (an arena)."""
        self.slots = {}
        for name in self.slot_names:
            buf = make_buffer(n_floats)
            buf[...] = 0.0
            self.slots[name] = buf

    def slot_bytes(self, n_floats):
        return 4 * n_floats * len(self.slot_names)

    def variables(self):
        """Keras order for saving: iterations, learning_rate, then the slots."""
        return {"iteration": np.asarray(self.iterations, np.int64),
                "learning_rate": np.asarray(self.learning_rate, np.float32), **self.slots}

    # --- update ----------------------------------------------------------------------
    def apply(self, params, grads, nthreads=1):
        """One step on the whole trainable block (float32 arrays of equal size), split
        across nthreads threads (elementwise: the same bits at any count)."""
        lr = F32(self.learning_rate)
        if self.weight_decay is not None:
            _kernels.weight_decay_step(params, lr, F32(self.weight_decay), nthreads=nthreads)
        self._update(params, grads, lr, nthreads)
        self.iterations += 1

    def _update(self, params, grads, lr, nthreads):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.keras_name, "learning_rate": self.learning_rate,
                "weight_decay": self.weight_decay, "clipnorm": None, "global_clipnorm": None,
                "clipvalue": None, "use_ema": False}

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


class SGD(Optimizer):
    keras_name = "SGD"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if not 0.0 <= _finite(momentum, "momentum") <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.slot_names = ("momentum",) if self.momentum else ()

    def _update(self, params, grads, lr, nthreads):
        _kernels.sgd_step(params, grads, lr, self.slots.get("momentum"), F32(self.momentum),
                          self.nesterov, nthreads=nthreads)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    keras_name = "Adam"
    slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if amsgrad:
            raise ValueError("Adam(amsgrad=True) is not supported")
        self.beta_1, self.beta_2 = _finite(beta_1, "beta_1"), _finite(beta_2, "beta_2")
        self.epsilon = _finite(epsilon, "epsilon")

    def _update(self, params, grads, lr, nthreads):
        alpha = _kernels.adam_step_size(lr, self.beta_1, self.beta_2, self.iterations + 1)
        _kernels.adam_step(params, self.slots["momentum"], self.slots["velocity"], grads,
                           alpha, self.beta_1, self.beta_2, F32(self.epsilon),
                           nthreads=nthreads)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": False}


class AdamW(Adam):
    keras_name = "AdamW"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad,
                         weight_decay=weight_decay, **kwargs)
        if self.weight_decay is None:
            raise ValueError("AdamW needs a weight_decay")


class RMSprop(Optimizer):
    keras_name = "RMSprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if centered:
            raise ValueError("RMSprop(centered=True) is not supported")
        self.rho, self.momentum = _finite(rho, "rho"), _finite(momentum, "momentum")
        self.epsilon = _finite(epsilon, "epsilon")
        self.slot_names = ("velocity", "momentum") if self.momentum > 0 else ("velocity",)

    def _update(self, params, grads, lr, nthreads):
        _kernels.rmsprop_step(params, self.slots["velocity"], grads, lr, self.rho,
                              F32(self.momentum), F32(self.epsilon), self.slots.get("momentum"),
                              nthreads=nthreads)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": False}


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get(identifier):
    """An Optimizer from a Keras name ("adam") or an Optimizer instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"optimizer {identifier!r} is not supported; use one of "
                     f"{sorted(_BY_NAME)} or an edgecore.optimizers object")
