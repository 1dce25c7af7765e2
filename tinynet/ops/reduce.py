"""Reductions over axes: sum, mean, max (with ``dim`` and ``keepdim``, as PyTorch).

Backward broadcasts the output gradient back over the reduced axes.
"""

from __future__ import annotations

import numpy as np

from tinynet.function import Function
from tinynet.ops._args import normalize_dims
from tinynet.tensor import Tensor, as_tensor


def _expand(grad: np.ndarray, axes: tuple[int, ...], keepdim: bool, shape) -> np.ndarray:
    """Broadcast a reduced gradient back to ``shape`` (a read-only view, not a copy)."""
    if not keepdim:
        grad = np.expand_dims(grad, axes)
    return np.broadcast_to(grad, shape)


class SumFunction(Function):
    """y = sum of x over ``axes``;  dL/dx = g broadcast back over those axes."""

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.axes, ctx.keepdim, ctx.shape = axes, keepdim, x.shape
        return np.sum(x, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad):
        return _expand(grad, ctx.axes, ctx.keepdim, ctx.shape)


class MeanFunction(Function):
    """y = mean of x over ``axes`` (m elements each);  dL/dx = g / m broadcast back."""

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.axes, ctx.keepdim, ctx.shape = axes, keepdim, x.shape
        ctx.count = int(np.prod([x.shape[a] for a in axes]))
        return np.mean(x, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad):
        return _expand(grad / ctx.count, ctx.axes, ctx.keepdim, ctx.shape)


class MaxFunction(Function):
    """y = max of x over ``axes``;  dL/dx = g / k at each of the k positions that attain the
    maximum, 0 elsewhere (ties share the gradient evenly, as ``torch.amax``)."""

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        y = np.max(x, axis=axes, keepdims=True)
        ctx.axes, ctx.keepdim = axes, keepdim
        ctx.save_for_backward(x, y)
        return y if keepdim else np.squeeze(y, axis=axes)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        winners = x == y
        count = winners.sum(axis=ctx.axes, keepdims=True)
        grad = grad if ctx.keepdim else np.expand_dims(grad, ctx.axes)
        return np.where(winners, grad / count, 0).astype(x.dtype, copy=False)


def _reduce(function, x, dim, keepdim, op):
    x = as_tensor(x)
    axes = normalize_dims(dim, x.ndim, op)
    if x.size == 0 and function is MaxFunction:
        raise ValueError(f"{op}: cannot take the max of an empty tensor of shape {x.shape}")
    return function.apply(x, axes=axes, keepdim=bool(keepdim))


def sum(x, dim=None, keepdim: bool = False) -> Tensor:
    """Sum over ``dim`` (an int, a tuple of ints, or None for every axis)."""
    return _reduce(SumFunction, x, dim, keepdim, "sum")


def mean(x, dim=None, keepdim: bool = False) -> Tensor:
    """Mean over ``dim`` (an int, a tuple of ints, or None for every axis)."""
    return _reduce(MeanFunction, x, dim, keepdim, "mean")


def max(x, dim=None, keepdim: bool = False) -> Tensor:
    """Maximum over ``dim``, values only (like ``torch.amax``)."""
    return _reduce(MaxFunction, x, dim, keepdim, "max")
