"""Local response normalisation across channels, forward and backward.

The input is a C-contiguous (C, P) matrix, P = N·H·W: row c holds channel c of every pixel of the
batch (the channel-major layout, see ``tinynet.ops.layout``). With a window of ``size`` channels
that starts size//2 before c and ends (size-1)//2 after it (channels outside [0, C) contribute 0):

    window(c) = [c - size//2, c + (size-1)//2]
    S[c, p]   = k + alpha/size · Σ_{c' in window(c)} x[c', p]²
    y[c, p]   = x[c, p] · S[c, p]^-beta

and, for an upstream gradient g (the derivation is in ``tinynet.ops.norm``),

    dx[j, p]  = g[j, p] S[j, p]^-beta - 2·alpha·beta/size · x[j, p] Σ_{c : j in window(c)} r[c,p]
    r[c, p]   = g[c, p] x[c, p] S[c, p]^-beta / S[c, p]
    {c : j in window(c)} = [j - (size-1)//2, j + size//2]

Every loop over channels is a ``prange`` in which iteration c writes row c only, and every inner
loop runs along a row, over contiguous memory. Window sums are taken directly (``size`` terms per
element), never as a running sum, which would lose small terms to cancellation. For beta = 3/4
(GoogLeNet's, PyTorch's default) the power is taken as 1 / sqrt(S·sqrt(S)): square roots and a
division are single vector instructions, while ``S ** -beta`` calls the C library's pow for each
element, which was most of the forward's time (rounding: within 2 ulp instead of 1).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinynet.kernels import parallel


@njit(cache=True)
def _bracket(x, c, size, alpha_over_size, k, out):
    """out[:] = S[c, :] = k + alpha/size · Σ_{c' in window(c)} x[c', :]²."""
    channels, pixels = x.shape
    out[:] = 0
    for other in range(max(c - size // 2, 0), min(c + (size - 1) // 2 + 1, channels)):
        for p in range(pixels):
            out[p] += x[other, p] * x[other, p]
    for p in range(pixels):
        out[p] = k + alpha_over_size * out[p]


@parallel
def lrn_forward(x, size, alpha_over_size, beta, k):
    """x (C, P) -> (y, S^-beta), both (C, P); the scalars have x's dtype."""
    channels, pixels = x.shape
    y = np.empty_like(x)
    s_pow = np.empty_like(x)
    one = np.ones(1, dtype=x.dtype)[0]
    for c in prange(channels):
        row = s_pow[c]
        _bracket(x, c, size, alpha_over_size, k, row)
        if beta == 0.75:  # the paper's and PyTorch's default: S^-3/4 = 1 / sqrt(S·sqrt(S))
            for p in range(pixels):
                row[p] = one / np.sqrt(row[p] * np.sqrt(row[p]))
        else:
            for p in range(pixels):
                row[p] = row[p] ** -beta
        for p in range(pixels):
            y[c, p] = x[c, p] * row[p]
    return y, s_pow


@parallel
def lrn_backward(x, grad, s_pow, size, alpha_over_size, beta, k):
    """dL/dx (C, P) from x, the upstream gradient and forward's S^-beta, all (C, P).

    S itself is recomputed (cheap window sums) rather than saved, so forward keeps one array and
    backward needs no power.
    """
    channels, pixels = x.shape
    r = np.empty_like(x)
    for c in prange(channels):
        s = np.empty(pixels, dtype=x.dtype)
        _bracket(x, c, size, alpha_over_size, k, s)
        for p in range(pixels):
            r[c, p] = grad[c, p] * x[c, p] * s_pow[c, p] / s[p]
    dx = np.empty_like(x)
    coef = (alpha_over_size + alpha_over_size) * beta  # not 2 * ...: keeps float32 float32
    for j in prange(channels):
        dx[j] = 0
        for c in range(max(j - (size - 1) // 2, 0), min(j + size // 2 + 1, channels)):
            for p in range(pixels):
                dx[j, p] += r[c, p]
        for p in range(pixels):
            dx[j, p] = grad[j, p] * s_pow[j, p] - coef * x[j, p] * dx[j, p]
    return dx
