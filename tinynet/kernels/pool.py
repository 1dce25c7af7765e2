"""Pooling kernels: max and mean over rectangular windows of each (c, n) plane.

Every array is a C-contiguous channel-major (C, N, H, W) buffer (``tinynet.ops.layout``); each
kernel sees it as C·N independent planes (H, W) and runs them in parallel (``prange``). Within a
plane a backward is sequential, so where windows overlap their gradients add without racing.

The windows come as tables, one per axis, computed by the op (``tinynet.ops.pool``): window
(i, j) covers input rows ``y_windows[0][i] <= y < y_windows[1][i]`` and columns
``x_windows[0][j] <= x < x_windows[1][j]``, already clipped to the input, so padding never
appears here. For the means, ``y_windows[2][i] * x_windows[2][j]`` is the window's divisor.
Average and adaptive average pooling differ only in these tables, so both use the two mean
kernels. Max pooling has a general
kernel and a faster one for Inception's 3x3/1 pad-1 pool; ``max_pool2d`` picks between them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinynet.kernels import parallel

PLANE_GROUPS = 256  # enough runs of planes to keep many cores evenly busy
# A max-pool forward costs about 16 ReLUs per element on small planes (with argmax, 8x8 planes:
# 3.5 ms for 524,288 elements on one core), so it gets the threads from 16,384 elements on.
MAX_POOL_COST = 16


def max_pool2d(x, out, y_windows, x_windows, kernel, stride, with_argmax: bool) -> np.ndarray:
    """out = the window maxima of x, by the kernel that fits the shape; returns argmax.

    x (C, N, H, W) and out (C, N, OH, OW); y_windows, x_windows: the window tables; kernel,
    stride: (h, w).
    A 3x3, stride-1 pool whose output keeps the input's size (padding 1: Inception's pool branch)
    runs the separable ``max_pool2d_3x3_same`` kernels, every other the general
    ``max_pool2d_forward``; both pick the same winner. With ``with_argmax``, argmax holds each
    window's winner as its offset in the window (int8 for kernels of up to 127 elements), as
    ``max_pool2d_backward`` takes it; otherwise it is empty and not computed.
    Reference twin: ``tinynet.reference.max_pool2d``.
    """
    if with_argmax:
        offset_type = np.int8 if kernel[0] * kernel[1] <= 127 else np.int32
        argmax = np.empty(out.shape, dtype=offset_type)
    else:
        argmax = np.empty((0, 0, 0, 0), dtype=np.int8)
    same_3x3 = kernel == (3, 3) and stride == (1, 1) and out.shape[2:] == x.shape[2:]
    if same_3x3 and argmax.size:
        max_pool2d_3x3_same_argmax(x, out, argmax)
    elif same_3x3:
        max_pool2d_3x3_same(x, out)
    else:
        max_pool2d_forward(x, out, argmax, y_windows, x_windows, kernel[1], stride[1])
    return argmax


@njit(cache=True)
def _planes(a):
    """A C-contiguous (C, N, H, W) array as a (C·N, H, W) view: one plane per (c, n)."""
    return a.reshape((a.shape[0] * a.shape[1], a.shape[2], a.shape[3]))


@njit(cache=True)
def _interior(starts, ends, kernel):
    """[first, last) of the windows that the input does not clip (length ``kernel``): clipping
    only happens at the two ends of an axis, so these are one run of consecutive windows."""
    first, last = len(starts), len(starts)
    for j in range(len(starts)):
        if ends[j] - starts[j] == kernel:
            if first == len(starts):
                first = j
            last = j + 1
    return first, last


@njit(cache=True, inline="always")
def _window_max(plane, top, bottom, left, right, kernel_width):
    """The winner of window [top, bottom) x [left, right) of plane (H, W), scanned row by row as
    PyTorch's CPU kernel does: (value, (y - top)·kernel_width + (x - left))."""
    best, where = plane[top, left], 0
    for y in range(top, bottom):
        for x_ in range(left, right):
            value = plane[y, x_]
            if value > best or np.isnan(value):
                best, where = value, (y - top) * kernel_width + (x_ - left)
    return best, where


@njit(cache=True, inline="always")
def _tap(row, start, stride, count):
    """A window tap across an output row: row[start + t·stride] for t < count, as a view."""
    return row[start : start + (count - 1) * stride + 1 : stride]


@parallel(cost=MAX_POOL_COST)
def max_pool2d_forward(x, out, argmax, y_windows, x_windows, kernel_width, stride_width):
    """out[p, i, j] = max of x[p] over window (i, j), and if argmax has out's shape (pass an empty
    array to skip it), argmax[p, i, j] = (y - top_i)·kernel_width + (x - left_j) of that maximum,
    its offset in the window: small enough for int8 under a 3x3 kernel.

    A value wins if it is greater than the best so far or NaN, scanning the window row by row,
    as PyTorch's CPU kernel does: of equal maxima the first wins, of NaNs the last, and a window
    of -inf reports its first element. The windows that the input does not clip are done a tap
    at a time across the whole output row, so the innermost loops run along the row with no
    branch (SIMD): first the maxima, then the offsets, as the first tap equal to the maximum or
    the last NaN, which is the same winner. The clipped windows at the row's ends are scanned one
    by one.
    """
    xs, outs = _planes(x), _planes(out)
    with_argmax = argmax.size > 0
    args = _planes(argmax)
    sw = stride_width
    first, last = _interior(x_windows[0], x_windows[1], kernel_width)
    count = last - first
    for p in prange(xs.shape[0]):
        plane = xs[p]
        for i in range(outs.shape[1]):
            top, bottom = y_windows[0][i], y_windows[1][i]
            for j in range(outs.shape[2]):
                if j < first or j >= last:
                    best, where = _window_max(
                        plane, top, bottom, x_windows[0][j], x_windows[1][j], kernel_width
                    )
                    outs[p, i, j] = best
                    if with_argmax:
                        args[p, i, j] = where
            if count <= 0:
                continue
            o = outs[p, i, first:last]
            left = x_windows[0][first]
            o[:] = _tap(plane[top], left, sw, count)
            for y in range(top, bottom):
                for dx in range(kernel_width):
                    tap = _tap(plane[y], left + dx, sw, count)
                    for t in range(count):
                        value, best = tap[t], o[t]
                        o[t] = value if (value > best) | (value != value) else best
            if not with_argmax:
                continue
            a = args[p, i, first:last]
            a[:] = -1
            for y in range(top, bottom):
                for dx in range(kernel_width):
                    tap = _tap(plane[y], left + dx, sw, count)
                    offset = a.dtype.type((y - top) * kernel_width + dx)
                    for t in range(count):
                        value = tap[t]
                        take = ((value == o[t]) & (a[t] < 0)) | (value != value)
                        a[t] = offset if take else a[t]


@njit(cache=True, inline="always")
def _max3(a, b, c):
    """The winner of a, b, c scanned in that order (greater than the best so far, or NaN)."""
    best = b if (b > a) | (b != b) else a
    return c if (c > best) | (c != c) else best


@njit(cache=True)
def _plane_groups(planes):
    """Bounds of up to ``PLANE_GROUPS`` runs of consecutive planes, the units a kernel spreads
    over its threads: it allocates its scratch once per run, not once per plane (for 4x4
    planes that took two thirds of the time)."""
    groups = min(planes, PLANE_GROUPS)
    bounds = np.empty(groups + 1, dtype=np.int64)
    for g in range(groups + 1):
        bounds[g] = g * planes // groups
    return bounds


@parallel(cost=MAX_POOL_COST)
def max_pool2d_3x3_same(x, out):
    """``max_pool2d_forward`` without argmax for a 3x3 kernel, stride 1, padding 1 (Inception's
    pool branch): out has x's (C, N, H, W) shape.

    The 3x3 maximum is separable: the row maxima, then the maxima of three of them down each
    column, each pass with the scan's rule, which picks the same value (-0.0 and NaN included)
    as the row-by-row scan. Both passes run over the whole plane as one flat loop (an output
    row's neighbours are one row length away), so the loops are long and branch-free; the
    clipped windows of the first and last column and row are redone after each pass.
    """
    xs, outs = _planes(x), _planes(out)
    height, width = xs.shape[1], xs.shape[2]
    size = height * width
    groups = _plane_groups(xs.shape[0])
    for g in prange(len(groups) - 1):
        row_max = np.empty(size, dtype=xs.dtype)
        for p in range(groups[g], groups[g + 1]):
            _max_3x3_same_plane(xs[p].reshape(size), outs[p].reshape(size), row_max, width)


@njit(cache=True, inline="always")
def _max_3x3_same_plane(src, dst, row_max, width):
    """One flat plane of ``max_pool2d_3x3_same``, its row maxima in the scratch ``row_max``."""
    size = len(src)
    height = size // width
    for k in range(1, size - 1):
        row_max[k] = _max3(src[k - 1], src[k], src[k + 1])
    for y in range(height):
        first, last = y * width, y * width + width - 1
        if width == 1:
            row_max[first] = src[first]
            continue
        b = src[first + 1]
        row_max[first] = b if (b > src[first]) | (b != b) else src[first]
        b = src[last]
        row_max[last] = b if (b > src[last - 1]) | (b != b) else src[last - 1]
    for k in range(width, size - width):
        dst[k] = _max3(row_max[k - width], row_max[k], row_max[k + width])
    if height == 1:
        dst[:] = row_max
        return
    bottom = size - width
    for j in range(width):
        b = row_max[width + j]
        dst[j] = b if (b > row_max[j]) | (b != b) else row_max[j]
        b = row_max[bottom + j]
        a = row_max[bottom - width + j]
        dst[bottom + j] = b if (b > a) | (b != b) else a


@njit(cache=True, inline="always")
def _argmax3(a, b, c):
    """(winner, index 0-2) of a, b, c scanned in that order with the scan's rule."""
    take_b = (b > a) | (b != b)
    best, where = (b, 1) if take_b else (a, 0)
    take_c = (c > best) | (c != c)
    return (c, 2) if take_c else (best, where)


@njit(cache=True, inline="always")
def _argmax2(a, b):
    """(winner, index 0-1) of a, b scanned in that order with the scan's rule."""
    return (b, 1) if (b > a) | (b != b) else (a, 0)


@parallel(cost=MAX_POOL_COST)
def max_pool2d_3x3_same_argmax(x, out, argmax):
    """``max_pool2d_3x3_same`` that also records argmax as ``max_pool2d_forward`` does: the
    winner's offset dy·3 + dx in its window, counted from the window's clipped top-left corner.

    The row pass keeps each row's winner and its column dx, the column pass picks among three
    row_max top to bottom and composes dy·3 + dx, both with the scan's rule. This is the scan's
    winner: without NaN, the first row holding the window's maximum and that row's first
    occurrence of it, which is the first in row-by-row order; with NaN, the last row holding a
    NaN and its last NaN, which is the last NaN in row-by-row order.
    """
    xs, outs, args = _planes(x), _planes(out), _planes(argmax)
    height, width = xs.shape[1], xs.shape[2]
    size = height * width
    groups = _plane_groups(xs.shape[0])
    for g in prange(len(groups) - 1):
        row_max = np.empty(size, dtype=xs.dtype)
        row_argmax = np.empty(size, dtype=argmax.dtype)
        for p in range(groups[g], groups[g + 1]):
            src, dst, arg = xs[p].reshape(size), outs[p].reshape(size), args[p].reshape(size)
            _argmax_3x3_same_plane(src, dst, arg, row_max, row_argmax, width)


@njit(cache=True, inline="always")
def _argmax_3x3_same_plane(src, dst, arg, row_max, row_argmax, width):
    """One flat plane of ``max_pool2d_3x3_same_argmax``, its row winners and their columns in
    the scratch ``row_max`` and ``row_argmax``."""
    size = len(src)
    height = size // width
    for k in range(1, size - 1):
        row_max[k], row_argmax[k] = _argmax3(src[k - 1], src[k], src[k + 1])
    for y in range(height):
        first, last = y * width, y * width + width - 1
        if width == 1:
            row_max[first], row_argmax[first] = src[first], 0
            continue
        row_max[first], row_argmax[first] = _argmax2(src[first], src[first + 1])
        row_max[last], row_argmax[last] = _argmax2(src[last - 1], src[last])
    if height == 1:
        dst[:], arg[:] = row_max, row_argmax
        return
    for k in range(width, size - width):
        best, dy = _argmax3(row_max[k - width], row_max[k], row_max[k + width])
        source = k + (dy - 1) * width
        dst[k], arg[k] = best, dy * 3 + row_argmax[source]
    bottom = size - width
    for j in range(width):
        best, dy = _argmax2(row_max[j], row_max[width + j])
        dst[j], arg[j] = best, dy * 3 + row_argmax[j + dy * width]
        k = bottom + j
        best, dy = _argmax2(row_max[k - width], row_max[k])
        dst[k], arg[k] = best, dy * 3 + row_argmax[k + (dy - 1) * width]


@parallel
def max_pool2d_backward(grad_out, argmax, y_windows, x_windows, kernel_width, grad_in):
    """grad_in[p, y, x] = Σ of grad_out[p, i, j] over the windows whose maximum was (y, x), with
    argmax the window offsets ``max_pool2d_forward`` recorded.

    Offset o of window (i, j) is the plane's element (y_windows[0][i] + o // kernel_width,
    x_windows[0][j] + o % kernel_width); a table of each offset's distance from the window's corner
    in the flat plane turns that division and remainder into one lookup per element.
    """
    gout, args, gin = _planes(grad_out), _planes(argmax), _planes(grad_in)
    width, size = gin.shape[2], gin.shape[1] * gin.shape[2]
    taps = 0
    for i in range(len(y_windows[0])):
        taps = max(taps, (y_windows[1][i] - y_windows[0][i]) * kernel_width)
    shift = np.empty(taps, dtype=np.int64)
    for o in range(taps):
        shift[o] = (o // kernel_width) * width + o % kernel_width
    for p in prange(gin.shape[0]):
        plane = gin[p].reshape(size)
        plane[:] = 0
        for i in range(gout.shape[1]):
            top = y_windows[0][i] * width
            for j in range(gout.shape[2]):
                plane[top + x_windows[0][j] + shift[args[p, i, j]]] += gout[p, i, j]


@parallel
def avg_pool2d_forward(x, out, y_windows, x_windows):
    """out[p, i, j] = (Σ of x[p] over window (i, j)) / (y_windows[2][i] · x_windows[2][j])."""
    xs, outs = _planes(x), _planes(out)
    for p in prange(xs.shape[0]):
        for i in range(outs.shape[1]):
            for j in range(outs.shape[2]):
                total = 0.0
                for y in range(y_windows[0][i], y_windows[1][i]):
                    for x_ in range(x_windows[0][j], x_windows[1][j]):
                        total += xs[p, y, x_]
                outs[p, i, j] = total / (y_windows[2][i] * x_windows[2][j])


@parallel
def avg_pool2d_backward(grad_out, grad_in, y_windows, x_windows):
    """grad_in[p, y, x] = Σ over the windows (i, j) that hold (y, x) of
    grad_out[p, i, j] / (y_windows[2][i] · x_windows[2][j])."""
    gout, gin = _planes(grad_out), _planes(grad_in)
    for p in prange(gin.shape[0]):
        gin[p] = 0
        for i in range(gout.shape[1]):
            for j in range(gout.shape[2]):
                share = gout[p, i, j] / (y_windows[2][i] * x_windows[2][j])
                for y in range(y_windows[0][i], y_windows[1][i]):
                    for x_ in range(x_windows[0][j], x_windows[1][j]):
                        gin[p, y, x_] += share
