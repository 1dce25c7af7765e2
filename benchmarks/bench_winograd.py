"""Winograd F(2x2, 3x3) (Lavin & Gray 2015) against tinynet's im2col + one GEMM, forward only (no
grad), on the paper GoogLeNet's 3x3 stride-1 convolutions (224x224 input), batch 1 and 8, float32.

    python benchmarks/bench_winograd.py [--repeat 9] [--threads T] [--batches 1 8]

Issue 15 asked whether Winograd should replace im2col for these layers. Measured on the shared
2-core VM (2026-11-27, load average 1.8-2.7 from a training run): with 1 thread Winograd took
0.91x im2col's total time at batch 1 and 0.77x at batch 8 (0.6-0.8x on the 28x28 and 14x14
layers, but 1.6-1.8x on the 7x7 ones at batch 1); with the default 2 threads it took 3.4x and
3.1x, because each of its 16 GEMM calls per layer waits ~8 ms for OpenBLAS's second thread to
get the core the other process holds, where im2col makes one call. So it was NOT wired into
tinynet, and the implementation lives here, where the measurement can be repeated. Before
timing a layer, its float32 Winograd output is checked against the exact convolution (float64
``F.conv2d``) within the bound below.

The algorithm. In 1-D, F(2, 3) computes two outputs of a 3-tap filter g from 4 inputs d as
y = Aᵀ [(G g) ⊙ (Bᵀ d)]; nested, a 4x4 input tile d and a 3x3 filter g give the 2x2 outputs

    Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A
         [1  0 -1  0]          [ 1    0    0 ]
    Bᵀ = [0  1  1  0]     G =  [1/2  1/2  1/2]     Aᵀ = [1  1  1  0]
         [0 -1  1  0]          [1/2 -1/2  1/2]          [0  1 -1 -1]
         [0  1  0 -1]          [ 0    0    1 ]

Summed over input channels c, with U = G g Gᵀ per (o, c) and V = Bᵀ d B per (c, tile),
Y[o, tile] = Aᵀ [Σ_c U[o, c] ⊙ V[c, tile]] A, and for each of the 16 positions (ξ, ν) of the
transformed tile the sum over c is a matrix product M[ξν] = U[ξν] (O, C) · V[ξν] (C, tiles):
16 GEMMs of O·C·tiles multiply-adds against im2col's O·9C·(4·tiles), 2.25 times fewer. Tile
(n, ty, tx) covers outputs rows 2ty, 2ty+1 and columns 2tx, 2tx+1 of image n and reads padded
input rows 2ty .. 2ty+3 and columns 2tx .. 2tx+3 (zeros past the image); the outputs of a partial
last tile that fall past the output are dropped.

The float32 error bound. With u = 2⁻²⁴ and γ_n = n·u / (1 - n·u), each term of the expansion
of y[o, p, q] passes through at most C + 11 roundings: 4 in G g Gᵀ (two additions per pass; the
halvings are exact), 2 in Bᵀ d B, C in the length-C dot product of the GEMM (in any order, FMA or
not), 5 in Aᵀ m A plus the bias (two additions, then three). So, barring underflow,

    |ŷ - y| <= γ_{C+11} · (|b| + Σ_c |Aᵀ| [(|G| |g| |Gᵀ|) ⊙ (|Bᵀ| |d| |B|)] |A|)     (1)

(``error_bound``), against the direct convolution's γ_{9C+1} · (|b| + Σ |w| |x|). In 1-D the
magnitudes |Aᵀ| diag(|G| e_i) |Bᵀ| put total weight 4, 2, 2 on the three taps (for the first
output; 2, 2, 4 for the second) where the direct sum puts 1, so with S = Σ |w| · max |x| over
the output's window, the sum in (1) is at most |b| + 16 S and the direct one's at most |b| + S:
Winograd's worst case is at most 16 (C + 11) / (9C + 1) times the direct one's (under 2 for
C >= 88, 16/9 for large C). Measured on random data it is far below (1): see the table's
err/bound column, and err/im2col for the measured error against im2col's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed runs per figure (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="default: all cores")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    # Thread pools (OpenBLAS/MKL, OpenMP, numba) read these when first loaded, so set them first.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

import tinynet  # noqa: E402
import tinynet.functional as F  # noqa: E402
from tinynet.ops import layout  # noqa: E402

tinynet.runtime.configure()  # as tinynet's commands run: OpenBLAS's threads sleep when idle

# The paper GoogLeNet's 3x3 stride-1 convolutions: name, C_in (the 3x3 reduce), C_out, side.
LAYERS = [
    ("conv2", 64, 192, 56),
    ("3a", 96, 128, 28),
    ("3b", 128, 192, 28),
    ("4a", 96, 208, 14),
    ("4b", 112, 224, 14),
    ("4c", 128, 256, 14),
    ("4d", 144, 288, 14),
    ("4e", 160, 320, 14),
    ("5a", 160, 320, 7),
    ("5b", 192, 384, 7),
]

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)


def tile_counts(out_size) -> tuple[int, int]:
    """(tiles down, tiles across): ceil(OH / 2), ceil(OW / 2) 2x2 output tiles."""
    return tuple(-(-side // 2) for side in out_size)


@njit(parallel=True)
def filter_transform(weight, U):
    """Fill U (16, O, C) from weight (O, C, 3, 3): U[4ξ + ν, o, c] = (G g Gᵀ)[ξ, ν] for
    g = weight[o, c].

    G g Gᵀ is two passes of the 1-D transform G u = (u0, (u0 + u1 + u2)/2, (u0 - u1 + u2)/2, u2):
    over g's columns, then over the rows. U depends on the weight alone, not on the input.
    One thread per output channel. Returns U.
    """
    out_channels, channels = weight.shape[:2]
    for o in prange(out_channels):
        s = np.empty((4, 3), dtype=weight.dtype)
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


@njit(parallel=True)
def input_transform(x, padding, tiles, V):
    """Fill V (16, C, N·TH·TW) from x (C, N, H, W) (channel-major, C-contiguous):

        V[4ξ + ν, c, (n·TH + ty)·TW + tx] = (Bᵀ d B)[ξ, ν],
        d[i, j] = x[c, n, 2ty + i - pad_top, 2tx + j - pad_left]   (0 outside the image)

    padding (pad_top, pad_left) >= 0, tiles (TH, TW). Bᵀ d B is two passes of the 1-D transform
    Bᵀ u = (u0 - u2, u1 + u2, u2 - u1, u1 - u3): Bᵀ over the 4 input rows of a row of tiles at
    once (neighbouring tiles share 2 columns), then B over each tile's 4 columns of that.
    One thread per input channel. Each row of tiles is written as 16 runs of TW values: 16
    interleaved element-wise streams, C·N·TH·TW·itemsize bytes apart (often a multiple of
    4 KiB), thrashed the cache. Returns V.
    """
    channels, batch, height, width = x.shape
    pad_top, pad_left = padding
    th, tw = tiles
    last = max(0, min(width, 2 * tw + 2 - pad_left))  # input columns [0, last) fall in some tile
    for c in prange(channels):
        rows = np.zeros((4, 2 * tw + 2), dtype=x.dtype)  # zero-bordered input rows
        col_t = np.empty((4, 2 * tw + 2), dtype=x.dtype)  # Bᵀ d for every column
        for n in range(batch):
            for ty in range(th):
                for i in range(4):
                    row = 2 * ty + i - pad_top
                    if 0 <= row < height:
                        rows[i, pad_left : last + pad_left] = x[c, n, row, :last]
                    else:
                        rows[i, :] = 0
                for j in range(2 * tw + 2):
                    d0, d1, d2, d3 = rows[0, j], rows[1, j], rows[2, j], rows[3, j]
                    col_t[0, j], col_t[1, j] = d0 - d2, d1 + d2
                    col_t[2, j], col_t[3, j] = d2 - d1, d1 - d3
                start = (n * th + ty) * tw
                for i in range(4):
                    for tx in range(tw):
                        d0, d1 = col_t[i, 2 * tx], col_t[i, 2 * tx + 1]
                        d2, d3 = col_t[i, 2 * tx + 2], col_t[i, 2 * tx + 3]
                        V[4 * i, c, start + tx] = d0 - d2
                        V[4 * i + 1, c, start + tx] = d1 + d2
                        V[4 * i + 2, c, start + tx] = d2 - d1
                        V[4 * i + 3, c, start + tx] = d1 - d3
    return V


@njit(parallel=True)
def output_transform(M, bias, y):
    """Fill y (O, N, OH, OW) (channel-major) from the transformed products M (16, O, N·TH·TW):

        y[o, n, 2ty + p, 2tx + q] = (Aᵀ m A)[p, q] + bias[o],   m[ξ, ν] = M[4ξ + ν, o, tile]

    for the p, q in {0, 1} that fall inside the output (TH, TW = ``tile_counts((OH, OW))``).
    Aᵀ m A is two passes of the 1-D transform Aᵀ u = (u0 + u1 + u2, u1 - u2 - u3): over m's
    columns, then over the rows. bias (O,) (pass zeros for none). One thread per output
    channel. Returns y.
    """
    out_channels, batch, oh, ow = y.shape
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    for o in prange(out_channels):
        b = bias[o]
        s = np.empty((2, 4), dtype=y.dtype)
        for n in range(batch):
            for ty in range(th):
                start = (n * th + ty) * tw
                for tx in range(tw):
                    t = start + tx
                    for j in range(4):  # Aᵀ m, one column at a time
                        m0, m1 = M[j, o, t], M[4 + j, o, t]
                        m2, m3 = M[8 + j, o, t], M[12 + j, o, t]
                        s[0, j], s[1, j] = m0 + m1 + m2, m1 - m2 - m3
                    for p in range(min(2, oh - 2 * ty)):  # (Aᵀ m) A, one row at a time
                        y[o, n, 2 * ty + p, 2 * tx] = s[p, 0] + s[p, 1] + s[p, 2] + b
                        if 2 * tx + 1 < ow:
                            y[o, n, 2 * ty + p, 2 * tx + 1] = s[p, 1] - s[p, 2] - s[p, 3] + b
    return y


def winograd_conv2d(x, weight, bias=None, padding=(1, 1)):
    """conv2d(x, weight, bias, padding) for a 3x3 weight (O, C, 3, 3), stride 1, by F(2x2, 3x3):
    x (N, C, H, W) in any memory order; returns a channel-major (N, O, OH, OW) view."""
    n, c, h, w = x.shape
    out_channels = len(weight)
    out_size = (h + 2 * padding[0] - 2, w + 2 * padding[1] - 2)
    tiles = tile_counts(out_size)
    U = filter_transform(weight, np.empty((16, out_channels, c), x.dtype))
    V = np.empty((16, c, n * tiles[0] * tiles[1]), x.dtype)
    input_transform(layout.channel_major(x), padding, tiles, V)
    y = np.empty((out_channels, n) + out_size, x.dtype)
    b = np.zeros(out_channels, x.dtype) if bias is None else bias
    output_transform(np.matmul(U, V), b, y)
    return y.transpose(1, 0, 2, 3)


def error_bound(x, weight, bias=None, padding=(1, 1)):
    """Bound (1) of the module docstring on |float32 Winograd - exact| per output (N, O, OH, OW),
    plus the float64 reference's own γ_{9C+1} share (the sum in (1) bounds Σ |w| |x| too)."""
    x, weight = np.abs(x.astype(float)), np.abs(weight.astype(float))
    n, c, h, w = x.shape
    (ph, pw), out_channels = padding, len(weight)
    out_size = (h + 2 * ph - 2, w + 2 * pw - 2)
    th, tw = tile_counts(out_size)
    padded = np.zeros((n, c, 2 * th + 2, 2 * tw + 2))
    inside = x[:, :, : 2 * th + 2 - ph, : 2 * tw + 2 - pw]
    padded[:, :, ph : ph + inside.shape[2], pw : pw + inside.shape[3]] = inside
    d = np.lib.stride_tricks.sliding_window_view(padded, (4, 4), axis=(2, 3))[:, :, ::2, ::2]
    V = np.einsum("ak,ncyxkl,bl->abcnyx", abs(B_T), d, abs(B_T)).reshape(16, c, -1)
    U = np.einsum("ai,ocij,bj->aboc", abs(G), weight, abs(G)).reshape(16, out_channels, c)
    M = np.matmul(U, V).reshape(4, 4, out_channels, n, th, tw)
    Y = np.einsum("pa,abonyx,qb->noypxq", abs(A_T), M, abs(A_T)).reshape(
        n, out_channels, 2 * th, 2 * tw
    )[:, :, : out_size[0], : out_size[1]]
    if bias is not None:
        Y = Y + np.abs(bias.astype(float))[:, None, None]
    return (gamma(c + 11, np.float32) + gamma(9 * c + 1, np.float64)) * Y


def gamma(n, dtype):
    """γ_n = n·u / (1 - n·u), u the unit roundoff of dtype: the bound on |Π (1 + δ_i) - 1|
    for n roundings."""
    u = np.finfo(dtype).eps / 2
    return n * u / (1 - n * u)


def check_error(x, w, b):
    """The float32 Winograd output's error against the exact convolution, within bound (1); returns
    (max error / bound, Winograd's max error / im2col's)."""
    exact = F.conv2d(x.astype(float), w.astype(float), b.astype(float), padding=1).data
    got = winograd_conv2d(x, w, b)
    error = np.abs(got - exact)
    bound = error_bound(x, w, b)
    if not np.all(error <= bound):
        raise AssertionError("Winograd's float32 error exceeds its bound (1)")
    direct = np.abs(F.conv2d(x, w, b, padding=1).data - exact)
    return (error / bound).max(), error.max() / direct.max()


def main():
    rng = np.random.default_rng(0)
    print(
        f"{ARGS.threads} threads, median of {ARGS.repeat}, float32, forward under no_grad; "
        f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    header = (
        f"{'layer':<6} {'C_in->C_out @ side':<19} {'im2col ms':>10} {'winograd ms':>12} "
        f"{'ratio':>6} {'err/bound':>10} {'err/im2col':>10}"
    )
    for batch in ARGS.batches:
        print(f"\nbatch {batch} (ratio = winograd / im2col; < 1: Winograd faster)")
        print(header)
        print("-" * len(header))
        totals = np.zeros(2)
        for name, cin, cout, side in LAYERS:
            x = layout.empty_nchw(batch, cin, side, side, np.float32)  # as the network's
            x[...] = rng.standard_normal(x.shape, dtype=np.float32)
            w = rng.standard_normal((cout, cin, 3, 3), dtype=np.float32) * (9 * cin) ** -0.5
            b = rng.standard_normal(cout, dtype=np.float32)
            tx, tw, tb = tinynet.tensor(x), tinynet.tensor(w), tinynet.tensor(b)

            def im2col_path():
                with tinynet.no_grad():
                    F.conv2d(tx, tw, tb, padding=1)

            def winograd_path():
                winograd_conv2d(x, w, b)

            of_bound, of_direct = check_error(x, w, b)  # also the warm-up (numba compiles)
            times = ([], [])
            for _ in range(ARGS.repeat):
                for path, record in zip((im2col_path, winograd_path), times):
                    start = time.perf_counter()
                    path()
                    record.append(time.perf_counter() - start)
            im2col_ms, winograd_ms = (1e3 * statistics.median(t) for t in times)
            totals += (im2col_ms, winograd_ms)
            print(
                f"{name:<6} {f'{cin}->{cout} @ {side}':<19} {im2col_ms:10.2f} {winograd_ms:12.2f} "
                f"{winograd_ms / im2col_ms:6.2f} {of_bound:10.2g} {of_direct:10.2f}"
            )
        print("-" * len(header))
        print(f"{'total':<26} {totals[0]:10.2f} {totals[1]:12.2f} {totals[1] / totals[0]:6.2f}")
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
