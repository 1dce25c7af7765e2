"""Every network the ``tinynet`` command can build, by name: one place for train, summary and
evaluate to look up a model, its loss and the input size its stem was designed for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tinynet import nn
from tinynet.models.googlenet import (
    googlenet_loss,
    googlenet_paper,
    googlenet_small,
    googlenet_torchvision,
)


@dataclass(frozen=True)
class ModelEntry:
    """build(**options) -> Module (options: num_classes, in_channels, width, ...);
    loss(outputs, target, aux_weight, label_smoothing) -> scalar Tensor for training-mode
    outputs; input_size: the image side the network was designed for."""

    build: Callable[..., nn.Module]
    loss: Callable
    input_size: int


MODELS: dict[str, ModelEntry] = {
    "small": ModelEntry(googlenet_small, googlenet_loss, 32),
    "paper": ModelEntry(googlenet_paper, googlenet_loss, 224),
    "torchvision": ModelEntry(googlenet_torchvision, googlenet_loss, 224),
}


def model_entry(name: str) -> ModelEntry:
    """The registered network ``name``; a ValueError lists the names there are."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}; got {name!r}")
    return MODELS[name]
