"""Matrix products: ``matmul`` (NumPy semantics, batched and broadcast) and ``linear``."""

from __future__ import annotations

import numpy as np

from tinynet.function import Function
from tinynet.ops._args import check_ndim
from tinynet.ops.elementwise import unbroadcast
from tinynet.tensor import Tensor, as_tensor


class MatMulFunction(Function):
    """Y = A @ B;  dL/dA = G @ Bᵀ,  dL/dB = Aᵀ @ G  (batch axes summed where broadcast).

    A 1-D A is a row (1, k) and a 1-D B a column (k, 1), as in ``np.matmul``; the gradient is
    computed in that 2-D form and reshaped back.
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        g2 = grad.reshape(batch + (a2.shape[-2], b2.shape[-1]))
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            grad_b = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
        return grad_a, grad_b


class LinearFunction(Function):
    """y = x Wᵀ + b, x (..., in), W (out, in), b (out,)  ->  y (..., out).

    With X the rows of x as a (M, in) matrix and G the (M, out) gradient:
    dL/dX = G W,  dL/dW = Gᵀ X,  dL/db = Σ_rows G.
    Reference twin: ``tinynet.reference.linear``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        y = x @ weight.T
        if bias is not None:
            y += bias
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        grad_x = (g @ weight).reshape(x.shape) if ctx.needs_input_grad[0] else None
        grad_w = g.T @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(axis=0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def matmul(a, b) -> Tensor:
    """Matrix product with NumPy's rules (1-D operands, batch broadcasting)."""
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-D; got {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(
            f"matmul: inner dimensions differ: a has shape {a.shape} (k={k_a}), "
            f"b has shape {b.shape} (k={k_b})"
        )
    return MatMulFunction.apply(a, b)


def linear(x, weight, bias=None) -> Tensor:
    """``x @ weight.T + bias`` with weight ``(out_features, in_features)``, as PyTorch."""
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    check_ndim(weight.shape, (2,), "weight", "linear", "(out_features, in_features)")
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input's last dimension must equal in_features={weight.shape[1]} "
            f"(weight shape {weight.shape}); got input shape {x.shape}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(
            f"linear: bias must have shape ({weight.shape[0]},) to match weight "
            f"{weight.shape}; got {bias.shape}"
        )
    return LinearFunction.apply(x, weight, bias)
