"""ReLU and the convolution's bias add as parallel passes over memory.

NumPy runs ``np.maximum(x, 0)``, ``np.where(y > 0, g, 0)`` and ``out += b[:, None]`` on one
core; these are the same element-by-element rules split across the cores (``prange``). Each
kernel takes flat (or row-major 2-D) arrays. ``relu`` and ``relu_grad`` hand the kernels the
arrays' memory in its own order when it is one dense block (any axis order, so channel-major
activations too) and fall back to NumPy otherwise; the output keeps the input's memory order.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from tinynet.kernels import KERNEL_DTYPES, parallel


def relu(x) -> np.ndarray:
    """max(x, 0): ``relu_forward`` over x's memory where it can, else ``np.maximum``.
    Reference twin: ``tinynet.reference.relu``."""
    if isinstance(x, np.ndarray) and x.dtype in KERNEL_DTYPES and x.ndim:
        y = np.empty_like(x)
        source, target = _memory(x), _memory(y)
        if source is not None and target is not None and _same_order(x, y):
            relu_forward(source, target)
            return y
    return np.maximum(x, 0)


def relu_grad(y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """grad where y > 0, else 0, for y = relu(x): ``relu_backward`` over the arrays' memory where
    they share one layout, else ``np.where``."""
    if y.dtype in KERNEL_DTYPES and grad.dtype == y.dtype and _same_order(grad, y):
        out = np.empty_like(y)
        memory = _memory(y), _memory(grad), _memory(out)
        if all(m is not None for m in memory) and _same_order(out, y):
            relu_backward(*memory)
            return out
    return np.where(y > 0, grad, 0)


def _same_order(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a and b of one shape lay their elements out alike: equal strides along every
    axis longer than 1 (an axis of length 1 may have any stride: a batch of one image)."""
    return all(s == t for s, t, n in zip(a.strides, b.strides, a.shape) if n > 1)


def _memory(a: np.ndarray):
    """a's elements as a 1-D view in memory order, or None if they are not one dense block."""
    flat = a.ravel(order="K")
    return flat if np.may_share_memory(flat, a) else None


@parallel
def relu_forward(x, y):
    """y[i] = max(x[i], 0) with np.maximum's rule: NaN and -0.0 pass through. x, y 1-D."""
    for i in prange(x.shape[0]):
        value = x[i]
        y[i] = 0 if value < 0 else value


@parallel
def relu_backward(y, grad, out):
    """out[i] = grad[i] where y[i] > 0, else 0 (the ReLU's output y). All 1-D."""
    for i in prange(y.shape[0]):
        out[i] = grad[i] if y[i] > 0 else 0


@parallel
def add_bias(rows, bias):
    """rows[o, :] += bias[o] for a C-contiguous (O, P) matrix, in place."""
    for o in prange(rows.shape[0]):
        b = bias[o]
        row = rows[o]
        for p in range(row.shape[0]):
            row[p] += b
