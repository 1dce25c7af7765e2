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
from tinynet.ops._args import check_ndim, pair
from tinynet.tensor import Tensor

# A column matrix larger than this is built and multiplied a few images at a time, in one
# reused buffer: a training step then never holds the 231 MB column matrix of the 3x3 stem conv
# (batch 32) nor its gradient, and the GEMMs stay large (the 3x3 stem conv's still has
# 192 x 576 x 12544 per chunk at 224x224).
CHUNK_BYTES = 32 * 2**20


def _is_pointwise(kernel, stride, padding) -> bool:
    """A 1x1, stride-1, unpadded conv: the input's channel rows already are the columns."""
    return kernel == (1, 1) and stride == (1, 1) and padding == ((0, 0), (0, 0))


def _chunks(batch: int, rows: int, pixels: int, itemsize: int) -> list[tuple[int, int]]:
    """[n0, n1) image ranges whose (rows, (n1 - n0)·pixels) column matrix fits CHUNK_BYTES."""
    step = max(1, min(batch, CHUNK_BYTES // max(1, rows * pixels * itemsize)))
    return [(n0, min(n0 + step, batch)) for n0 in range(0, batch, step)]


def _scratch(rows: int, columns: int, dtype) -> np.ndarray:
    """A flat buffer that ``_view`` cuts (rows, m) matrices from, for every m <= columns."""
    return np.empty(rows * columns, dtype=dtype)


def _view(scratch: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """A C-contiguous (rows, columns) matrix at the start of scratch."""
    return scratch[: rows * columns].reshape(rows, columns)


class Conv2d(Function):
    """y = conv(x, W) + b, x (N, C, H, W), W (O, C, kh, kw), b (O,)  ->  y (N, O, OH, OW).

    As matrices, with cols = im2col(x) (C·kh·kw, N·OH·OW) and W as (O, C·kh·kw):
        Y = W · cols + b                       (O, N·OH·OW)
    so with G the (O, N·OH·OW) gradient rows, the backward is that of a matrix product:
        dL/dW = G · colsᵀ                      reshaped to (O, C, kh, kw)
        dL/db = Σ_columns G
        dL/dx = col2im(Wᵀ · G)                 each window's gradient added back where read
    Columns are grouped by image, so each product splits into image chunks (``_chunks``): Y and
    dL/dx chunk by chunk, dL/dW as the sum of the chunks' products.
    stride (sh, sw); padding ((top, bottom), (left, right)).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        n, _, h, w = x.shape
        out_channels, _, kh, kw = weight.shape
        oh = (h + sum(padding[0]) - kh) // stride[0] + 1
        ow = (w + sum(padding[1]) - kw) // stride[1] + 1
        matrix = weight.reshape(out_channels, -1)
        if _is_pointwise((kh, kw), stride, padding):
            out = matrix @ layout.channel_rows(x)
        else:
            source, pixels = layout.channel_major(x), oh * ow
            chunks = _chunks(n, matrix.shape[1], pixels, x.itemsize)
            scratch = _scratch(matrix.shape[1], (chunks[0][1] - chunks[0][0]) * pixels, x.dtype)
            out = np.empty((out_channels, n * pixels), dtype=x.dtype)
            for n0, n1 in chunks:
                cols = _columns(source[:, n0:n1], (kh, kw), stride, padding, (oh, ow), scratch)
                np.matmul(matrix, cols, out=out[:, n0 * pixels : n1 * pixels])
        if bias is not None:
            add_bias(out, bias)
        # Save x, not cols: backward recomputes im2col, a memory-bound pass far cheaper than the
        # two backward GEMMs, so a training step never holds every layer's column matrix at once.
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return layout.from_channel_rows(out, n, oh, ow)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        out_channels, _, kh, kw = weight.shape
        kernel, out_size = (kh, kw), grad.shape[2:]
        matrix = weight.reshape(out_channels, -1)
        g = layout.channel_rows(grad)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(axis=1)
        if _is_pointwise(kernel, ctx.stride, ctx.padding):
            if need_w:
                grad_w = (g @ layout.channel_rows(x).T).reshape(weight.shape)
            if need_x:
                grad_x = layout.from_channel_rows(matrix.T @ g, n, h, w)
            return grad_x, grad_w, grad_b
        if not (need_x or need_w):
            return grad_x, grad_w, grad_b
        source, pixels = layout.channel_major(x), out_size[0] * out_size[1]
        chunks = _chunks(n, matrix.shape[1], pixels, x.itemsize)
        scratch = _scratch(matrix.shape[1], (chunks[0][1] - chunks[0][0]) * pixels, x.dtype)
        (top, _), (left, _) = ctx.padding
        if need_x:
            grad_source = np.zeros((c, n, h, w), dtype=grad.dtype)
        for n0, n1 in chunks:
            g_chunk = g[:, n0 * pixels : n1 * pixels]
            if need_w:
                cols = _columns(
                    source[:, n0:n1], kernel, ctx.stride, ctx.padding, out_size, scratch
                )
                part = g_chunk @ cols.T
                grad_w = part if grad_w is None else np.add(grad_w, part, out=grad_w)
            if need_x:
                # The same scratch: cols is no longer needed once its product is taken.
                grad_cols = np.matmul(
                    matrix.T, g_chunk, out=_view(scratch, matrix.shape[1], g_chunk.shape[1])
                )
                col2im(grad_cols, kernel, ctx.stride, (top, left), out_size, grad_source[:, n0:n1])
        if need_w:
            grad_w = grad_w.reshape(weight.shape)
        if need_x:
            grad_x = layout.from_channel_rows(grad_source.reshape(c, -1), n, h, w)
        return grad_x, grad_w, grad_b


def _columns(source, kernel, stride, padding, out_size, scratch) -> np.ndarray:
    """The (C·kh·kw, N·OH·OW) column matrix of source (C, N, H, W), in scratch."""
    c, n = source.shape[:2]
    (top, _), (left, _) = padding
    cols = _view(scratch, c * kernel[0] * kernel[1], n * out_size[0] * out_size[1])
    return im2col(source, kernel, stride, (top, left), out_size, cols)


def _padding(padding, kernel, stride) -> tuple[tuple[int, int], tuple[int, int]]:
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


def conv2d(input, weight, bias=None, stride=1, padding=0) -> Tensor:  # noqa: A002 - PyTorch's name
    """2-D convolution with PyTorch's semantics (``torch.nn.functional.conv2d``, groups=1).

    input  (N, C_in, H, W);  weight (C_out, C_in, kH, kW);  bias (C_out,) or None
    stride:  an int or a pair (sH, sW), each >= 1
    padding: an int or a pair (padH, padW) of zeros added on both sides; 'valid' (none); or
             'same' (stride 1 only: the output keeps H and W, the odd extra row/column of an
             even kernel going to the bottom/right)
    Returns (N, C_out, OH, OW) with OH = (H + pad_top + pad_bottom - kH) // sH + 1 (OW alike),
    in the input's dtype.
    """
    x = input if isinstance(input, Tensor) else Tensor(input)
    weight = weight if isinstance(weight, Tensor) else Tensor(weight)
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
        bias = bias if isinstance(bias, Tensor) else Tensor(bias)
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
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"conv2d: input must be float32 or float64; got {x.dtype}")
    stride = pair(stride, "stride", "conv2d", minimum=1)
    pads = _padding(padding, (kh, kw), stride)
    padded = (x.shape[2] + sum(pads[0]), x.shape[3] + sum(pads[1]))
    if padded[0] < kh or padded[1] < kw:
        raise ValueError(
            f"conv2d: kernel size ({kh}, {kw}) of weight is larger than the padded input "
            f"{padded} (input {x.shape[2:]} with padding {padding!r})"
        )
    return Conv2d.apply(x, weight, bias, stride=stride, padding=pads)
