"""edgecore.utils: set_random_seed, like keras.utils.set_random_seed.

The seed drives what is random in edgecore's training: the per-epoch shuffle in fit and
the Dropout masks (a counter-based generator, kernels/elementwise.pxi).  Keras's own
random streams cannot be reproduced, so runs are repeatable within edgecore, not
identical to a Keras run with the same seed.
"""
import secrets

_SEED = None


def set_random_seed(seed):
    """Make edgecore's shuffling and dropout repeatable from now on."""
    global _SEED
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    _SEED = seed


def _global_seed():
    """The seed set by set_random_seed, or fresh entropy when none was set."""
    return _SEED if _SEED is not None else secrets.randbits(63)
