"""edgecore.callbacks: History, EarlyStopping and TerminateOnNaN with Keras 3 semantics."""
from .train.callbacks import Callback, EarlyStopping, History, TerminateOnNaN

__all__ = ["Callback", "EarlyStopping", "History", "TerminateOnNaN"]
