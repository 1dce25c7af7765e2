"""softmax, log_softmax and the cross-entropy loss on class logits.

All three subtract the row maximum before exponentiating, so logits of 1e4 neither overflow
nor lose the small differences between them.
"""

from __future__ import annotations

import numbers

import numpy as np

from tinynet.function import Function
from tinynet.ops._args import normalize_dim
from tinynet.tensor import Tensor, as_array, as_tensor


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


class SoftmaxFunction(Function):
    """y_i = e^{x_i} / Σ_j e^{x_j} along ``dim``;  dL/dx = y * (g - Σ_j g_j y_j).
    Reference twin: ``tinynet.reference.softmax``."""

    @staticmethod
    def forward(ctx, x, dim):
        y = np.exp(_log_softmax(x, dim))
        ctx.dim = dim
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return y * (grad - np.sum(grad * y, axis=ctx.dim, keepdims=True))


class LogSoftmaxFunction(Function):
    """y_i = x_i - log Σ_j e^{x_j} along ``dim``;  dL/dx = g - softmax(x) * Σ_j g_j.
    Reference twin: ``tinynet.reference.log_softmax``."""

    @staticmethod
    def forward(ctx, x, dim):
        y = _log_softmax(x, dim)
        ctx.dim = dim
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad - np.exp(y) * np.sum(grad, axis=ctx.dim, keepdims=True)


class CrossEntropyFunction(Function):
    """Loss of logits x (N, C) against integer classes t (N,), with label smoothing ε:

        q_n = (1 - ε) onehot(t_n) + ε / C,     ℓ_n = -Σ_c q_nc log softmax(x_n)_c
        reduction 'mean': L = Σ_n ℓ_n / N;  'sum': L = Σ_n ℓ_n;  'none': L = ℓ (N,)

    dL/dx_n = (softmax(x_n) - q_n) * dL/dℓ_n   (dL/dℓ_n = g / N for 'mean', g for 'sum').
    Reference twin: ``tinynet.reference.cross_entropy``.
    """

    @staticmethod
    def forward(ctx, x, target, reduction, label_smoothing):
        n, classes = x.shape
        log_p = _log_softmax(x, 1)
        q = np.full_like(x, label_smoothing / classes)
        q[np.arange(n), target] += 1.0 - label_smoothing
        losses = -np.sum(q * log_p, axis=1)
        ctx.save_for_backward(np.exp(log_p) - q)
        ctx.reduction = reduction
        if reduction == "mean":
            return np.asarray(losses.mean(), dtype=x.dtype)
        if reduction == "sum":
            return np.asarray(losses.sum(), dtype=x.dtype)
        return losses

    @staticmethod
    def backward(ctx, grad):
        (p_minus_q,) = ctx.saved_tensors
        if ctx.reduction == "mean":
            return p_minus_q * (grad / len(p_minus_q)), None
        if ctx.reduction == "sum":
            return p_minus_q * grad, None
        return p_minus_q * grad[:, None], None


def softmax(x, dim: int) -> Tensor:
    """exp(x) normalised to sum to 1 along ``dim``."""
    x = as_tensor(x)
    return SoftmaxFunction.apply(x, dim=normalize_dim(dim, max(x.ndim, 1), "softmax"))


def log_softmax(x, dim: int) -> Tensor:
    """log(softmax(x)) along ``dim``, computed without forming softmax (stable)."""
    x = as_tensor(x)
    return LogSoftmaxFunction.apply(x, dim=normalize_dim(dim, max(x.ndim, 1), "log_softmax"))


def cross_entropy(input, target, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits ``input`` (N, C) against class indices ``target`` (N,), as
    ``torch.nn.functional.cross_entropy`` (reduction 'mean' | 'sum' | 'none')."""
    logits = as_tensor(input)
    labels = np.asarray(as_array(target))
    if logits.ndim != 2:
        raise ValueError(
            f"cross_entropy: input must be 2-D logits (N, C); got shape {logits.shape}"
        )
    n, classes = logits.shape
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"cross_entropy: target must hold integer class indices; got dtype {labels.dtype}"
        )
    if labels.shape != (n,):
        raise ValueError(
            f"cross_entropy: target must have shape ({n},) to match input {logits.shape}; "
            f"got {labels.shape}"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise IndexError(
            f"cross_entropy: target values must be class indices in [0, {classes}); got "
            f"{labels[bad[0]]} at position {bad[0]}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(
            f"cross_entropy: reduction must be 'mean', 'sum' or 'none'; got {reduction!r}"
        )
    if not isinstance(label_smoothing, numbers.Real) or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(
            f"cross_entropy: label_smoothing must be in [0, 1]; got {label_smoothing!r}"
        )
    return CrossEntropyFunction.apply(
        logits, labels, reduction=reduction, label_smoothing=float(label_smoothing)
    )
