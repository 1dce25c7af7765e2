"""Batch normalisation per channel, forward and backward.

Every array is a C-contiguous (C, m) matrix, m = N·H·W: row c holds channel c of every pixel of
the batch (the channel-major layout, see ``tinynet.ops.layout``), so each channel's reductions
run over contiguous memory and every loop over channels is a ``prange`` in which iteration c
reads and writes row c only. The math (and the derivation of the gradient) is in
``tinynet.ops.norm.BatchNormFunction``; with μ, σ the channel's statistics (computed by the
op), x̂ = (x - μ) / σ and g = dL/dy:

    statistics:           μ = Σ x / m,           v = Σ (x - μ)² / m
    forward:              y = x·a + b,           a = γ/σ, b = β - μ a    (per-channel scalars)
    backward sums:        Σ g,                   Σ g x̂ = (1/σ) Σ g (x - μ)
    backward, training:   dx = a (g - mean(g) - x̂ mean(g x̂))
    backward, evaluation: dx = a g

The backward's sums accumulate in float64 whatever the input's dtype (float32 sums over a
64·32·32 channel would otherwise lose digits), and each channel's row is read a second time,
for dx, while it is still in cache. ``fastmath={"reassoc"}`` only lets LLVM keep several
partial sums (vectorised reductions); NaN and infinities still propagate.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinynet.kernels import parallel


@njit(cache=True, inline="always")
def _term(value, mean, squared):
    """value, or (value - mean)² rounded as NumPy's ``(x - mean)**2`` if squared (a subtraction,
    then a multiplication: no fused multiply-add without fastmath)."""
    if squared:
        d = value - mean
        return d * d
    return value


@njit(cache=True, inline="always")
def _block_sum(row, start, count, mean, squared):
    """NumPy's sum of at most 128 values: fewer than 8 in order; else 8 running sums added as
    ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the tail in order."""
    if count < 8:
        total = row.dtype.type(-0.0)
        for i in range(start, start + count):
            total += _term(row[i], mean, squared)
        return total
    r0, r1 = _term(row[start], mean, squared), _term(row[start + 1], mean, squared)
    r2, r3 = _term(row[start + 2], mean, squared), _term(row[start + 3], mean, squared)
    r4, r5 = _term(row[start + 4], mean, squared), _term(row[start + 5], mean, squared)
    r6, r7 = _term(row[start + 6], mean, squared), _term(row[start + 7], mean, squared)
    end = start + count - count % 8
    for i in range(start + 8, end, 8):
        r0 += _term(row[i], mean, squared)
        r1 += _term(row[i + 1], mean, squared)
        r2 += _term(row[i + 2], mean, squared)
        r3 += _term(row[i + 3], mean, squared)
        r4 += _term(row[i + 4], mean, squared)
        r5 += _term(row[i + 5], mean, squared)
        r6 += _term(row[i + 6], mean, squared)
        r7 += _term(row[i + 7], mean, squared)
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(end, start + count):
        total += _term(row[i], mean, squared)
    return total


@njit(cache=True)
def pairwise_sum(row, mean, squared):
    """Σ of row (of (row - mean)² if squared) in row's dtype by NumPy's pairwise summation
    (``pairwise_sum`` in numpy/_core/src/umath/loops_utils.h.src), so it rounds as ``np.sum``:
    up to 128 values by ``_block_sum``; more split at a multiple of 8 near the middle and the two
    halves' sums added. The recursion runs on an explicit stack: numba's cache cannot reload a
    recursive function (the process crashes)."""
    starts, counts = np.empty(128, np.int64), np.empty(128, np.int64)
    split = np.zeros(128, np.bool_)
    sums = np.empty(128, row.dtype)
    starts[0], counts[0] = 0, len(row)
    frames, done = 1, 0  # frames to finish; sums of finished halves not yet added
    while frames:
        top = frames - 1
        start, count = starts[top], counts[top]
        if count <= 128:
            sums[done] = _block_sum(row, start, count, mean, squared)
            done, frames = done + 1, frames - 1
        elif split[top]:  # both halves summed: left + right
            sums[done - 2] = sums[done - 2] + sums[done - 1]
            split[top], done, frames = False, done - 1, frames - 1
        else:  # push the right half, then the left, which is summed first
            half = count // 2 - count // 2 % 8
            split[top] = True
            starts[frames], counts[frames] = start + half, count - half
            starts[frames + 1], counts[frames + 1] = start, half
            frames += 2
    return sums[0]


@parallel
def batch_statistics(x, mean, var):
    """mean[c] and var[c], the mean and biased variance of row c of x (C, m), rounded as NumPy's
    ``x.mean(axis=1)`` and ``x.var(axis=1)``: μ = (0 + Σx) / m, then v = (0 + Σ(x - μ)²) / m
    with the rounded μ, each sum by ``pairwise_sum`` in x's dtype, and NumPy's reduction
    starting from 0. Two reading passes per row, no array of squares."""
    channels, m = x.shape
    for c in prange(channels):
        row = x[c]
        zero, count = row.dtype.type(0), row.dtype.type(m)
        mean[c] = (zero + pairwise_sum(row, zero, False)) / count
        var[c] = (zero + pairwise_sum(row, mean[c], True)) / count


@parallel
def batch_norm_apply(x, scale, shift, out):
    """out[c, i] = x[c, i]·scale[c] + shift[c] for x and out (C, m); scale and shift have x's
    dtype, so the rounding is NumPy's ``x * scale + shift``."""
    channels, m = x.shape
    for c in prange(channels):
        a, b = scale[c], shift[c]
        row, target = x[c], out[c]
        for i in range(m):
            target[i] = row[i] * a + b


@parallel(fastmath={"reassoc"})
def batch_norm_backward(x, g, mean, invstd, scale, training, dx, sum_g, sum_g_x_hat):
    """The gradient sums, and dL/dx into dx if it has rows.

    x, g, dx (C, m): the input, the output's gradient and the input's gradient (pass a (0, 0)
    array when it is not needed); mean, invstd = 1/σ and scale = γ/σ (C,) from the forward.
    Writes sum_g[c] = Σ_i g and sum_g_x_hat[c] = Σ_i g x̂ (dL/dβ and dL/dγ), and
        training:   dx = scale (g - mean(g) - x̂ mean(g x̂)),   x̂ = (x - mean) invstd
        evaluation: dx = scale g
    """
    channels, m = x.shape
    for c in prange(channels):
        mu, s = mean[c] + 0.0, invstd[c] + 0.0  # as float64
        row, grad = x[c], g[c]
        total, weighted = 0.0, 0.0
        for i in range(m):
            total += grad[i]
            weighted += grad[i] * (row[i] - mu)
        weighted *= s
        sum_g[c] = total
        sum_g_x_hat[c] = weighted
        if dx.shape[0] == 0:
            continue
        a, target = scale[c], dx[c]
        if training:
            mean_g, mean_g_x_hat = total / m, weighted / m
            for i in range(m):
                x_hat = (row[i] - mu) * s
                target[i] = a * (grad[i] - mean_g - x_hat * mean_g_x_hat)
        else:
            for i in range(m):
                target[i] = a * grad[i]
