"""How 4-D activations lie in memory.

Every 4-D tensor has PyTorch's logical shape (N, C, H, W). The ops that make 4-D outputs store
them channel-major: a C-contiguous (C, N, H, W) buffer seen through an NCHW view
(``buffer.transpose(1, 0, 2, 3)``). The reason is the convolution GEMM: with im2col columns
ordered (n, y, x), ``W (O, C·kh·kw) @ cols (C·kh·kw, N·OH·OW)`` is one GEMM for the whole batch
whose (O, N·OH·OW) result *is* the next layer's channel-major activation, so no transpose is
needed anywhere, a 1x1 convolution reads its input as a (C, N·H·W) matrix without copying, and
concatenating Inception branches along channels writes contiguous slabs.

Code that receives a 4-D array must not assume either order: these helpers give a view when
the memory is already channel-major and a copy otherwise.
"""

from __future__ import annotations

import numpy as np


def empty_nchw(n: int, c: int, h: int, w: int, dtype) -> np.ndarray:
    """An uninitialised (N, C, H, W) array with channel-major memory."""
    return np.empty((c, n, h, w), dtype=dtype).transpose(1, 0, 2, 3)


def channel_rows(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) as a C-contiguous (C, N·H·W) matrix: a view if x is channel-major."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(c, n * h * w)


def channel_major(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) as the C-contiguous (C, N, H, W) array the kernels take: a view if x is
    channel-major, a copy otherwise."""
    n, c, h, w = x.shape
    return channel_rows(x).reshape(c, n, h, w)


def from_channel_rows(rows: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
    """The inverse of ``channel_rows``: a (C, N·H·W) matrix as an (N, C, H, W) view."""
    return rows.reshape(rows.shape[0], n, h, w).transpose(1, 0, 2, 3)
