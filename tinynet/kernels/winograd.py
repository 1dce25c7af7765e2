"""The three transforms of Winograd's F(2x2, 3x3) convolution, stride 1, padding 1.

The math, the error bound and where it pays are in ``tinynet/inference/winograd.py``, which calls
these kernels around its 16 GEMMs ``M[k] = U[k] · V[k]``. Transformed arrays are indexed by
k = 4ξ + ν, the position (ξ, ν) in the 4x4 transformed tile, and tile t = (n·TH + ty)·TW + tx
covers output rows 2ty, 2ty+1 and columns 2tx, 2tx+1 of image n, with TH = ⌈H/2⌉, TW = ⌈W/2⌉.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinynet.kernels import parallel


@parallel
def filter_transform(weight, U):
    """Fill U (16, O, C) from weight (O, C, 3, 3): U[4ξ + ν, o, c] = (G g Gᵀ)[ξ, ν] for
    g = weight[o, c].

    G g Gᵀ is two passes of the 1-D transform G u = (u0, (u0 + u1 + u2)/2, (u0 - u1 + u2)/2, u2):
    over g's columns, then over the rows. One thread per output channel. Returns U.
    """
    out_channels, channels = weight.shape[:2]
    for o in prange(out_channels):
        s = np.empty((4, 3), dtype=U.dtype)
        for c in range(channels):
            for j in range(3):  # G g, one column at a time
                g0, g1, g2 = weight[o, c, 0, j], weight[o, c, 1, j], weight[o, c, 2, j]
                s[0, j], s[1, j], s[2, j], s[3, j] = g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2
            for i in range(4):  # (G g) Gᵀ, one row at a time
                g0, g1, g2 = s[i, 0], s[i, 1], s[i, 2]
                U[4 * i, o, c] = g0
                U[4 * i + 1, o, c] = (g0 + g1 + g2) / 2
                U[4 * i + 2, o, c] = (g0 - g1 + g2) / 2
                U[4 * i + 3, o, c] = g2
    return U


@njit(cache=True, nogil=True)
def input_transform(x, first_row, V):
    """Fill V (16, C, R·TW) from x (C, N, H, W) (channel-major, C-contiguous) for the R rows of
    tiles first_row <= n·TH + ty < first_row + R (R = V.shape[2] // TW), t counted from the first:

        V[4ξ + ν, c, t - first_row·TW] = (Bᵀ d B)[ξ, ν],
        d[i, j] = x[c, n, 2ty + i - 1, 2tx + j - 1]

    (0 outside the image: the padding of 1). Bᵀ d B is two passes of the 1-D transform
    Bᵀ u = (u0 - u2, u1 + u2, u2 - u1, u1 - u3): Bᵀ over the 4 input rows of a row of tiles at
    once (neighbouring tiles share 2 columns), then B over each tile's 4 columns of that.
    Each row of tiles is written as 16 runs of TW values, not as 16 values per tile: 16
    element-wise streams C·R·TW·itemsize bytes apart (often a multiple of 4 KiB) thrashed the
    cache. Returns V.
    """
    channels, _, height, width = x.shape
    th, tw = (height + 1) // 2, (width + 1) // 2
    rows = np.zeros((4, 2 * tw + 2), dtype=V.dtype)  # zero-bordered input rows
    col_t = np.empty((4, 2 * tw + 2), dtype=V.dtype)  # Bᵀ d for every column
    for c in range(channels):
        for r in range(V.shape[2] // tw):
            n, ty = divmod(first_row + r, th)
            for i in range(4):
                row = 2 * ty + i - 1
                if 0 <= row < height:
                    rows[i, 1 : width + 1] = x[c, n, row]
                else:
                    rows[i, :] = 0
            for j in range(2 * tw + 2):
                d0, d1, d2, d3 = rows[0, j], rows[1, j], rows[2, j], rows[3, j]
                col_t[0, j], col_t[1, j] = d0 - d2, d1 + d2
                col_t[2, j], col_t[3, j] = d2 - d1, d1 - d3
            start = r * tw
            for i in range(4):
                for tx in range(tw):
                    d0, d1 = col_t[i, 2 * tx], col_t[i, 2 * tx + 1]
                    d2, d3 = col_t[i, 2 * tx + 2], col_t[i, 2 * tx + 3]
                    V[4 * i, c, start + tx] = d0 - d2
                    V[4 * i + 1, c, start + tx] = d1 + d2
                    V[4 * i + 2, c, start + tx] = d2 - d1
                    V[4 * i + 3, c, start + tx] = d1 - d3
    return V


@njit(cache=True, nogil=True)
def output_transform(M, bias, relu, first_row, height, width, out):
    """Fill the outputs of the R rows of tiles from first_row on (R = M.shape[2] // TW, as in
    ``input_transform``) in out (O, N·H·W) (the channel-major output's rows, C-contiguous) from
    their transformed products M (16, O, R·TW):

        out[o, (n·H + 2ty + p)·W + 2tx + q] = act((Aᵀ m A)[p, q] + bias[o]),
        m[ξ, ν] = M[4ξ + ν, o, t - first_row·TW]

    for the p, q in {0, 1} that fall inside the H x W output; act is ReLU if relu (with
    np.maximum's rule: NaN and -0.0 pass through), else the identity. Aᵀ m A is two passes of
    the 1-D transform Aᵀ u = (u0 + u1 + u2, u1 - u2 - u3): over m's columns, giving row p of
    Aᵀ m (s0..s3), then over that row. bias (O,) (zeros for none). Nothing outside out's own
    rows is written. Each output row is one loop over its tiles, the same sums as one loop
    writing both rows but 11-16% faster. Returns out.
    """
    th, tw = (height + 1) // 2, (width + 1) // 2
    for o in range(M.shape[1]):
        b = bias[o]
        for r in range(M.shape[2] // tw):
            n, ty = divmod(first_row + r, th)
            row = (n * height + 2 * ty) * width  # output row 2ty: (Aᵀ m)[0] = m0 + m1 + m2
            for t in range(r * tw, (r + 1) * tw):
                s0 = M[0, o, t] + M[4, o, t] + M[8, o, t]
                s1 = M[1, o, t] + M[5, o, t] + M[9, o, t]
                s2 = M[2, o, t] + M[6, o, t] + M[10, o, t]
                s3 = M[3, o, t] + M[7, o, t] + M[11, o, t]
                _write_pair(s0, s1, s2, s3, b, relu, out[o], row + 2 * (t - r * tw), width)
            if 2 * ty + 1 == height:
                continue
            row += width  # output row 2ty + 1: (Aᵀ m)[1] = m1 - m2 - m3
            for t in range(r * tw, (r + 1) * tw):
                s0 = M[4, o, t] - M[8, o, t] - M[12, o, t]
                s1 = M[5, o, t] - M[9, o, t] - M[13, o, t]
                s2 = M[6, o, t] - M[10, o, t] - M[14, o, t]
                s3 = M[7, o, t] - M[11, o, t] - M[15, o, t]
                _write_pair(s0, s1, s2, s3, b, relu, out[o], row + 2 * (t - r * tw), width)
    return out


@njit(cache=True, nogil=True, inline="always")
def _write_pair(s0, s1, s2, s3, b, relu, out_row, i, width):
    """(s0..s3) A + b, through the ReLU if relu, into out_row[i] and (if inside) out_row[i + 1]."""
    y0 = s0 + s1 + s2 + b
    y1 = s1 - s2 - s3 + b
    out_row[i] = 0 if relu and y0 < 0 else y0
    if (i + 1) % width:
        out_row[i + 1] = 0 if relu and y1 < 0 else y1
