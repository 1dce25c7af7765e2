"""Winograd's F(2x2, 3x3) convolution (Lavin & Gray 2015) for inference: a 3x3 convolution with
stride 1 and padding 1 in 2.25 times fewer multiply-adds than im2col + one GEMM.

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
(n, ty, tx) covers output rows 2ty, 2ty+1 and columns 2tx, 2tx+1 of image n and reads padded
input rows 2ty .. 2ty+3 and columns 2tx .. 2tx+3 (zeros past the image); the outputs of a partial
last tile that fall past the output are dropped. The transforms are the numba kernels of
``tinynet/kernels/winograd.py``; U depends on the weight alone and is made once
(``filter_transform``).

How it runs (``winograd_conv3x3``). The tiles are cut into chunks of whole rows of tiles, about
``CHUNK_BYTES`` of V and M each, and each of the process's threads takes its share of the chunks
and runs, for each, input transform, 16 GEMMs, output transform (with the bias and the ReLU) in a
row, while that chunk's V and M are in its cache; OpenBLAS runs at 1 thread meanwhile. The first
version (issue 15) transformed all tiles, then made the 16 GEMMs with OpenBLAS's 2 threads, then
transformed back: each of the 16 calls woke OpenBLAS's sleeping thread (~8 ms each while another
process held the second core), and V and M (100 MB for the 56x56 layer at batch 8) went through
memory twice. Chunks of 1, 2, 4, 8 and 16 MiB took 0.69, 0.64, 0.62, 0.72 and 0.75 of im2col's
time on GoogLeNet's ten layers at batch 8 (one interleaved run, 2 threads, on the VM that
``use_winograd`` names).

The float32 error bound. With u the unit roundoff (2⁻²⁴ in float32) and γ_n = n·u / (1 - n·u),
each term of the expansion of y[o, p, q] passes through at most C + 11 roundings: 4 in G g Gᵀ
(two additions per pass; the halvings are exact), 2 in Bᵀ d B, C in the length-C dot product of
the GEMM (in any order, FMA or not), 5 in Aᵀ m A plus the bias (two additions, then three); the
ReLU is exact. So, barring underflow,

    |ŷ - y| <= γ_{C+11} · (|b| + Σ_c |Aᵀ| [(|G| |g| |Gᵀ|) ⊙ (|Bᵀ| |d| |B|)] |A|)     (1)

(``error_bound``), against the direct convolution's γ_{9C+1} · (|b| + Σ |w| |x|). In 1-D the
magnitudes |Aᵀ| diag(|G| e_i) |Bᵀ| put total weight 4, 2, 2 on the three taps (for the first
output; 2, 2, 4 for the second) where the direct sum puts 1, so with S = Σ |w| · max |x| over
the output's window, the sum in (1) is at most |b| + 16 S and the direct one's at most |b| + S:
Winograd's worst case is at most 16 (C + 11) / (9C + 1) times the direct one's (under 2 for
C >= 88, 16/9 for large C). Measured on random data it is far below (1), and about as large as
im2col's own error (benchmarks/bench_winograd.py: err/bound 0.001-0.004, err/im2col 0.6-1.4).

Where it pays (``use_winograd``): see its docstring for the rule and the measurements.
F(4x4, 3x3) (6x6 tiles, 36 GEMMs, 4 times fewer multiply-adds than im2col) was tried in the same
chunks and not kept: on one thread it took 0.84-0.98 of F(2x2, 3x3)'s time on GoogLeNet's 28x28
and 56x56 layers, 0.71-1.43 at 14x14 and 1.45-1.58 at 7x7 (batch 1; fastest of 7 runs on the
loaded VM), with ten times the error (largest difference from im2col 2.5-4.5e-5 against
F(2x2, 3x3)'s 1.9-3.3e-6).
"""

from __future__ import annotations

import numbers
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from tinynet.kernels import KERNEL_DTYPES
from tinynet.kernels import winograd as kernels
from tinynet.ops.conv import conv_padding

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)

# Each thread's V and M for one chunk of rows of tiles: small enough to stay in cache between
# the transforms and the GEMMs, large enough that each of the 16 GEMMs is not all overhead.
CHUNK_BYTES = 4 * 2**20
# A call takes one more thread per this many multiply-adds of the direct convolution
# (9·C·O·N·H·W): handing chunks to a second thread cost ~0.1 ms on the loaded 2-core VM, which
# made layers of 4-15 million multiply-adds 1.2-1.7x slower on 2 threads than on one, and those
# of 23-35 million 0.95-0.98x.
LANE_MACS = 2**24


def filter_transform(weight: np.ndarray, stride=1, padding=1) -> np.ndarray:
    """U (16, O, C) = G g Gᵀ for each 3x3 filter g of weight (O, C, 3, 3), in weight's dtype
    (float32 or float64); U[4ξ + ν] is the (O, C) matrix of the ξν-th GEMM.

    stride and padding are the convolution's (an int, a pair, or 'same' for padding, as
    ``conv2d`` takes them): F(2x2, 3x3) here is stride 1, padding 1 and nothing else.
    """
    if not isinstance(weight, np.ndarray) or weight.ndim != 4 or weight.shape[2:] != (3, 3):
        got = weight.shape if isinstance(weight, np.ndarray) else type(weight).__name__
        raise ValueError(f"winograd: weight must be an (O, C, 3, 3) array; got {got}")
    if weight.dtype not in KERNEL_DTYPES:
        raise TypeError(f"winograd: weight must be float32 or float64; got {weight.dtype}")
    if min(weight.shape[:2]) < 1:
        raise ValueError(f"winograd: weight has no filters; got shape {weight.shape}")
    given = stride
    if isinstance(stride, numbers.Integral):
        stride = (stride, stride)
    if tuple(stride) != (1, 1):
        raise ValueError(f"winograd: F(2x2, 3x3) needs stride 1; got stride={given!r}")
    if conv_padding(padding, (3, 3), (1, 1)) != ((1, 1), (1, 1)):
        raise ValueError(f"winograd: F(2x2, 3x3) needs padding 1; got padding={padding!r}")
    U = np.empty((16,) + weight.shape[:2], dtype=weight.dtype)
    return kernels.filter_transform(np.ascontiguousarray(weight), U)


def scratch_size(in_channels: int, out_channels: int, height: int, width: int, batch: int,
                 threads: int = 1) -> int:  # fmt: skip
    """The elements of a ``scratch`` that lets ``winograd_conv3x3`` run on ``threads`` threads
    without allocating: each thread's V and M for one chunk."""
    return threads * _thread_elements(in_channels, out_channels, height, width, batch)


def winograd_conv3x3(x, U, bias, relu: bool, out, scratch=None):
    """out = act(conv3x3(x, W) + bias), stride 1, padding 1, by F(2x2, 3x3), with U =
    ``filter_transform(W)`` and act the ReLU if relu, else the identity.

    x (C, N, H, W) C-contiguous (channel-major: ``tinynet.ops.layout.channel_major``); U (16, O, C);
    bias (O,) or None; out (O, N·H·W) C-contiguous, the output's channel rows (it may be rows of
    a larger buffer, such as an Inception block's concatenation: nothing else is written), all of
    x's dtype. scratch: a 1-D array of that dtype with at least ``scratch_size(...)`` elements
    for the threads the call is to use (it uses as many as the scratch holds, at most numba's
    thread count), or None to allocate. Returns out.
    """
    channels, batch, height, width = _check(x, U, bias, out)
    per_thread = _thread_elements(channels, U.shape[1], height, width, batch)
    if scratch is None:
        scratch = np.empty(numba.get_num_threads() * per_thread, dtype=x.dtype)
    elif not (
        isinstance(scratch, np.ndarray) and scratch.dtype == x.dtype and scratch.ndim == 1
        and scratch.flags.c_contiguous and scratch.size >= per_thread
    ):  # fmt: skip
        raise ValueError(
            f"winograd: scratch must be a contiguous 1-D {x.dtype} array of at least "
            f"{per_thread} elements (scratch_size for one thread); got "
            f"{getattr(scratch, 'dtype', type(scratch).__name__)} "
            f"{getattr(scratch, 'shape', '')}"
        )
    return winograd_conv3x3_unchecked(x, U, bias, relu, out, scratch)


def winograd_conv3x3_unchecked(x, U, bias, relu: bool, out, scratch):
    """``winograd_conv3x3`` with a scratch and no argument checks, for a caller that made its
    arguments right once (the inference plan, at planning): given a wrong shape, the kernels
    read and write past the arrays."""
    channels, batch, height, width = x.shape
    out_channels = U.shape[1]
    per_thread = _thread_elements(channels, out_channels, height, width, batch)
    threads = numba.get_num_threads()
    macs = 9 * channels * out_channels * batch * height * width
    threads = max(1, min(threads, scratch.size // per_thread, macs // LANE_MACS))
    chunk = _chunk_rows(channels, out_channels, height, width, batch, threads)
    tile_columns = (width + 1) // 2
    rows = batch * ((height + 1) // 2)
    b = np.zeros(out_channels, dtype=x.dtype) if bias is None else bias

    def run(lane: int) -> None:
        buffer = scratch[lane * per_thread : (lane + 1) * per_thread]
        for first in range(lane * chunk, rows, threads * chunk):
            tiles = min(chunk, rows - first) * tile_columns
            V = _stack(buffer, channels, tiles)
            M = _stack(buffer[16 * V.strides[0] // x.itemsize :], out_channels, tiles)
            kernels.input_transform(x, first, V)
            np.matmul(U, V, out=M)
            kernels.output_transform(M, b, relu, first, height, width, out)

    # The BLAS runs at 1 thread even when the call does: woken for each small GEMM, its other
    # threads cost more than they bring (issue 15's 16 calls of ~8 ms under load).
    with _lock, _one_blas_thread():
        futures = [_pool(threads - 1).submit(run, lane) for lane in range(1, threads)]
        run(0)
        for future in futures:
            future.result()
    return out


def error_bound(x, weight, bias=None, dtype=None) -> np.ndarray:
    """Bound (1) of the module docstring on |ŷ - y| per output, as out's (O, N·H·W): y the exact
    convolution of x (C, N, H, W) (channel-major, as ``winograd_conv3x3`` takes it), weight
    (O, C, 3, 3) and bias (O,) or None, ŷ ``winograd_conv3x3``'s result computed in dtype
    (default: x's). Divided by γ_{C+11} it is the sum in (1), which also bounds the direct
    convolution's Σ |w| |x| (an exact reference's own rounding can be added from it)."""
    channels, batch, height, width = x.shape
    out_channels = len(weight)
    th, tw = (height + 1) // 2, (width + 1) // 2
    padded = np.zeros((channels, batch, 2 * th + 2, 2 * tw + 2))
    padded[:, :, 1 : height + 1, 1 : width + 1] = np.abs(x)
    d = np.lib.stride_tricks.sliding_window_view(padded, (4, 4), axis=(2, 3))[:, :, ::2, ::2]
    V = np.einsum("ak,cnyxkl,bl->abcnyx", abs(B_T), d, abs(B_T)).reshape(16, channels, -1)
    U = np.einsum("ai,ocij,bj->aboc", abs(G), np.abs(weight).astype(float), abs(G))
    M = np.matmul(U.reshape(16, out_channels, channels), V).reshape(
        4, 4, out_channels, batch, th, tw
    )
    Y = np.einsum("pa,abonyx,qb->onypxq", abs(A_T), M, abs(A_T))
    Y = Y.reshape(out_channels, batch, 2 * th, 2 * tw)[:, :, :height, :width]
    if bias is not None:
        Y = Y + np.abs(bias).astype(float)[:, None, None, None]
    return gamma(channels + 11, dtype or x.dtype) * Y.reshape(out_channels, -1)


def gamma(n: int, dtype) -> float:
    """γ_n = n·u / (1 - n·u), u the unit roundoff of dtype: the bound on |Π (1 + δ_i) - 1|
    for n roundings."""
    u = np.finfo(dtype).eps / 2
    return n * u / (1 - n * u)


def use_winograd(in_channels: int, out_channels: int, height: int, width: int, batch: int) -> bool:
    """Whether ``winograd_conv3x3`` measured faster than im2col + one GEMM + the bias and ReLU
    epilogue (each as the inference plan runs them, buffers made beforehand) for a stride-1,
    padding-1 3x3 convolution of this size in float32:

    - at least 32 channels in and out: the transforms cost (C + O) per tile, the GEMMs save in
      proportion to C·O; with 3 input channels Winograd took 1.7-3.0x im2col's time, with 8-24
      0.78-1.18x, with 16 0.84-0.97x;
    - at least 2²² multiply-adds (9·C·O·N·H·W): below, the fixed costs of 16 GEMM calls per
      chunk dominate (32 -> 64 channels at 7x7, batch 1, 0.9 million: 1.09x);
    - partial last tiles computing at most 1.5 times the outputs kept (a 7x7 output computes
      64 for 49, 5x5 36 for 25: 0.71-0.79x; 3x3 16 for 9: 0.92x; 1x1 4 for 1: 1.06x);
    - at least 48 tiles (N·⌈H/2⌉·⌈W/2⌉, the columns of each of the 16 GEMMs): GoogLeNet's 7x7
      layers (160 -> 320, 192 -> 384) at batch 1, 16 tiles, took 1.6-1.9x im2col's time with
      2 threads and 1.11-1.16x with one; at batch 2 (32 tiles) 1.23-1.32x, at batch 4 (64)
      1.04x, at batch 8 (128) 0.83-0.87x; the 14x14 layers at batch 1 (49 tiles) 0.85-0.94x
      (interleaved, 2 threads, the plan's steps in the whole network, quiet machine,
      2026-12-07).

    Measured on a 2-core AMD EPYC VM, AVX2, OpenBLAS 0.3.31 (Haswell kernel), 2026-12-07, on the
    paper GoogLeNet's ten layers at batch 1 and 8 and 41 other shapes (C, O 3-448, sides 1-56,
    batches 1-256), the two paths alternating, 7 runs each. Other runs held the machine (load
    average 3-5 on its 2 cores), so the rule is drawn from one thread per path, where medians
    and minima agreed within 5% (but for two shapes): every shape that passes it took 0.56-0.79
    of im2col's time there (GoogLeNet's: 0.57-0.69, 0.71-0.77 at 7x7), those it refuses
    0.78-3.0. With the default 2 threads the load decided: over the same layers Winograd / im2col
    ranged from 0.04 to 4.3 in three runs, im2col's GEMM (whose two OpenBLAS threads wait on each
    other) taking up to 30x its one-thread time whenever the other core was taken, Winograd's
    chunks (which meet only at the end) up to 7x. Both spread the same work over the cores, so
    the one-thread ratios are the rule; benchmarks/bench_winograd.py gives the GoogLeNet table
    on a quiet machine.
    """
    tiles = ((height + 1) // 2) * ((width + 1) // 2)
    macs = 9 * in_channels * out_channels * batch * height * width
    return (
        min(in_channels, out_channels) >= 32
        and macs >= 2**22
        and 2 * 4 * tiles <= 3 * height * width
        and batch * tiles >= 48
    )


def _check(x, U, bias, out) -> tuple[int, int, int, int]:
    """x's (C, N, H, W), after checking every argument of ``winograd_conv3x3``: a kernel given
    the wrong shape would read and write past the arrays."""
    if not isinstance(x, np.ndarray) or x.ndim != 4 or not x.flags.c_contiguous:
        raise ValueError(
            f"winograd: x must be a C-contiguous (C, N, H, W) array (channel-major); got "
            f"{_describe(x)}"
        )
    if x.dtype not in KERNEL_DTYPES:
        raise TypeError(f"winograd: x must be float32 or float64; got {x.dtype}")
    channels, batch, height, width = x.shape
    if min(x.shape) < 1:
        raise ValueError(f"winograd: x must not be empty; got shape {x.shape}")
    if not isinstance(U, np.ndarray) or U.shape[::2] != (16, channels) or U.ndim != 3:
        raise ValueError(
            f"winograd: U must be filter_transform(weight), (16, O, {channels}) for x's "
            f"{channels} channels; got {_describe(U)}"
        )
    out_channels = U.shape[1]
    expected = (out_channels, batch * height * width)
    if not isinstance(out, np.ndarray) or out.shape != expected or not out.flags.c_contiguous:
        raise ValueError(
            f"winograd: out must be a C-contiguous {expected} array (O, N·H·W); got "
            f"{_describe(out)}"
        )
    if bias is not None and (not isinstance(bias, np.ndarray) or bias.shape != (out_channels,)):
        raise ValueError(f"winograd: bias must be ({out_channels},) or None; got {_describe(bias)}")
    for name, array in (("U", U), ("out", out), ("bias", bias)):
        if array is not None and array.dtype != x.dtype:
            raise TypeError(f"winograd: {name} must be {x.dtype} like x; got {array.dtype}")
    if not U.flags.c_contiguous:
        raise ValueError("winograd: U must be C-contiguous, as filter_transform makes it")
    return channels, batch, height, width


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        order = "C-contiguous" if a.flags.c_contiguous else "not C-contiguous"
        return f"{a.dtype} array of shape {a.shape} ({order})"
    return type(a).__name__


def _chunk_rows(in_channels, out_channels, height, width, batch, threads) -> int:
    """Rows of tiles per chunk: about CHUNK_BYTES (float32) of V and M, in a number of chunks
    that the threads share evenly. Never more than for one thread (the scratch's size)."""
    rows = batch * ((height + 1) // 2)
    row_bytes = 4 * 16 * (in_channels + out_channels) * ((width + 1) // 2)
    chunks = -(-rows * row_bytes // CHUNK_BYTES)
    chunks = min(rows, -(-chunks // threads) * threads)
    return -(-rows // chunks)


def _thread_elements(in_channels, out_channels, height, width, batch) -> int:
    """The elements of one thread's V and M (``_stack``) for the largest chunk."""
    tiles = _chunk_rows(in_channels, out_channels, height, width, batch, 1) * ((width + 1) // 2)
    return 16 * ((in_channels + out_channels) * tiles + 2 * 32)


def _stack(buffer: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """A (16, rows, columns) array at the start of buffer, each (rows, columns) matrix
    C-contiguous, the matrices an odd number of 64-byte lines apart (at most 32 elements more
    than rows·columns). The output transform reads, and the input transform writes, the 16 at
    once: at a multiple of 4 KiB apart they fell in the same cache sets (a 32x32 image has
    16 tiles a row, and O·16·4 bytes is 4 KiB for O = 64), which made such layers (32x32 and
    16x16, 16-64 channels) 1.2-1.7x slower."""
    line = 64 // buffer.itemsize
    lines = -(-rows * columns // line)
    stride = (lines + 1 - lines % 2) * line
    return buffer[: 16 * stride].reshape(16, stride)[:, : rows * columns].reshape(16, rows, columns)


# One threaded call at a time: each sets the BLAS to 1 thread and back, and two interleaved
# would leave it at 1.
_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_workers = 0
_blas = None


def _pool(workers: int) -> ThreadPoolExecutor:
    """The threads beside the caller's that run chunks: made at the first call that needs them
    (importing tinynet starts no thread), remade larger if the process's thread count grew."""
    global _executor, _executor_workers
    if _executor is None or _executor_workers < workers:
        if _executor is not None:
            _executor.shutdown(wait=False)
        _executor = ThreadPoolExecutor(workers, thread_name_prefix="tinynet-winograd")
        _executor_workers = workers
    return _executor


def _one_blas_thread():
    """A context in which every loaded BLAS runs at 1 thread (the chunks run in parallel
    instead), back to its size after."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas")
    return _blas.limit(limits=1)
