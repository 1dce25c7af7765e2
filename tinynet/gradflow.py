"""Gradient flow per layer: how large each layer's gradient is and how far one optimiser step
moves its weights; what ``tinynet train --log-gradients N`` records and ``tinynet inspect
gradients`` compares.

For the weight W of every Conv2d and Linear (the layers that carry the network's parameters),
at one training step:

    gradient norm      ‖∂L/∂W‖₂, after backward and before any clipping
    update ratio       ‖W_after − W_before‖₂ / ‖W_before‖₂ over the optimiser's step

As a rule of thumb, SGD learns well when the update ratio is near 1e-3; gradients that shrink by
orders of magnitude from the last layers to the first are the vanishing gradients the paper's
auxiliary classifiers were added against.

A record (one line of ``metrics.jsonl``) is

    {"record": "gradients", "epoch": 1, "step": 0,
     "grad_norm": {"conv1.conv": 0.0123, ...}, "update_ratio": {"conv1.conv": 0.0041, ...}}

step counts optimiser steps from 0 (the gradient at initialisation). The "record" key tells it
from the per-epoch records, which have none.
"""

from __future__ import annotations

import math

import numpy as np

from tinynet.nn import Conv2d, Linear, Module

RECORD = "gradients"


class GradientFlow:
    """Measures ``model``'s weight layers, named as in ``model.named_modules()``."""

    def __init__(self, model: Module):
        self.layers = [
            (name, module.weight)
            for name, module in model.named_modules()
            if isinstance(module, (Conv2d, Linear))
        ]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.layers]

    def before_step(self) -> tuple[list[float], list[np.ndarray]]:
        """The gradient norms (0.0 for a layer that got no gradient) and a copy of the weights;
        call after ``backward()`` and before clipping and ``optimizer.step()``."""
        norms = [0.0 if w.grad is None else _norm(w.grad) for _, w in self.layers]
        return norms, [w.data.copy() for _, w in self.layers]

    def after_step(self, before: tuple[list[float], list[np.ndarray]], epoch: int, step: int):
        """The record of this step, from what ``before_step`` measured and the moved weights."""
        norms, weights = before
        moved = zip((w.data for _, w in self.layers), weights)
        ratios = [_ratio(_norm(now - old), _norm(old)) for now, old in moved]
        return {
            "record": RECORD,
            "epoch": epoch,
            "step": step,
            "grad_norm": dict(zip(self.names, norms)),
            "update_ratio": dict(zip(self.names, ratios)),
        }


def _norm(array: np.ndarray) -> float:
    return float(np.linalg.norm(array.reshape(-1).astype(np.float64)))


def _ratio(moved: float, size: float) -> float:
    """moved / size; all-zero weights that moved have an infinite ratio, reported as such."""
    if size == 0:
        return 0.0 if moved == 0 else math.inf
    return moved / size


def is_record(record) -> bool:
    """Whether ``record`` has the form above (numbers are checked for finiteness apart)."""
    if not isinstance(record, dict) or record.get("record") != RECORD:
        return False
    counts = [record.get(key) for key in ("epoch", "step")]
    values = [record.get(key) for key in ("grad_norm", "update_ratio")]
    return all(isinstance(c, int) and not isinstance(c, bool) for c in counts) and all(
        isinstance(v, dict) and all(isinstance(x, float) for x in v.values()) for v in values
    )


def nonfinite(record: dict) -> str | None:
    """What in ``record`` is NaN or infinite ("the gradient norm of conv1.conv is nan"), or
    None: such a record cannot be written as strict JSON and means training diverged."""
    for key, what in (("grad_norm", "gradient norm"), ("update_ratio", "update ratio")):
        for layer, value in record[key].items():
            if not math.isfinite(value):
                return f"the {what} of {layer} is {value}"
    return None


def block_norms(grad_norm: dict[str, float], blocks) -> dict[str, float]:
    """The gradient norm of each of ``blocks`` (module names such as 'conv1', 'inception3a'):
    the norm of all its layers' weight gradients together, √(Σ ‖∂L/∂Wᵢ‖²)."""
    norms = {}
    for block in blocks:
        inside = [v for name, v in grad_norm.items() if (name + ".").startswith(block + ".")]
        if not inside:
            raise ValueError(f"block_norms: no layer of {block!r} in the record")
        norms[block] = math.sqrt(math.fsum(v * v for v in inside))
    return norms
