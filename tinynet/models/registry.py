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
from tinynet.models.inception_v3 import inception_v3, inception_v3_loss, inception_v3_small


@dataclass(frozen=True)
class ModelEntry:
    """build(**options) -> Module (options: num_classes, in_channels, width, ...);
    loss(outputs, target, aux_weight, label_smoothing) -> scalar Tensor for training-mode
    outputs; input_size: the image side the network was designed for."""

    build: Callable[..., nn.Module]
    loss: Callable
    input_size: int


def inception_v3_for_classes(num_classes: int = 1000, **options) -> nn.Module:
    """torchvision's Inception-v3 for ImageNet's 1000 classes (299x299 images); for any other
    class count (tinynet's datasets: digits, MNIST, CIFAR-10, at 28-32 px) the CPU-sized one:
    the small-image stem at width 0.25. The builder sees no image size, so the class count
    decides; ``width`` overrides the width either way."""
    build = inception_v3 if num_classes == 1000 else inception_v3_small
    return build(num_classes=num_classes, **options)


MODELS: dict[str, ModelEntry] = {
    "small": ModelEntry(googlenet_small, googlenet_loss, 32),
    "paper": ModelEntry(googlenet_paper, googlenet_loss, 224),
    "torchvision": ModelEntry(googlenet_torchvision, googlenet_loss, 224),
    "inception_v3": ModelEntry(inception_v3_for_classes, inception_v3_loss, 299),
}


def model_entry(name: str) -> ModelEntry:
    """The registered network ``name``; a ValueError lists the names there are."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}; got {name!r}")
    return MODELS[name]
