"""edgecore.callbacks: History and EarlyStopping with Keras 3 semantics."""
from .train.callbacks import Callback, EarlyStopping, History

__all__ = ["Callback", "EarlyStopping", "History"]
