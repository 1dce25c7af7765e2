"""Elementwise ops: arithmetic with NumPy broadcasting, exp, log, relu and dtype casts.

Broadcasting in forward copies an operand along the broadcast axes, so in backward the
gradient of that operand is the sum over those axes (``unbroadcast``).
"""

from __future__ import annotations

import numbers

import numpy as np

from tinynet.function import Function
from tinynet.kernels.activation import relu_backward, relu_forward
from tinynet.tensor import Tensor


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` down to ``shape``: the adjoint of broadcasting ``shape`` to ``grad.shape``.

    Leading axes that broadcasting added are summed away; axes where ``shape`` has size 1 are
    summed with keepdims.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra else grad
    kept = tuple(axis for axis, size in enumerate(shape) if size == 1 and grad.shape[axis] != 1)
    if kept:
        grad = grad.sum(axis=kept, keepdims=True)
    return grad.reshape(shape)


def _operand(x):
    """Tensors and Python numbers pass through (numbers stay weakly typed: float32 + 2.0 is
    float32); anything else becomes an ndarray constant."""
    if isinstance(x, (Tensor, numbers.Number, np.ndarray)):
        return x
    return np.asarray(x)


class Add(Function):
    """y = a + b;  dL/da = unbroadcast(g),  dL/db = unbroadcast(g)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.add(a, b)

    @staticmethod
    def backward(ctx, grad):
        shape_a, shape_b = ctx.shapes
        return unbroadcast(grad, shape_a), unbroadcast(grad, shape_b)


class Sub(Function):
    """y = a - b;  dL/da = unbroadcast(g),  dL/db = -unbroadcast(g)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.subtract(a, b)

    @staticmethod
    def backward(ctx, grad):
        shape_a, shape_b = ctx.shapes
        grad_b = -unbroadcast(grad, shape_b) if ctx.needs_input_grad[1] else None
        return unbroadcast(grad, shape_a), grad_b


class Mul(Function):
    """y = a * b;  dL/da = unbroadcast(g * b),  dL/db = unbroadcast(g * a)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = unbroadcast(grad * b, np.shape(a)) if ctx.needs_input_grad[0] else None
        grad_b = unbroadcast(grad * a, np.shape(b)) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Div(Function):
    """y = a / b;  dL/da = unbroadcast(g / b),  dL/db = unbroadcast(-g * a / b^2)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.divide(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = unbroadcast(grad / b, np.shape(a)) if ctx.needs_input_grad[0] else None
        grad_b = unbroadcast(-grad * a / (b * b), np.shape(b)) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    """y = -x;  dL/dx = -g."""

    @staticmethod
    def forward(ctx, x):
        return np.negative(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Pow(Function):
    """y = a ** b;  dL/da = unbroadcast(g * b * a^(b-1)),  dL/db = unbroadcast(g * y * log a)."""

    @staticmethod
    def forward(ctx, a, b):
        y = np.power(a, b)
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        a, b, y = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = unbroadcast(grad * b * np.power(a, b - 1), np.shape(a))
        if ctx.needs_input_grad[1]:
            grad_b = unbroadcast(grad * y * np.log(a), np.shape(b))
        return grad_a, grad_b


class Exp(Function):
    """y = e^x;  dL/dx = g * y."""

    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y


class Log(Function):
    """y = ln x;  dL/dx = g / x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / x


_KERNEL_TYPES = (np.float32, np.float64)


def _memory(a: np.ndarray):
    """a's elements as a 1-D view in memory order, or None if they are not one dense block."""
    flat = a.ravel(order="K")
    return flat if np.may_share_memory(flat, a) else None


class ReLU(Function):
    """y = max(x, 0);  dL/dx = g * [y > 0]  (0 at x = 0, as PyTorch).

    Both directions run as parallel kernels (``tinynet.kernels.activation``) over the arrays'
    memory when it is one dense block (any axis order, so channel-major activations too), and
    as NumPy otherwise; the output keeps x's memory order.
    """

    @staticmethod
    def forward(ctx, x):
        y = None
        if isinstance(x, np.ndarray) and x.dtype in _KERNEL_TYPES and x.ndim:
            y = np.empty_like(x)
            source, target = _memory(x), _memory(y)
            if source is not None and target is not None and x.strides == y.strides:
                relu_forward(source, target)
            else:
                y = None
        if y is None:
            y = np.maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        if y.dtype in _KERNEL_TYPES and grad.dtype == y.dtype and grad.strides == y.strides:
            out = np.empty_like(y)
            memory = _memory(y), _memory(grad), _memory(out)
            if all(m is not None for m in memory) and out.strides == y.strides:
                relu_backward(*memory)
                return out
        return np.where(y > 0, grad, 0)


class Cast(Function):
    """y = x converted to ``dtype``;  dL/dx = g converted back to x's dtype."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.dtype)


def add(a, b) -> Tensor:
    return Add.apply(_operand(a), _operand(b))


def sub(a, b) -> Tensor:
    return Sub.apply(_operand(a), _operand(b))


def mul(a, b) -> Tensor:
    return Mul.apply(_operand(a), _operand(b))


def div(a, b) -> Tensor:
    return Div.apply(_operand(a), _operand(b))


def neg(x) -> Tensor:
    return Neg.apply(_operand(x))


def pow(a, b) -> Tensor:  # noqa: A001 - PyTorch's name
    return Pow.apply(_operand(a), _operand(b))


def exp(x) -> Tensor:
    return Exp.apply(_operand(x))


def log(x) -> Tensor:
    return Log.apply(_operand(x))


def relu(x) -> Tensor:
    return ReLU.apply(_operand(x))


def cast(x, dtype) -> Tensor:
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"cast: dtype must be a floating type (float32, float64); got {dtype}")
    return Cast.apply(_operand(x), dtype=dtype)


class Where(Function):
    """y = a where condition, else b (broadcast together, as ``np.where``); condition is a
    constant;  dL/da = unbroadcast(g where condition, else 0),  dL/db = unbroadcast(g where not
    condition, else 0)."""

    @staticmethod
    def forward(ctx, condition, a, b):
        ctx.condition, ctx.shapes = condition, (np.shape(a), np.shape(b))
        return np.where(condition, a, b)

    @staticmethod
    def backward(ctx, grad):
        shape_a, shape_b = ctx.shapes
        grad_a = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_a = unbroadcast(np.where(ctx.condition, grad, 0), shape_a)
        if ctx.needs_input_grad[2]:
            grad_b = unbroadcast(np.where(ctx.condition, 0, grad), shape_b)
        return None, grad_a, grad_b


def where(condition, a, b) -> Tensor:
    """``a`` where ``condition`` (a boolean array, used by value), else ``b``, as
    ``torch.where``."""
    condition = np.asarray(condition.data if isinstance(condition, Tensor) else condition)
    if condition.dtype != np.bool_:
        raise TypeError(f"where: condition must be a boolean array; got dtype {condition.dtype}")
    return Where.apply(condition, _operand(a), _operand(b))
