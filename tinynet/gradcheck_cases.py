"""Small gradient checks of each of GoogLeNet's ops and of an Inception block: what
``tinynet gradcheck`` runs, and a starting point for checking an op of your own.

Each case returns ``(fn, inputs)`` for ``tinynet.check_gradients``: float64 inputs drawn from a
seeded generator and kept away from kinks by construction (ReLU inputs away from 0, distinct
values for max pooling), so the finite differences are exact up to rounding.
"""

from __future__ import annotations

import numpy as np

from tinynet import functional as F
from tinynet.tensor import Tensor


def _leaf(values: np.ndarray) -> Tensor:
    return Tensor(values.astype(np.float64), requires_grad=True)


def _distinct(rng, shape, gap=0.05) -> np.ndarray:
    size = int(np.prod(shape))
    return rng.permutation((np.arange(size) - size / 2) * gap).reshape(shape)


def conv2d(rng):
    x, w, b = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    return (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1)), [_leaf(x), _leaf(w), _leaf(b)]


def max_pool2d(rng):
    x = _distinct(rng, (2, 3, 7, 7))
    return (lambda x: F.max_pool2d(x, 3, stride=2, ceil_mode=True)), [_leaf(x)]


def avg_pool2d(rng):
    x = rng.normal(size=(2, 3, 7, 7))
    return (lambda x: F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True)), [_leaf(x)]


def local_response_norm(rng):
    x = rng.normal(size=(2, 7, 4, 4))
    return (lambda x: F.local_response_norm(x, 5, alpha=0.1, beta=0.75, k=1.0)), [_leaf(x)]


def batch_norm(rng):
    x, gamma, beta = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=3), rng.normal(size=3)
    fn = lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True)  # noqa: E731
    return fn, [_leaf(x), _leaf(gamma), _leaf(beta)]


def linear(rng):
    x, w, b = rng.normal(size=(5, 4)), rng.normal(size=(3, 4)), rng.normal(size=3)
    return F.linear, [_leaf(x), _leaf(w), _leaf(b)]


def relu(rng):
    magnitude = rng.uniform(0.1, 2.0, size=(3, 4))
    return F.relu, [_leaf(magnitude * rng.choice([-1.0, 1.0], size=(3, 4)))]


def cross_entropy(rng):
    logits, target = rng.normal(size=(6, 5)), rng.integers(0, 5, 6)
    return (lambda x: F.cross_entropy(x, target, label_smoothing=0.1)), [_leaf(logits)]


def inception(rng):
    from tinynet.models import Inception

    block = Inception(4, 2, 2, 3, 1, 2, 2).double()
    for parameter in block.parameters():
        parameter.data[...] = rng.normal(scale=0.5, size=parameter.shape)
    x = _leaf(rng.normal(size=(2, 4, 5, 5)))
    weights = [block.branch2[1].conv.weight, block.branch3[1].conv.weight]
    return (lambda x, *w: block(x)), [x, *weights]


CASES = {
    "inception": inception,
    "conv2d": conv2d,
    "max_pool2d": max_pool2d,
    "avg_pool2d": avg_pool2d,
    "local_response_norm": local_response_norm,
    "batch_norm": batch_norm,
    "linear": linear,
    "relu": relu,
    "cross_entropy": cross_entropy,
}
