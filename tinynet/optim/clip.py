"""Gradient clipping by the global norm of all gradients, as ``torch.nn.utils.clip_grad_norm_``."""

from __future__ import annotations

import math

import numpy as np

from tinynet.tensor import Tensor


def _norm_power_sum(grad: np.ndarray, p: float) -> float:
    """Σ|g|ᵖ over one gradient (the p-th power of its p-norm), accumulated in float64."""
    if p == 2.0:
        flat = grad.reshape(-1)
        return float(np.dot(flat, flat))
    if p == 1.0:
        return float(np.abs(grad).sum(dtype=np.float64))
    return float((np.abs(grad).astype(np.float64) ** p).sum())


def clip_grad_norm_(
    parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> float:
    """Scale all gradients together so that their joint norm is at most about ``max_norm``.

    total = ‖(‖g₁‖ₚ, ‖g₂‖ₚ, ...)‖ₚ, the p-norm of all gradients as one vector (p = norm_type,
    which may be ``float('inf')`` or ``'inf'`` for the largest |g|). If
    c = max_norm / (total + 1e-6) is below 1, every gradient is multiplied by c in place, so the
    clipped norm is just under max_norm; otherwise nothing changes (PyTorch's rule; a NaN total
    makes every gradient NaN, as in PyTorch). Parameters without a gradient are ignored.

    parameters:         a Parameter or an iterable of them (e.g. ``model.parameters()``)
    error_if_nonfinite: raise instead of scaling when the total is NaN or infinite
    Returns the total norm before clipping, as a float (0.0 when no parameter has a gradient).
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0; got {max_norm}")
    if not norm_type > 0:
        raise ValueError(
            f"clip_grad_norm_: norm_type must be positive (e.g. 2.0, 1.0 or inf); got {norm_type}"
        )
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    if math.isinf(norm_type):
        peaks = [max(g.max(), -g.min()) for g in grads if g.size]  # NaN if g holds one
        total = float(np.max(peaks)) if peaks else 0.0
    else:
        total = math.fsum(_norm_power_sum(g, norm_type) for g in grads) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
            f"non-finite ({total}), so they cannot be clipped; to scale them by it anyway, "
            f"pass error_if_nonfinite=False"
        )
    coefficient = max_norm / (total + 1e-6)
    if not coefficient >= 1.0:  # also true for NaN, which then spreads as in PyTorch
        for g in grads:
            g *= coefficient
    return total
