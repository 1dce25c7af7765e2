"""Optimisers, learning-rate schedules, weight averaging and gradient clipping, with PyTorch's
names and update rules (``torch.optim``, ``torch.optim.lr_scheduler``,
``torch.optim.swa_utils.update_bn``, ``torch.nn.utils.clip_grad_norm_``)::

    from tinynet.optim import SGD, StepLR

    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = StepLR(optimizer, step_size=8, gamma=0.96)
"""

from tinynet.optim import lr_scheduler
from tinynet.optim.adam import Adam, AdamW
from tinynet.optim.clip import clip_grad_norm_
from tinynet.optim.ema import ExponentialMovingAverage, update_bn
from tinynet.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LinearWarmup,
    LRScheduler,
    SequentialLR,
    StepLR,
)
from tinynet.optim.optimizer import Optimizer
from tinynet.optim.rmsprop import RMSprop
from tinynet.optim.sgd import SGD

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialMovingAverage",
    "LRScheduler",
    "LinearLR",
    "LinearWarmup",
    "Optimizer",
    "RMSprop",
    "SequentialLR",
    "StepLR",
    "clip_grad_norm_",
    "lr_scheduler",
    "update_bn",
]
