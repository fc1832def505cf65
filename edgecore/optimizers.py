"""edgecore.optimizers: SGD, Adam, AdamW, RMSprop (Keras 3 names, defaults and rules)."""
from .train.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop, get

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Optimizer", "get"]
