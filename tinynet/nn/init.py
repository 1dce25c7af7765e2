"""Weight initialisers, in place, with PyTorch's formulas and names.

Each draws from ``generator`` (an ``np.random.Generator``) or, by default, tinynet's generator,
which ``tinynet.manual_seed`` seeds, so a seeded model is built with the same weights every time.
For a weight of shape (out, in, *kernel): fan_in = in * prod(kernel), fan_out = out * prod(kernel).
"""

from __future__ import annotations

import math

import numpy as np

from tinynet.rng import default_generator
from tinynet.tensor import as_array


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight: inputs and outputs feeding each unit."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight with at least 2 dimensions; got shape {shape}")
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def _fill(tensor, values: np.ndarray):
    array = as_array(tensor)
    array[...] = values
    return tensor


def uniform_(tensor, low: float, high: float, generator=None):
    """U(low, high)."""
    rng = generator or default_generator()
    return _fill(tensor, rng.uniform(low, high, as_array(tensor).shape))


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator=None):
    """N(mean, std²)."""
    rng = generator or default_generator()
    return _fill(tensor, rng.normal(mean, std, as_array(tensor).shape))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """N(mean, std²) restricted to [a, b] (absolute bounds, as PyTorch), by redrawing the
    values that fall outside. torchvision's GoogLeNet uses std=0.01, a=-2, b=2."""
    if not a < b:
        raise ValueError(f"trunc_normal_: need a < b; got a={a}, b={b}")
    rng = generator or default_generator()
    values = rng.normal(mean, std, as_array(tensor).shape)
    outside = (values < a) | (values > b)
    while outside.any():
        values[outside] = rng.normal(mean, std, int(outside.sum()))
        outside = (values < a) | (values > b)
    return _fill(tensor, values)


def constant_(tensor, value: float):
    return _fill(tensor, value)


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor, a: float = 0.0, generator=None):
    """U(-bound, bound), bound = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a²)) (He et al.,
    for a leaky ReLU of slope a). PyTorch's default for Conv2d and Linear weights is a = √5,
    which gives bound = 1 / sqrt(fan_in)."""
    fan_in, _ = fans(as_array(tensor).shape)
    bound = math.sqrt(2.0 / (1 + a * a)) * math.sqrt(3.0 / fan_in)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a: float = 0.0, generator=None):
    """N(0, std²), std = gain / sqrt(fan_in), gain = sqrt(2 / (1 + a²))."""
    fan_in, _ = fans(as_array(tensor).shape)
    return normal_(tensor, 0.0, math.sqrt(2.0 / (1 + a * a)) / math.sqrt(fan_in), generator)


def xavier_uniform_(tensor, gain: float = 1.0, generator=None):
    """U(-bound, bound), bound = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio; Caffe's
    'xavier' filler, which the original GoogLeNet used)."""
    fan_in, fan_out = fans(as_array(tensor).shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def default_bias_(bias, weight_shape: tuple[int, ...], generator=None):
    """PyTorch's default bias of Conv2d and Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    fan_in, _ = fans(weight_shape)
    bound = 1.0 / math.sqrt(fan_in)
    return uniform_(bias, -bound, bound, generator)
