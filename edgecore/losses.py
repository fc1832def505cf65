"""edgecore.losses: the Keras 3 losses edgecore trains with (mean over the batch)."""
from .train.losses import (BinaryCrossentropy, CategoricalCrossentropy, Loss,
                           MeanSquaredError, SparseCategoricalCrossentropy, get)

__all__ = ["SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "Loss", "get"]
