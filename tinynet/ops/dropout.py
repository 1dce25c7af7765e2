"""Inverted dropout: zero each element with probability p and scale the survivors by 1/(1-p),
so the expected value of every element is unchanged and evaluation needs no rescaling."""

from __future__ import annotations

import numbers

import numpy as np

from tinynet.function import Function
from tinynet.rng import default_generator
from tinynet.tensor import Tensor, as_tensor


class DropoutFunction(Function):
    """y = x * m / (1 - p), m_i ~ Bernoulli(1 - p) drawn once per call;  dL/dx = g * m / (1 - p).
    Reference twin: ``tinynet.reference.dropout``."""

    @staticmethod
    def forward(ctx, x, p, generator):
        keep = generator.random(x.shape, dtype=np.float32) >= p
        scale = np.asarray(1.0 / (1.0 - p) if p < 1 else 0.0, dtype=x.dtype)
        ctx.keep, ctx.scale = keep, scale
        return x * keep * scale

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.keep * ctx.scale


def dropout(x, p: float = 0.5, training: bool = True, generator=None) -> Tensor:
    """Inverted dropout; the identity (the same tensor) when not training or when p == 0.

    generator: an ``np.random.Generator`` for the mask (default: ``tinynet.rng``'s, which
    ``tinynet.manual_seed`` seeds).
    """
    if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be a probability in [0, 1]; got {p!r}")
    x = as_tensor(x)
    if not training or p == 0:
        return x
    return DropoutFunction.apply(x, p=float(p), generator=generator or default_generator())
