"""Dropout as a module: active in training mode, the identity in eval mode."""

from __future__ import annotations

import numbers

from tinynet import functional as F
from tinynet.nn.module import Module


class Dropout(Module):
    """Inverted dropout with probability ``p``; ``generator`` (an np.random.Generator) makes the
    masks of this layer reproducible independently of the rest of the program."""

    def __init__(self, p: float = 0.5, generator=None):
        super().__init__()
        if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1]; got {p!r}")
        self.p, self.generator = p, generator

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"
