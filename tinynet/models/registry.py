"""Every network the ``tinynet`` command can build, by name: one place for train, summary and
evaluate to look up a model, its loss and the input size its stem was designed for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tinynet import functional as F
from tinynet import nn
from tinynet.models.googlenet import (
    googlenet_loss,
    googlenet_paper,
    googlenet_small,
    googlenet_torchvision,
)
from tinynet.models.inception_resnet import (
    inception_resnet_v1,
    inception_resnet_v1_small,
    inception_resnet_v2,
    inception_resnet_v2_small,
)
from tinynet.models.inception_v3 import inception_v3, inception_v3_loss, inception_v3_small
from tinynet.models.inception_v4 import inception_v4, inception_v4_small


@dataclass(frozen=True)
class ModelEntry:
    """build(**options) -> Module (options: num_classes, in_channels, width, ...);
    loss(outputs, target, aux_weight, label_smoothing) -> scalar Tensor for training-mode
    outputs; input_size: the image side the network was designed for; recipe: the training
    options (``TrainConfig`` fields) this network needs where TrainConfig's defaults do not
    serve it, measured on the bundled digits (benchmarks/inception_digits.md)."""

    build: Callable[..., nn.Module]
    loss: Callable
    input_size: int
    recipe: dict = field(default_factory=dict)


def cross_entropy_loss(logits, target, aux_weight: float = 0.0, label_smoothing: float = 0.0):
    """The loss of the networks without auxiliary heads: cross-entropy of the logits, with label
    smoothing (``aux_weight`` is accepted and has nothing to weigh)."""
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


# Measured on the bundled digits (benchmarks/inception_digits.md): each reaches >= 97% with it.
V4_RECIPE = {"batch_size": 32, "lr": 0.02, "warmup_epochs": 1.0, "epochs": 10}
RESNET_RECIPE = {"batch_size": 32, "lr": 0.02, "warmup_epochs": 1.0, "epochs": 6}

MODELS: dict[str, ModelEntry] = {
    "small": ModelEntry(googlenet_small, googlenet_loss, 32),
    "paper": ModelEntry(googlenet_paper, googlenet_loss, 224),
    "torchvision": ModelEntry(googlenet_torchvision, googlenet_loss, 224),
    "inception_v3": ModelEntry(inception_v3, inception_v3_loss, 299),
    "inception_v3_small": ModelEntry(inception_v3_small, inception_v3_loss, 32, {"epochs": 10}),
    "inception_v4": ModelEntry(inception_v4, cross_entropy_loss, 299),
    # 16 blocks deep without residuals: at lr 0.1 it stalls near chance; more, smaller steps
    "inception_v4_small": ModelEntry(inception_v4_small, cross_entropy_loss, 32, V4_RECIPE),
    "inception_resnet_v1": ModelEntry(inception_resnet_v1, cross_entropy_loss, 299),
    "inception_resnet_v1_small": ModelEntry(
        inception_resnet_v1_small, cross_entropy_loss, 32, RESNET_RECIPE
    ),
    "inception_resnet_v2": ModelEntry(inception_resnet_v2, cross_entropy_loss, 299),
    "inception_resnet_v2_small": ModelEntry(
        inception_resnet_v2_small, cross_entropy_loss, 32, RESNET_RECIPE
    ),
}


def model_entry(name: str) -> ModelEntry:
    """The registered network ``name``; a ValueError lists the names there are."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}; got {name!r}")
    return MODELS[name]
