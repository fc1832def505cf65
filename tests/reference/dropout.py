"""Dropout mask reference: the splitmix64 counter stream of kernels/dropout.pxi in plain
Python integers, and Keras's inverted-dropout scale 1 / (1 - rate) rounded to float32."""
import math

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1


def splitmix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def dropout_mask(n, rate, state):
    """(mask, new_state): element i keeps iff the top 32 bits of splitmix64(state + (i + 1)
    * GOLDEN) are >= ceil(rate * 2^32); kept elements hold float32(1 / (1 - rate))."""
    threshold = math.ceil(rate * 2.0 ** 32)
    scale = np.float32(1.0 / (1.0 - rate))
    keep = [(splitmix64((state + (i + 1) * GOLDEN) & MASK64) >> 32) >= threshold
            for i in range(n)]
    return np.where(keep, scale, np.float32(0)).astype(np.float32), (state + n * GOLDEN) & MASK64
