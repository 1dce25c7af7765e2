"""ReLU and the convolution's bias add as parallel passes over memory.

NumPy runs ``np.maximum(x, 0)``, ``np.where(y > 0, g, 0)`` and ``out += b[:, None]`` on one
core; these are the same element-by-element rules split across the cores (``prange``). Each
kernel takes flat (or row-major 2-D) arrays: the op hands over the memory in its own order.
"""

from __future__ import annotations

from numba import njit, prange


@njit(cache=True, parallel=True)
def relu_forward(x, y):
    """y[i] = max(x[i], 0) with np.maximum's rule: NaN and -0.0 pass through. x, y 1-D."""
    for i in prange(x.shape[0]):
        value = x[i]
        y[i] = 0 if value < 0 else value


@njit(cache=True, parallel=True)
def relu_backward(y, grad, out):
    """out[i] = grad[i] where y[i] > 0, else 0 (the ReLU's output y). All 1-D."""
    for i in prange(y.shape[0]):
        out[i] = grad[i] if y[i] > 0 else 0


@njit(cache=True, parallel=True)
def add_bias(rows, bias):
    """rows[o, :] += bias[o] for a C-contiguous (O, P) matrix, in place."""
    for o in prange(rows.shape[0]):
        b = bias[o]
        row = rows[o]
        for p in range(row.shape[0]):
            row[p] += b
