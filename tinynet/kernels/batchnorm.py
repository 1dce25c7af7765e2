"""Batch normalisation per channel, forward and backward.

Every array is a C-contiguous (C, m) matrix, m = N·H·W: row c holds channel c of every pixel of
the batch (the channel-major layout, see ``tinynet.ops.layout``), so each channel's reductions
run over contiguous memory and every loop over channels is a ``prange`` in which iteration c
reads and writes row c only. The math (and the derivation of the gradient) is in
``tinynet.ops.norm.BatchNormFunction``; with μ, σ the channel's statistics (computed by the
op), x̂ = (x - μ) / σ and g = dL/dy:

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

from numba import prange

from tinynet.kernels import parallel


@parallel
def centered_squares(x, mean, out):
    """out[c, i] = (x[c, i] - mean[c])² in x's dtype, rounded as NumPy's ``(x - mean)**2``
    (a subtraction, then a multiplication: no fused multiply-add without fastmath)."""
    channels, m = x.shape
    for c in prange(channels):
        mu = mean[c]
        row, target = x[c], out[c]
        for i in range(m):
            d = row[i] - mu
            target[i] = d * d


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
