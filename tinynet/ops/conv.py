"""2-D convolution (cross-correlation, as in PyTorch) as im2col followed by one GEMM.

    y[n, o, p, q] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x_pad[n, c, p·sh + i, q·sw + j]

The im2col matrix ``cols`` (C·kh·kw, N·OH·OW) holds in each column the input window one output
pixel sees (``tinynet.kernels.im2col``), so with W as a (O, C·kh·kw) matrix the whole batch is
``W @ cols``, whose (O, N·OH·OW) rows are the channel-major output (``tinynet.ops.layout``).
"""

from __future__ import annotations

import numpy as np

from tinynet.function import Function
from tinynet.kernels.activation import add_bias
from tinynet.kernels.im2col import col2im, im2col
from tinynet.ops import layout
from tinynet.ops._args import check_float, check_ndim, pair
from tinynet.tensor import Tensor, as_tensor

# A column matrix larger than this is built and multiplied a few images at a time, in one
# reused buffer: a training step then never holds the 231 MB column matrix of the 3x3 stem conv
# (batch 32) nor its gradient, and the GEMMs stay large (the 3x3 stem conv's still has
# 192 x 576 x 12544 per chunk at 224x224).
CHUNK_BYTES = 32 * 2**20


class Conv2dFunction(Function):
    """y = conv(x, W) + b, x (N, C, H, W), W (O, C, kh, kw), b (O,)  ->  y (N, O, OH, OW).

    As matrices, with cols = im2col(x) (C·kh·kw, N·OH·OW) and W as (O, C·kh·kw):
        Y = W · cols + b                       (O, N·OH·OW)
    so with dY the (O, N·OH·OW) gradient rows, the backward is that of a matrix product:
        dL/dW = dY · colsᵀ                     reshaped to (O, C, kh, kw)
        dL/db = Σ_columns dY
        dL/dx = col2im(Wᵀ · dY)                each window's gradient added back where read
    ``ImageColumns`` computes the three products with cols without ever holding it whole.
    stride (sh, sw); padding ((top, bottom), (left, right)).
    Reference twin: ``tinynet.reference.conv2d``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        W = weight.reshape(len(weight), -1)
        cols = ImageColumns(x, weight.shape[2:], stride, padding)
        Y = cols.left_product(W)  # Y = W · cols
        if bias is not None:
            add_bias(Y, bias)  # Y += b
        # Save x, not cols: backward recomputes im2col, a memory-bound pass far cheaper than the
        # two backward GEMMs, so a training step never holds every layer's column matrix at once.
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return layout.from_channel_rows(Y, len(x), *cols.out_size)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        W = weight.reshape(len(weight), -1)
        cols = ImageColumns(x, weight.shape[2:], ctx.stride, ctx.padding)
        dY = layout.channel_rows(grad)
        need_x, need_w, need_b = ctx.needs_input_grad
        dW = cols.right_product(dY).reshape(weight.shape) if need_w else None  # dW = dY · colsᵀ
        dX = cols.col2im_product(W.T, dY) if need_x else None  # dX = col2im(Wᵀ · dY)
        db = dY.sum(axis=1) if need_b else None  # db = Σ_columns dY
        return dX, dW, db


class ImageColumns:
    """cols = im2col(x), the (C·kh·kw, N·OH·OW) column matrix of ``Conv2dFunction``, and the three
    products it is used in, computed without holding it whole (speed only; the math is the op's).

    Columns are grouped by image, so each product splits into image chunks (``image_chunks``) whose
    columns are built, one chunk at a time, in one reused scratch buffer: W · cols and
    col2im(Wᵀ · dY) chunk by chunk, dY · colsᵀ as the sum of the chunks' products. A pointwise
    conv (1x1, stride 1, no padding) needs no im2col: its cols are x's channel rows
    (``tinynet.ops.layout``), a view when x is channel-major.
    Reference twin: ``tinynet.reference.conv2d``.
    """

    def __init__(self, x: np.ndarray, kernel, stride, padding):
        n, c, h, w = x.shape
        self.x, self.kernel, self.stride, self.padding = x, tuple(kernel), stride, padding
        self.out_size = (
            (h + sum(padding[0]) - self.kernel[0]) // stride[0] + 1,
            (w + sum(padding[1]) - self.kernel[1]) // stride[1] + 1,
        )
        self.patch_size = c * self.kernel[0] * self.kernel[1]  # C·kh·kw: the rows of cols
        self.pixels = self.out_size[0] * self.out_size[1]  # columns per image
        self.pointwise = pointwise(self.kernel, stride, padding)
        self.chunks = image_chunks(n, self.patch_size, self.pixels, x.itemsize)
        self._scratch = None

    def left_product(self, W: np.ndarray) -> np.ndarray:
        """W · cols (O, N·OH·OW) for W (O, C·kh·kw)."""
        if self.pointwise:
            return W @ layout.channel_rows(self.x)
        out = np.empty((len(W), len(self.x) * self.pixels), dtype=self.x.dtype)
        for columns, cols in self._column_chunks():
            np.matmul(W, cols, out=out[:, columns])
        return out

    def right_product(self, G: np.ndarray) -> np.ndarray:
        """G · colsᵀ (O, C·kh·kw) for G (O, N·OH·OW), computed as (cols · Gᵀ)ᵀ: the same sums,
        but OpenBLAS runs it faster when O is small (the small GoogLeNet's 3x3 conv, O = 48,
        C·kh·kw = 144, 65,536 columns: 9.3 -> 6.7 ms; O = 16, 480 rows: 5.4 -> 3.2 ms) and
        within 3% either way for GoogLeNet's O = 192-832."""
        if self.pointwise:
            return (layout.channel_rows(self.x) @ G.T).T
        total = None
        for columns, cols in self._column_chunks():
            part = cols @ G[:, columns].T
            total = part if total is None else np.add(total, part, out=total)
        return total.T

    def col2im_product(self, Wt: np.ndarray, G: np.ndarray) -> np.ndarray:
        """col2im(Wt · G) as x's (N, C, H, W) for Wt (C·kh·kw, O) and G (O, N·OH·OW)."""
        n, c, h, w = self.x.shape
        if self.pointwise:
            return layout.from_channel_rows(Wt @ G, n, h, w)
        grad_source = np.zeros((c, n, h, w), dtype=G.dtype)
        for n0, n1 in self.chunks:
            g_chunk = G[:, n0 * self.pixels : n1 * self.pixels]
            grad_cols = np.matmul(Wt, g_chunk, out=self._matrix(g_chunk.shape[1]))
            col2im(
                grad_cols, self.kernel, self.stride, self._pad, self.out_size, grad_source[:, n0:n1]
            )
        return layout.from_channel_rows(grad_source.reshape(c, -1), n, h, w)

    @property
    def _pad(self) -> tuple[int, int]:
        """(top, left): the padding im2col and col2im take (the far sides follow from out_size)."""
        (top, _), (left, _) = self.padding
        return top, left

    def _column_chunks(self):
        """(slice of columns, cols of those columns) per chunk of images, each in the scratch."""
        source = layout.channel_major(self.x)
        for n0, n1 in self.chunks:
            cols = self._matrix((n1 - n0) * self.pixels)
            im2col(source[:, n0:n1], self.kernel, self.stride, self._pad, self.out_size, cols)
            yield slice(n0 * self.pixels, n1 * self.pixels), cols

    def _matrix(self, columns: int) -> np.ndarray:
        """A C-contiguous (C·kh·kw, columns) matrix at the start of the one scratch buffer, which
        holds the largest chunk: its contents last until the next call."""
        if self._scratch is None:
            n0, n1 = self.chunks[0]
            self._scratch = np.empty(self.patch_size * (n1 - n0) * self.pixels, dtype=self.x.dtype)
        return self._scratch[: self.patch_size * columns].reshape(self.patch_size, columns)


def pointwise(kernel, stride, padding) -> bool:
    """Whether a convolution is pointwise (1x1, stride 1, no padding): its cols are x's channel
    rows, no im2col needed. kernel and stride pairs, padding ((top, bottom), (left, right))."""
    return tuple(kernel) == (1, 1) and stride == (1, 1) and padding == ((0, 0), (0, 0))


def image_chunks(batch: int, patch_size: int, pixels: int, itemsize: int) -> list[tuple[int, int]]:
    """[n0, n1) image ranges whose (patch_size, (n1 - n0)·pixels) column matrix fits
    CHUNK_BYTES."""
    step = max(1, min(batch, CHUNK_BYTES // max(1, patch_size * pixels * itemsize)))
    return [(n0, min(n0 + step, batch)) for n0 in range(0, batch, step)]


def conv_padding(padding, kernel, stride) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch's padding argument as ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ValueError(
                f"conv2d: padding must be an int, a pair of ints, 'same' or 'valid'; "
                f"got {padding!r}"
            )
        if stride != (1, 1):
            raise ValueError(
                f"conv2d: padding='same' needs stride 1 (as in PyTorch); got stride={stride}"
            )
        # Total k - 1 keeps the size; for an even kernel PyTorch puts the extra row/column last.
        return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel)
    ph, pw = pair(padding, "padding", "conv2d", minimum=0)
    return (ph, ph), (pw, pw)


def conv2d(input, weight, bias=None, stride=1, padding=0) -> Tensor:
    """2-D convolution with PyTorch's semantics (``torch.nn.functional.conv2d``, groups=1).

    input  (N, C_in, H, W);  weight (C_out, C_in, kH, kW);  bias (C_out,) or None
    stride:  an int or a pair (sH, sW), each >= 1
    padding: an int or a pair (padH, padW) of zeros added on both sides; 'valid' (none); or
             'same' (stride 1 only: the output keeps H and W, the odd extra row/column of an
             even kernel going to the bottom/right)
    Returns (N, C_out, OH, OW) with OH = (H + pad_top + pad_bottom - kH) // sH + 1 (OW alike),
    in the input's dtype.
    """
    x, weight = as_tensor(input), as_tensor(weight)
    check_ndim(x.shape, (4,), "input", "conv2d", "(N, C_in, H, W)")
    check_ndim(weight.shape, (4,), "weight", "conv2d", "(C_out, C_in, kH, kW)")
    out_channels, in_channels, kh, kw = weight.shape
    if x.shape[1] != in_channels:
        raise ValueError(
            f"conv2d: input has {x.shape[1]} channels (shape {x.shape}) but weight expects "
            f"C_in={in_channels} (weight shape {weight.shape})"
        )
    if min(out_channels, kh, kw) < 1:
        raise ValueError(
            f"conv2d: weight must have C_out, kH and kW >= 1; got weight shape {weight.shape}"
        )
    if bias is not None:
        bias = as_tensor(bias)
        if bias.shape != (out_channels,):
            raise ValueError(
                f"conv2d: bias must have shape ({out_channels},) to match weight "
                f"{weight.shape}; got {bias.shape}"
            )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(
                f"conv2d: input and {name} must have the same dtype; got input {x.dtype} "
                f"and {name} {t.dtype}"
            )
    check_float(x.dtype, "input", "conv2d", kernels_only=True)
    stride = pair(stride, "stride", "conv2d", minimum=1)
    pads = conv_padding(padding, (kh, kw), stride)
    padded = (x.shape[2] + sum(pads[0]), x.shape[3] + sum(pads[1]))
    if padded[0] < kh or padded[1] < kw:
        raise ValueError(
            f"conv2d: kernel size ({kh}, {kw}) of weight is larger than the padded input "
            f"{padded} (input {x.shape[2:]} with padding {padding!r})"
        )
    return Conv2dFunction.apply(x, weight, bias, stride=stride, padding=pads)
