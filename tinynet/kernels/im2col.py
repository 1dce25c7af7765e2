"""im2col and its adjoint col2im: a convolution as one matrix product.

For an input x of shape (C, N, H, W) (channel-major, C-contiguous), a kernel (kh, kw), a stride
(sh, sw) and padding (pad_top, pad_left) before the first row and column (the padding after the
last ones is whatever the output size (OH, OW) implies), the column matrix has shape
(C·kh·kw, N·OH·OW) and

    cols[(c·kh + i)·kw + j, (n·OH + p)·OW + q] = x[c, n, p·sh + i - pad_top, q·sw + j - pad_left]

with 0 where the index falls in the padding. Row r = (c, i, j) is one kernel tap of one input
channel: a shifted, strided copy of that channel's images; column (n, p, q) is one output pixel.
``W.reshape(O, C·kh·kw) @ cols`` is then the whole batch's convolution as a single GEMM, and its
(O, N·OH·OW) result is the channel-major output.

col2im is the transpose of that linear map: every column entry is added back to the input pixel it
was copied from, so pixels covered by several windows receive the sum.

Both kernels write into an array the caller allocates with NumPy, not numba: NumPy asks Linux for
transparent huge pages on large arrays and numba's allocator does not, and filling a fresh column
matrix in 4 KiB pages took about three times as long.
"""

from __future__ import annotations

from numba import njit, prange

from tinynet.kernels import parallel


@njit(cache=True, inline="always")
def _inside(offset, stride, size, count):
    """[first, last): the outputs q < count whose input position q·stride + offset is in
    [0, size)."""
    first = 0 if offset >= 0 else (-offset + stride - 1) // stride
    last = 0 if size - 1 - offset < 0 else min((size - 1 - offset) // stride + 1, count)
    return first, max(first, last)


@parallel
def im2col(x, kernel, stride, padding, out_size, cols):
    """Fill cols (C·kh·kw, N·OH·OW) from x (C, N, H, W) by the mapping in the module docstring.

    kernel (kh, kw), stride (sh, sw), padding (pad_top, pad_left), out_size (OH, OW).
    Each row is filled by one thread. Returns cols.
    """
    channels, batch, height, width = x.shape
    kh, kw = kernel
    sh, sw = stride
    pad_top, pad_left = padding
    oh, ow = out_size
    for r in prange(channels * kh * kw):
        c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        for n in range(batch):
            for p in range(oh):
                row = p * sh + i - pad_top
                start = (n * oh + p) * ow
                for q in range(ow):
                    col = q * sw + j - pad_left
                    inside = 0 <= row < height and 0 <= col < width
                    cols[r, start + q] = x[c, n, row, col] if inside else 0
    return cols


@parallel
def col2im(cols, kernel, stride, padding, out_size, x):
    """Add cols (C·kh·kw, N·OH·OW) back into x (C, N, H, W), the adjoint of ``im2col``:

        x[c, n, p·sh + i - pad_top, q·sw + j - pad_left]
            += cols[(c·kh + i)·kw + j, (n·OH + p)·OW + q]

    for every (i, j, p, q) that lands inside the image (pass x zero-filled to get col2im(cols)).
    One thread per input channel, so no two threads write the same element; the columns that
    land inside the image are worked out once per kernel tap, not tested per element. Returns x.
    """
    channels, batch, height, width = x.shape
    kh, kw = kernel
    sh, sw = stride
    pad_top, pad_left = padding
    oh, ow = out_size
    for c in prange(channels):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                first, last = _inside(j - pad_left, sw, width, ow)
                for n in range(batch):
                    for p in range(oh):
                        row = p * sh + i - pad_top
                        if row < 0 or row >= height:
                            continue
                        start = (n * oh + p) * ow
                        for q in range(first, last):
                            x[c, n, row, q * sw + j - pad_left] += cols[r, start + q]
    return x
