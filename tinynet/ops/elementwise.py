"""Elementwise ops: arithmetic with NumPy broadcasting, exp, log, relu and dtype casts.

Broadcasting in forward copies an operand along the broadcast axes, so in backward the
gradient of that operand is the sum over those axes (``unbroadcast``).
"""

from __future__ import annotations

import numbers

import numpy as np

from tinynet.function import Function
from tinynet.kernels import activation
from tinynet.tensor import Tensor, as_array


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


class AddFunction(Function):
    """y = a + b;  dL/da = unbroadcast(g),  dL/db = unbroadcast(g)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.add(a, b)

    @staticmethod
    def backward(ctx, grad):
        shape_a, shape_b = ctx.shapes
        return unbroadcast(grad, shape_a), unbroadcast(grad, shape_b)


class SubFunction(Function):
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


class MulFunction(Function):
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


class DivFunction(Function):
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


class NegFunction(Function):
    """y = -x;  dL/dx = -g."""

    @staticmethod
    def forward(ctx, x):
        return np.negative(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class PowFunction(Function):
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


class ExpFunction(Function):
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


class LogFunction(Function):
    """y = ln x;  dL/dx = g / x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / x


class ReLUFunction(Function):
    """y = max(x, 0);  dL/dx = g * [y > 0]  (0 at x = 0, as PyTorch).

    Both directions run as parallel kernels where the memory allows (``kernels.activation``).
    Reference twin: ``tinynet.reference.relu``.
    """

    @staticmethod
    def forward(ctx, x):
        y = activation.relu(x)  # y = max(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return activation.relu_grad(y, grad)  # dL/dx = g * [y > 0]


class CastFunction(Function):
    """y = x converted to ``dtype``;  dL/dx = g converted back to x's dtype."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.dtype)


def add(a, b) -> Tensor:
    return AddFunction.apply(_operand(a), _operand(b))


def sub(a, b) -> Tensor:
    return SubFunction.apply(_operand(a), _operand(b))


def mul(a, b) -> Tensor:
    return MulFunction.apply(_operand(a), _operand(b))


def div(a, b) -> Tensor:
    return DivFunction.apply(_operand(a), _operand(b))


def neg(x) -> Tensor:
    return NegFunction.apply(_operand(x))


def pow(a, b) -> Tensor:
    return PowFunction.apply(_operand(a), _operand(b))


def exp(x) -> Tensor:
    return ExpFunction.apply(_operand(x))


def log(x) -> Tensor:
    return LogFunction.apply(_operand(x))


def relu(x) -> Tensor:
    return ReLUFunction.apply(_operand(x))


def cast(x, dtype) -> Tensor:
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"cast: dtype must be a floating type (float32, float64); got {dtype}")
    return CastFunction.apply(_operand(x), dtype=dtype)


class WhereFunction(Function):
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
    condition = np.asarray(as_array(condition))
    if condition.dtype != np.bool_:
        raise TypeError(f"where: condition must be a boolean array; got dtype {condition.dtype}")
    return WhereFunction.apply(condition, _operand(a), _operand(b))
