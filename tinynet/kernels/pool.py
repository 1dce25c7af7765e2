"""Pooling kernels: max and mean over rectangular windows of each (c, n) plane.

Every array is a C-contiguous channel-major (C, N, H, W) buffer (``tinynet.ops.layout``); each
kernel sees it as C·N independent planes (H, W) and runs them in parallel (``prange``). Within a
plane a backward is sequential, so where windows overlap their gradients add without racing.

The windows come as tables, one per axis, computed by the op (``tinynet.ops.pool``): window
(i, j) covers input rows ``rows[0][i] <= y < rows[1][i]`` and columns
``cols[0][j] <= x < cols[1][j]``, already clipped to the input, so padding never appears here.
For the means, ``rows[2][i] * cols[2][j]`` is the window's divisor. Average and adaptive average
pooling differ only in these tables, so both use the two mean kernels.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _planes(a):
    """A C-contiguous (C, N, H, W) array as a (C·N, H, W) view: one plane per (c, n)."""
    return a.reshape((a.shape[0] * a.shape[1], a.shape[2], a.shape[3]))


@njit(cache=True, parallel=True)
def max_pool2d_forward(x, out, argmax, rows, cols):
    """out[p, i, j] = max of x[p] over window (i, j); argmax[p, i, j] = y·W + x of that maximum.

    The window is scanned row by row and a value wins if it is greater than the best so far or
    NaN, as PyTorch's CPU kernel does: of equal maxima the first wins, of NaNs the last, and a
    window of -inf reports its first element.
    """
    xs, outs, args = _planes(x), _planes(out), _planes(argmax)
    width = xs.shape[2]
    for p in prange(xs.shape[0]):
        for i in range(outs.shape[1]):
            for j in range(outs.shape[2]):
                # Starting from the first element, not -inf, keeps best in x's dtype (faster)
                # and leaves the same winner.
                top, left = rows[0][i], cols[0][j]
                best, where = xs[p, top, left], top * width + left
                for y in range(top, rows[1][i]):
                    for x_ in range(left, cols[1][j]):
                        value = xs[p, y, x_]
                        if value > best or np.isnan(value):
                            best, where = value, y * width + x_
                outs[p, i, j] = best
                args[p, i, j] = where


@njit(cache=True, parallel=True)
def max_pool2d_backward(grad_out, argmax, grad_in):
    """grad_in[p, a] = Σ of grad_out[p, i, j] over the windows whose argmax is a (a = y·W + x)."""
    gout, args, gin = _planes(grad_out), _planes(argmax), _planes(grad_in)
    width = gin.shape[2]
    for p in prange(gin.shape[0]):
        gin[p] = 0
        for i in range(gout.shape[1]):
            for j in range(gout.shape[2]):
                where = args[p, i, j]
                gin[p, where // width, where % width] += gout[p, i, j]


@njit(cache=True, parallel=True)
def avg_pool2d_forward(x, out, rows, cols):
    """out[p, i, j] = (Σ of x[p] over window (i, j)) / (rows[2][i] · cols[2][j])."""
    xs, outs = _planes(x), _planes(out)
    for p in prange(xs.shape[0]):
        for i in range(outs.shape[1]):
            for j in range(outs.shape[2]):
                total = 0.0
                for y in range(rows[0][i], rows[1][i]):
                    for x_ in range(cols[0][j], cols[1][j]):
                        total += xs[p, y, x_]
                outs[p, i, j] = total / (rows[2][i] * cols[2][j])


@njit(cache=True, parallel=True)
def avg_pool2d_backward(grad_out, grad_in, rows, cols):
    """grad_in[p, y, x] = Σ over the windows (i, j) that hold (y, x) of
    grad_out[p, i, j] / (rows[2][i] · cols[2][j])."""
    gout, gin = _planes(grad_out), _planes(grad_in)
    for p in prange(gin.shape[0]):
        gin[p] = 0
        for i in range(gout.shape[1]):
            for j in range(gout.shape[2]):
                share = gout[p, i, j] / (rows[2][i] * cols[2][j])
                for y in range(rows[0][i], rows[1][i]):
                    for x_ in range(cols[0][j], cols[1][j]):
                        gin[p, y, x_] += share
