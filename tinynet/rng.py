"""The random generator tinynet draws from by default (dropout masks, weight initialisation).

``tinynet.manual_seed(seed)`` makes every default draw reproducible; any op that draws also
accepts its own ``np.random.Generator``.
"""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the default generator and return it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    return _generator
