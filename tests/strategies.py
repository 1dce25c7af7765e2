"""Hypothesis strategies shared by the test modules.

Values are generated from a drawn seed with NumPy (fast for whole tensors, and still shrinkable
through the seed); shapes and op configurations are drawn by hypothesis directly.
"""

import numpy as np
from hypothesis import strategies as st

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=5):
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(
        tuple
    )


def uniform(seed, shape, low=-2.0, high=2.0, dtype=np.float64):
    """Values uniform in [low, high)."""
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def away_from_zero(seed, shape, low=0.1, high=2.0, dtype=np.float64):
    """Values with |v| in [low, high] and a random sign: no element near a kink at 0."""
    rng = np.random.default_rng(seed)
    magnitude = rng.uniform(low, high, shape)
    return (magnitude * rng.choice([-1.0, 1.0], size=shape)).astype(dtype)


def distinct(seed, shape, gap=0.05, dtype=np.float64):
    """A random permutation of values spaced ``gap`` apart and centred on 0: no two equal, so
    max-like ops have a unique winner that a finite-difference step (<< gap) cannot change."""
    size = int(np.prod(shape))
    values = (np.arange(size) - size / 2) * gap
    return np.random.default_rng(seed).permutation(values).reshape(shape).astype(dtype)
