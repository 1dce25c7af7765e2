"""Networks built from ``tinynet.nn``."""

from tinynet.models.googlenet import (
    BasicConv2d,
    GoogLeNet,
    GoogLeNetConfig,
    GoogLeNetOutputs,
    Inception,
    InceptionAux,
    googlenet_loss,
    googlenet_paper,
    googlenet_small,
    googlenet_torchvision,
)

__all__ = [
    "BasicConv2d",
    "GoogLeNet",
    "GoogLeNetConfig",
    "GoogLeNetOutputs",
    "Inception",
    "InceptionAux",
    "googlenet_loss",
    "googlenet_paper",
    "googlenet_small",
    "googlenet_torchvision",
]
