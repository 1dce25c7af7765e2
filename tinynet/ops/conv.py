"""2-D convolution (cross-correlation, as in PyTorch) as im2col followed by one GEMM.

    y[n, o, p, q] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x_pad[n, c, p·sh + i, q·sw + j]

The im2col matrix ``cols`` (C·kh·kw, N·OH·OW) holds in each column the input window one output
pixel sees (``tinynet.kernels.im2col``), so with W as a (O, C·kh·kw) matrix the whole batch is
``W @ cols``, whose (O, N·OH·OW) rows are the channel-major output (``tinynet.ops.layout``).
"""

from __future__ import annotations

import numpy as np

from tinynet.function import Function
from tinynet.kernels.im2col import col2im, im2col
from tinynet.ops import layout
from tinynet.ops._args import check_ndim, pair
from tinynet.tensor import Tensor


def _is_pointwise(kernel, stride, padding) -> bool:
    """A 1x1, stride-1, unpadded conv: the input's channel rows already are the columns."""
    return kernel == (1, 1) and stride == (1, 1) and padding == ((0, 0), (0, 0))


def _columns(x, kernel, stride, padding, out_size) -> np.ndarray:
    """The (C·kh·kw, N·OH·OW) column matrix of x (N, C, H, W)."""
    if _is_pointwise(kernel, stride, padding):
        return layout.channel_rows(x)
    n, c, _, _ = x.shape
    (top, _), (left, _) = padding
    cols = np.empty((c * kernel[0] * kernel[1], n * out_size[0] * out_size[1]), dtype=x.dtype)
    return im2col(layout.channel_major(x), kernel, stride, (top, left), out_size, cols)


def _columns_adjoint(grad_cols, shape, kernel, stride, padding, out_size) -> np.ndarray:
    """The transpose of ``_columns``: a (C·kh·kw, N·OH·OW) gradient as x's (C, N·H·W) rows."""
    if _is_pointwise(kernel, stride, padding):
        return grad_cols
    n, c, h, w = shape
    (top, _), (left, _) = padding
    grad_x = np.zeros((c, n, h, w), dtype=grad_cols.dtype)
    return col2im(grad_cols, kernel, stride, (top, left), out_size, grad_x).reshape(c, -1)


class Conv2d(Function):
    """y = conv(x, W) + b, x (N, C, H, W), W (O, C, kh, kw), b (O,)  ->  y (N, O, OH, OW).

    As matrices, with cols = im2col(x) (C·kh·kw, N·OH·OW) and W as (O, C·kh·kw):
        Y = W · cols + b                       (O, N·OH·OW)
    so with G the (O, N·OH·OW) gradient rows, the backward is that of a matrix product:
        dL/dW = G · colsᵀ                      reshaped to (O, C, kh, kw)
        dL/db = Σ_columns G
        dL/dx = col2im(Wᵀ · G)                 each window's gradient added back where read
    stride (sh, sw); padding ((top, bottom), (left, right)).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        n, _, h, w = x.shape
        out_channels, _, kh, kw = weight.shape
        oh = (h + sum(padding[0]) - kh) // stride[0] + 1
        ow = (w + sum(padding[1]) - kw) // stride[1] + 1
        cols = _columns(x, (kh, kw), stride, padding, (oh, ow))
        out = weight.reshape(out_channels, -1) @ cols
        if bias is not None:
            out += bias[:, None]
        # Save x, not cols: backward recomputes im2col, a memory-bound pass far cheaper than the
        # two backward GEMMs, so a training step never holds every layer's column matrix at once.
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return layout.from_channel_rows(out, n, oh, ow)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        n, _, h, w = x.shape
        out_channels, _, kh, kw = weight.shape
        kernel, out_size = (kh, kw), grad.shape[2:]
        g = layout.channel_rows(grad)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            cols = _columns(x, kernel, ctx.stride, ctx.padding, out_size)
            grad_w = (g @ cols.T).reshape(weight.shape)
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(axis=1)
        if ctx.needs_input_grad[0]:
            grad_cols = weight.reshape(out_channels, -1).T @ g
            rows = _columns_adjoint(grad_cols, x.shape, kernel, ctx.stride, ctx.padding, out_size)
            grad_x = layout.from_channel_rows(rows, n, h, w)
        return grad_x, grad_w, grad_b


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
