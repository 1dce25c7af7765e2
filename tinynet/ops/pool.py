"""Pooling over windows of each (n, c) plane: max, average and adaptive average, as PyTorch.

Sliding pools: along each spatial axis, output i covers the input positions
[i·stride - padding, i·stride - padding + kernel), and an axis of ``size`` gives

    out = floor((size + 2·padding - kernel + (stride - 1 if ceil_mode else 0)) / stride) + 1

outputs, one fewer under ceil_mode when the last window would start at or after
size + padding: every window starts inside the input or its left padding (PyTorch's rule).
Adaptive pooling instead splits an axis of ``size`` into ``out`` windows
[floor(i·size/out), ceil((i+1)·size/out)).

The ops turn these rules into per-axis window tables (start, end, divisor), clipped to the input;
the kernels in ``tinynet.kernels.pool`` loop over the tables and never see the padding.
"""

from __future__ import annotations

import numpy as np

from tinynet.function import Function
from tinynet.kernels import pool
from tinynet.ops import layout
from tinynet.ops._args import check_float, check_ndim, pair
from tinynet.tensor import Tensor, as_tensor


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """The number of windows of a sliding pool along one axis (the module docstring's formula)."""
    out = (size + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _sliding_windows(size, kernel, stride, padding, out, count_include_pad):
    """(start, end, divisor) of each sliding window along one axis, start and end clipped to the
    input; the divisor is the window's length clipped to the padded input if count_include_pad,
    else the number of input positions in it."""
    start = np.arange(out) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    padded_length = end - start
    start, end = np.maximum(start, 0), np.minimum(end, size)
    return start, end, padded_length if count_include_pad else end - start


def _adaptive_windows(size, out):
    """(start, end, length) of the adaptive windows [floor(i·size/out), ceil((i+1)·size/out))."""
    i = np.arange(out)
    start = i * size // out
    end = -(-(i + 1) * size // out)
    return start, end, end - start


class MaxPool2dFunction(Function):
    """y[n, c, i, j] = max of x[n, c] over window (i, j), the padding counting as -inf;
    dL/dx[n, c, a, b] = Σ g[n, c, i, j] over the windows (i, j) whose maximum is x[n, c, a, b].

    The forward records each window's winner as PyTorch's CPU kernel picks it (scanning the
    window row by row, the first of equal maxima, or the last NaN), and only when a gradient
    will be asked for, as its offset in the window; ``kernels.pool.max_pool2d`` picks the kernel.
    y_windows, x_windows: (start, end) window tables, down and across (``_sliding_windows``);
    kernel, stride: (h, w).
    Reference twin: ``tinynet.reference.max_pool2d``.
    """

    @staticmethod
    def forward(ctx, x, y_windows, x_windows, kernel, stride):
        y = layout.empty_nchw(len(x), x.shape[1], len(y_windows[0]), len(x_windows[0]), x.dtype)
        # y = the max of each window, and where it was found
        ctx.argmax = pool.max_pool2d(
            layout.channel_major(x),
            layout.channel_major(y),
            y_windows,
            x_windows,
            kernel,
            stride,
            with_argmax=ctx.needs_input_grad[0],
        )
        ctx.shape, ctx.dtype = x.shape, x.dtype
        ctx.y_windows, ctx.x_windows, ctx.kernel_width = y_windows, x_windows, kernel[1]
        return y

    @staticmethod
    def backward(ctx, grad):
        grad_x = layout.empty_nchw(*ctx.shape, ctx.dtype)
        # dL/dx = each window's gradient added to its winner, 0 elsewhere
        pool.max_pool2d_backward(
            layout.channel_major(grad),
            ctx.argmax,
            ctx.y_windows,
            ctx.x_windows,
            ctx.kernel_width,
            layout.channel_major(grad_x),
        )
        return grad_x


class AvgPool2dFunction(Function):
    """y[n, c, i, j] = (Σ of x[n, c] over window (i, j)) / d_ij;
    dL/dx[n, c, a, b] = Σ g[n, c, i, j] / d_ij over the windows (i, j) that hold (a, b).

    Zero padding adds nothing to a sum, so windows are clipped to the input; the divisor d_ij is
    the product of the per-axis divisors of ``_sliding_windows``.
    y_windows, x_windows: (start, end, divisor) window tables.
    Reference twin: ``tinynet.reference.avg_pool2d``.
    """

    @staticmethod
    def forward(ctx, x, y_windows, x_windows):
        y = layout.empty_nchw(len(x), x.shape[1], len(y_windows[0]), len(x_windows[0]), x.dtype)
        # y = the sum of each window over its divisor
        x_planes, y_planes = layout.channel_major(x), layout.channel_major(y)
        pool.avg_pool2d_forward(x_planes, y_planes, y_windows, x_windows)
        ctx.y_windows, ctx.x_windows, ctx.shape, ctx.dtype = y_windows, x_windows, x.shape, x.dtype
        return y

    @staticmethod
    def backward(ctx, grad):
        grad_x = layout.empty_nchw(*ctx.shape, ctx.dtype)
        # dL/dx = each window's gradient over its divisor, added to every element of the window
        pool.avg_pool2d_backward(
            layout.channel_major(grad), layout.channel_major(grad_x), ctx.y_windows, ctx.x_windows
        )
        return grad_x


class AdaptiveAvgPool2dFunction(AvgPool2dFunction):
    """The window mean of ``AvgPool2dFunction`` over the adaptive windows of
    ``_adaptive_windows``: window (i, j) covers [floor(i·H/OH), ceil((i+1)·H/OH)) x
    [floor(j·W/OW), ceil((j+1)·W/OW)) and d_ij is its number of elements.
    Reference twin: ``tinynet.reference.adaptive_avg_pool2d``."""


def _check_input(x, op: str) -> Tensor:
    x = as_tensor(x)
    check_ndim(x.shape, (4,), "input", op, "(N, C, H, W)")
    check_float(x.dtype, "input", op, kernels_only=True)
    if 0 in x.shape[1:]:
        raise ValueError(f"{op}: input must have non-zero C, H and W; got shape {x.shape}")
    return x


def sliding_window_tables(op, x, kernel_size, stride, padding, ceil_mode, count_include_pad=True):
    """Check a sliding pool's arguments and return its (y_windows, x_windows) window tables and its
    (kernel, stride) pairs."""
    kernel = pair(kernel_size, "kernel_size", op, minimum=1)
    stride = kernel if stride is None else pair(stride, "stride", op, minimum=1)
    padding = pair(padding, "padding", op, minimum=0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(
            f"{op}: padding must be at most half of kernel_size; got padding={padding} with "
            f"kernel_size={kernel}"
        )
    size = x.shape[2:]
    out = tuple(
        pool_output_size(*axis, bool(ceil_mode)) for axis in zip(size, kernel, stride, padding)
    )
    if min(out) <= 0:
        raise ValueError(
            f"{op}: input size (H, W) = {size} is too small for kernel_size={kernel} with "
            f"padding={padding} (stride={stride}): the output size would be {out}"
        )
    y_windows, x_windows = (
        _sliding_windows(*axis, count_include_pad)
        for axis in zip(size, kernel, stride, padding, out)
    )
    return y_windows, x_windows, kernel, stride


def max_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False) -> Tensor:
    """Max over kernel_size windows every stride (default kernel_size) of input (N, C, H, W)
    padded with -inf, as ``torch.nn.functional.max_pool2d`` (no dilation, no indices)."""
    input = _check_input(input, "max_pool2d")
    y_windows, x_windows, kernel, stride = sliding_window_tables(
        "max_pool2d", input, kernel_size, stride, padding, ceil_mode
    )
    return MaxPool2dFunction.apply(
        input, y_windows=y_windows[:2], x_windows=x_windows[:2], kernel=kernel, stride=stride
    )


def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
) -> Tensor:
    """Mean over kernel_size windows every stride (default kernel_size) of input (N, C, H, W)
    padded with zeros, as ``torch.nn.functional.avg_pool2d`` (no divisor_override): the
    divisor counts the padding if count_include_pad, else only the input elements."""
    input = _check_input(input, "avg_pool2d")
    y_windows, x_windows, _, _ = sliding_window_tables(
        "avg_pool2d", input, kernel_size, stride, padding, ceil_mode, bool(count_include_pad)
    )
    return AvgPool2dFunction.apply(input, y_windows=y_windows, x_windows=x_windows)


def adaptive_avg_pool2d(input, output_size) -> Tensor:
    """Mean over the windows that split input (N, C, H, W) into output_size (OH, OW) cells, as
    ``torch.nn.functional.adaptive_avg_pool2d``; output_size is an int or a pair whose None
    entries keep the input's size."""
    op = "adaptive_avg_pool2d"
    input = _check_input(input, op)
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(s if o is None else o for o, s in zip(output_size, input.shape[2:]))
    oh, ow = pair(output_size, "output_size", op, minimum=0)
    h, w = input.shape[2:]
    y_windows, x_windows = _adaptive_windows(h, oh), _adaptive_windows(w, ow)
    return AdaptiveAvgPool2dFunction.apply(input, y_windows=y_windows, x_windows=x_windows)
