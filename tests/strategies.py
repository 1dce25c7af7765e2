"""Hypothesis strategies and array makers shared by the test modules: seeds, shapes, the values
drawn from a seed, and the memory layouts an array reaches an op in. The seeds, shapes, uniform
values and op cases (shapes and arguments per op family) are tinynet's public ones, in
tinynet/testing/strategies.py; they are imported here for the tests that import them from here.

Values are generated from a drawn seed with NumPy (fast for whole tensors, and still shrinkable
through the seed); shapes and op configurations are drawn by hypothesis directly.
"""

import numpy as np
from hypothesis import strategies as st

from tinynet.testing.strategies import seeds, shapes, uniform  # noqa: F401 - for the tests


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


# The memory layouts an (N, C, H, W) array reaches an op in: a plain C-contiguous array, or
# channel-major as tinynet's conv, pool and norm outputs are (see tinynet/ops/layout.py); a
# gradient may also arrive broadcast (out.sum().backward() hands back stride-0 views).
LAYOUTS = ("nchw", "channel_major")
GRAD_LAYOUTS = LAYOUTS + ("batch_broadcast", "channel_broadcast")
layouts = st.sampled_from(LAYOUTS)
grad_layouts = st.sampled_from(GRAD_LAYOUTS)


def laid_out(array, layout):
    """``array`` in one of GRAD_LAYOUTS: 'nchw' C-contiguous; 'channel_major' the same values in
    a (C, N, H, W) buffer seen as (N, C, H, W); 'batch_broadcast' the first image repeated over
    the batch (stride 0 on N); 'channel_broadcast' one value per channel (stride 0 on N, H, W).
    The broadcast layouts keep the shape, not the values. An array that is not 4-D comes back
    C-contiguous whatever the layout (BatchNorm's (N, C) inputs have no other)."""
    if array.ndim != 4 or layout == "nchw":
        return np.ascontiguousarray(array)
    if layout == "channel_major":
        return np.ascontiguousarray(array.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    if layout == "batch_broadcast":
        return np.broadcast_to(array[:1], array.shape)
    if layout == "channel_broadcast":
        return np.broadcast_to(array[:1, :, :1, :1], array.shape)
    raise ValueError(f"laid_out: layout must be one of {GRAD_LAYOUTS}; got {layout!r}")


def is_channel_major(array):
    """Whether (N, C, H, W) ``array``'s memory is a C-contiguous (C, N, H, W) block."""
    return array.transpose(1, 0, 2, 3).flags.c_contiguous
