"""Layers as Modules that hold their parameters and call the stateless ops of
``tinynet.functional`` (the same split as ``torch.nn`` / ``torch.nn.functional``)."""

from tinynet.nn import init
from tinynet.nn.activation import ReLU
from tinynet.nn.conv import Conv2d
from tinynet.nn.dropout import Dropout
from tinynet.nn.flatten import Flatten
from tinynet.nn.linear import Linear
from tinynet.nn.module import Module, Parameter, Sequential
from tinynet.nn.normalization import BatchNorm2d, LocalResponseNorm
from tinynet.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "Linear",
    "LocalResponseNorm",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "init",
]
