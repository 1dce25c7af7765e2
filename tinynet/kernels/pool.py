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
kernel, a faster one for Inception's 3x3/1 pad-1 pool, and two for the other 3x3 pools whose
windows are some of that pool's (GoogLeNet's 3x3/2), with and without argmax; ``max_pool2d``
picks between them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinynet.kernels import parallel

PLANE_GROUPS = 256  # enough runs of planes to keep many cores evenly busy
# A max-pool forward costs about 16 ReLUs per element on small planes (with argmax, 8x8 planes:
# 3.5 ms for 524,288 elements on one core), so it gets the threads from 16,384 elements on.
MAX_POOL_COST = 16
# The 3x3/1 max pool runs its passes over this many elements of whole planes at once: long loops
# for small planes (4x4: 0.97 -> 0.56 ms for 13,312 planes on one core), while the scratch stays
# in the first-level cache.
SAME_RUN = 1024


def max_pool2d(x, out, y_windows, x_windows, kernel, stride, with_argmax: bool) -> np.ndarray:
    """out = the window maxima of x, by the kernel that fits the shape; returns argmax.

    x (C, N, H, W) and out (C, N, OH, OW); y_windows, x_windows: the window tables; kernel,
    stride: (h, w).
    A 3x3, stride-1 pool whose output keeps the input's size (padding 1: Inception's pool branch)
    runs the separable ``max_pool2d_3x3_same`` kernels; another 3x3 pool whose clipped windows are
    each that pool's window around some pixel (a 3x3/2 pool with padding 0, or 1 where the last
    window does not start in the padding) ``max_pool2d_3x3_subsampled`` (without argmax
    ``max_pool2d_3x3_centred``: at batch 1, 2 threads, 64 x 112² 1.18 -> 0.26 ms, 192 x 56²
    0.57 -> 0.31, 480 x 28² 0.41 -> 0.26, 832 x 14² 0.26 -> 0.18, the column pass's fix
    included); every other the general
    ``max_pool2d_forward``; all pick the same winner. With ``with_argmax``, argmax holds each
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
    rows = columns = None
    if kernel == (3, 3) and not same_3x3:
        rows, columns = _centres(y_windows, x.shape[2]), _centres(x_windows, x.shape[3])
    if same_3x3 and argmax.size:
        max_pool2d_3x3_same_argmax(x, out, argmax)
    elif same_3x3:
        max_pool2d_3x3_same(x, out)
    elif rows is not None and columns is not None and argmax.size:
        max_pool2d_3x3_subsampled(x, out, argmax, rows, columns)
    elif rows is not None and columns is not None:
        max_pool2d_3x3_centred(x, out, rows, columns)
    else:
        max_pool2d_forward(x, out, argmax, y_windows, x_windows, kernel[1], stride[1])
    return argmax


def _centres(windows, size: int):
    """The pixel c of each window (start, end) of a 3-wide window table along an axis of ``size``
    such that the window is [c - 1, c + 2) clipped to [0, size), the window of the 3x3/1 pad-1
    pool at c; None if a window is not such a window."""
    starts, ends = windows[0], windows[1]
    centres = np.where(starts > 0, starts + 1, np.maximum(ends - 2, 0))
    clipped = np.maximum(centres - 1, 0), np.minimum(centres + 2, size)
    inside = (centres < size) & (clipped[0] == starts) & (clipped[1] == ends)
    return centres if inside.all() else None


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
    as the row-by-row scan. Both passes run over a run of whole planes as one flat loop (an
    output row's neighbours are one row length away), so the loops are long and branch-free
    even on 4x4 planes; the clipped windows of each plane's first and last column and row are
    redone after each pass (``_max_3x3_same_planes``).
    """
    height, width = x.shape[2], x.shape[3]
    size = height * width
    flat_x, flat_out = x.reshape(x.size), out.reshape(out.size)
    groups = _plane_groups(x.shape[0] * x.shape[1])
    step = max(1, SAME_RUN // size)
    for g in prange(len(groups) - 1):
        row_max = np.empty(step * size, dtype=x.dtype)
        for p in range(groups[g], groups[g + 1], step):
            run = slice(p * size, min(p + step, groups[g + 1]) * size)
            _max_3x3_same_planes(flat_x[run], flat_out[run], row_max, height, width)


@njit(cache=True, inline="always")
def _max_3x3_same_planes(src, dst, row_max, height, width):
    """``max_pool2d_3x3_same`` on a run of whole (height, width) planes laid end to end in the
    flat src and dst, the row maxima in the scratch ``row_max`` (at least as long): each pass is
    one loop
    over the whole run, which reads across a row's or a plane's edge only where the windows
    are clipped, and those are redone after it."""
    size, n = height * width, len(src)
    row_max = row_max[:n]
    _row_maxima(src, row_max, width)
    if height == 1:
        dst[:] = row_max
        return
    # as three aligned views: indexed k - width, the loop did not vectorise (numba's check
    # for negative indices stayed in it): the whole kernel took 2.7x as long (192 x 28²)
    above, centre = row_max[: n - 2 * width], row_max[width : n - width]
    below, middle = row_max[2 * width :], dst[width : n - width]
    for k in range(n - 2 * width):
        middle[k] = _max3(above[k], centre[k], below[k])
    for top in range(0, n, size):
        bottom = top + size - width
        for j in range(width):
            b = row_max[top + width + j]
            dst[top + j] = b if (b > row_max[top + j]) | (b != b) else row_max[top + j]
            b = row_max[bottom + j]
            a = row_max[bottom - width + j]
            dst[bottom + j] = b if (b > a) | (b != b) else a


@njit(cache=True, inline="always")
def _row_maxima(src, row_max, width):
    """row_max[k] = the winner of src's row-wise window [k - 1, k + 2) clipped to k's row, for
    the flat src of whole rows of ``width``: one loop over all, then each row's two ends redone."""
    n = len(src)
    for k in range(1, n - 1):
        row_max[k] = _max3(src[k - 1], src[k], src[k + 1])
    for first in range(0, n, width):
        last = first + width - 1
        if width == 1:
            row_max[first] = src[first]
            continue
        b = src[first + 1]
        row_max[first] = b if (b > src[first]) | (b != b) else src[first]
        b = src[last]
        row_max[last] = b if (b > src[last - 1]) | (b != b) else src[last - 1]


@parallel(cost=MAX_POOL_COST)
def max_pool2d_3x3_same_argmax(x, out, argmax):
    """``max_pool2d_3x3_same`` that also records argmax as ``max_pool2d_forward`` does: the
    winner's offset dy·3 + dx in its window, counted from the window's clipped top-left corner.

    The maxima come from the separable passes of ``max_pool2d_3x3_same``; the winner is then the
    one the row-by-row scan picks, found from the maximum: without NaN the first tap equal to it
    (of equal maxima the scan keeps the first, and -0.0 equals 0.0), with NaN the last NaN. The
    windows the plane does not clip are done for a whole run of planes at once, as one long
    branch-free loop over nine shifted views (``_first_equal_taps``), then the windows at a
    plane's edges, which that loop gets wrong (it reads across the edge), one by one
    (``_edge_offsets``); where a maximum is NaN, its window is scanned again (``_nan_offsets``).
    """
    xs, outs, args = _planes(x), _planes(out), _planes(argmax)
    height, width = xs.shape[1], xs.shape[2]
    size = height * width
    flat_x, flat_out, flat_arg = x.reshape(x.size), out.reshape(out.size), argmax.reshape(x.size)
    groups = _plane_groups(xs.shape[0])
    step = max(1, SAME_RUN // size)
    for g in prange(len(groups) - 1):
        row_max = np.empty(step * size, dtype=xs.dtype)
        for p in range(groups[g], groups[g + 1], step):
            run = slice(p * size, min(p + step, groups[g + 1]) * size)
            _max_3x3_same_planes(flat_x[run], flat_out[run], row_max, height, width)
        run = slice(groups[g] * size, groups[g + 1] * size)
        nan = _first_equal_taps(flat_x[run], flat_out[run], flat_arg[run], width)
        for p in range(groups[g], groups[g + 1]):
            nan |= _edge_offsets(xs[p], outs[p], args[p])
        if nan:
            for p in range(groups[g], groups[g + 1]):
                _nan_offsets(xs[p], outs[p], args[p])


@njit(cache=True, inline="always")
def _first_equal_taps(src, dst, arg, width):
    """arg[k] = the offset dy·3 + dx of the first of the nine taps src[k + (dy - 1)·width + dx - 1]
    (row by row) equal to dst[k], for the flat positions k that have all nine; the taps are
    tried last to first, so the first equal one is written last. Returns whether a dst[k] it
    read is NaN (then no tap equals it: ``_nan_offsets`` finds the winner)."""
    lo, hi = width + 1, len(src) - width - 1
    if hi <= lo:
        return False
    w = width
    s0, s1, s2 = src[lo - w - 1 : hi - w - 1], src[lo - w : hi - w], src[lo - w + 1 : hi - w + 1]
    s3, s4, s5 = src[lo - 1 : hi - 1], src[lo:hi], src[lo + 1 : hi + 1]
    s6, s7 = src[lo + w - 1 : hi + w - 1], src[lo + w : hi + w]
    best, offsets = dst[lo:hi], arg[lo:hi]
    nan = False
    for t in range(hi - lo):
        b = best[t]
        nan |= b != b
        o = 8
        o = 7 if s7[t] == b else o
        o = 6 if s6[t] == b else o
        o = 5 if s5[t] == b else o
        o = 4 if s4[t] == b else o
        o = 3 if s3[t] == b else o
        o = 2 if s2[t] == b else o
        o = 1 if s1[t] == b else o
        o = 0 if s0[t] == b else o
        offsets[t] = o
    return nan


@njit(cache=True, inline="always")
def _edge_offsets(plane, dst, arg):
    """arg of the windows in the first and last row and column of one (H, W) plane, which the
    plane clips (``_clipped_first_equal_tap``); returns whether one of their maxima is NaN."""
    height, width = plane.shape
    nan = False
    for y in range(height):
        step = 1 if y == 0 or y == height - 1 else max(width - 1, 1)
        for x_ in range(0, width, step):
            best = dst[y, x_]
            arg[y, x_] = _clipped_first_equal_tap(plane, y, x_, best)
            nan |= best != best
    return nan


@njit(cache=True, inline="always")
def _nan_offsets(plane, dst, arg):
    """arg of the windows of one (H, W) plane whose maximum is NaN: the scan's last NaN."""
    height, width = plane.shape
    for y in range(height):
        for x_ in range(width):
            if dst[y, x_] != dst[y, x_]:
                top, left = max(y - 1, 0), max(x_ - 1, 0)
                bottom, right = min(y + 2, height), min(x_ + 2, width)
                arg[y, x_] = _winner_offset(plane, top, bottom, left, right, dst[y, x_])


@njit(cache=True, inline="always")
def _clipped_first_equal_tap(plane, y, x, best):
    """The offset (row - top)·3 + (column - left) of the first tap equal to ``best`` in the 3x3
    window around (y, x) clipped to the plane, as straight-line code: a clipped row or column is
    read as its neighbour inside again, which comes later in the scan and has the same
    offset, so the first equal tap is the same."""
    height, width = plane.shape
    top, bottom = max(y - 1, 0), min(y + 1, height - 1)
    left, right = max(x - 1, 0), min(x + 1, width - 1)
    dy1, dy2, dx1, dx2 = y - top, bottom - top, x - left, right - left
    where = dy2 * 3 + dx2
    where = dy2 * 3 + dx1 if plane[bottom, x] == best else where
    where = dy2 * 3 if plane[bottom, left] == best else where
    where = dy1 * 3 + dx2 if plane[y, right] == best else where
    where = dy1 * 3 + dx1 if plane[y, x] == best else where
    where = dy1 * 3 if plane[y, left] == best else where
    where = dx2 if plane[top, right] == best else where
    where = dx1 if plane[top, x] == best else where
    return 0 if plane[top, left] == best else where


@njit(cache=True, inline="always")
def _winner_offset(plane, top, bottom, left, right, best):
    """The offset (y - top)·3 + (x - left) of the scan's winner of the 3-wide window [top,
    bottom) x [left, right) whose maximum is ``best``: the first tap equal to it, or if it is
    NaN the last NaN (a window without NaN has none), without a branch per tap."""
    where = -1
    for y in range(top, bottom):
        for x_ in range(left, right):
            value = plane[y, x_]
            take = ((value == best) & (where < 0)) | (value != value)
            where = (y - top) * 3 + (x_ - left) if take else where
    return where


@parallel(cost=MAX_POOL_COST)
def max_pool2d_3x3_subsampled(x, out, argmax, rows, columns):
    """``max_pool2d_forward`` for a 3x3 pool whose window (i, j) is the 3x3/1 pad-1 pool's window
    around pixel (rows[i], columns[j]) (``_centres``): out[p, i, j] is that pool's maximum there,
    from the separable passes of ``max_pool2d_3x3_same`` over the whole plane, which for small
    planes beats scanning the strided windows; the same windows give the same winner.
    argmax[p, i, j] is the winner's offset from the clipped window's top-left corner, found from
    the maximum as in ``max_pool2d_3x3_same_argmax``: the first tap equal to it, or the last NaN.
    (Without argmax ``max_pool2d_3x3_centred`` runs instead.)
    """
    xs, outs = _planes(x), _planes(out)
    args = _planes(argmax)
    height, width = xs.shape[1], xs.shape[2]
    size = height * width
    groups = _plane_groups(xs.shape[0])
    for g in prange(len(groups) - 1):
        row_max, same = np.empty(size, dtype=xs.dtype), np.empty(size, dtype=xs.dtype)
        for p in range(groups[g], groups[g + 1]):
            plane, o = xs[p], outs[p]
            _max_3x3_same_planes(plane.reshape(size), same, row_max, height, width)
            for i in range(len(rows)):
                for j in range(len(columns)):
                    o[i, j] = same[rows[i] * width + columns[j]]
            a, nan = args[p], False
            for i in range(len(rows)):
                for j in range(len(columns)):
                    a[i, j] = _clipped_first_equal_tap(plane, rows[i], columns[j], o[i, j])
                    nan |= o[i, j] != o[i, j]
            if nan:
                for i in range(len(rows)):
                    for j in range(len(columns)):
                        if o[i, j] != o[i, j]:
                            y, x_ = rows[i], columns[j]
                            top, left = max(y - 1, 0), max(x_ - 1, 0)
                            bottom, right = min(y + 2, height), min(x_ + 2, width)
                            a[i, j] = _winner_offset(plane, top, bottom, left, right, o[i, j])


@parallel(cost=MAX_POOL_COST)
def max_pool2d_3x3_centred(x, out, rows, columns):
    """``max_pool2d_3x3_subsampled`` without argmax: the same maxima, out[p, i, j] the 3x3/1
    pad-1 pool's window around pixel (rows[i], columns[j]), but the column pass runs only down
    the centre rows (a 3x3/2 pool: half of the plane's), then the centre columns are picked.
    The same scans over the same values as the whole-plane passes, so the same winner.
    """
    xs, outs = _planes(x), _planes(out)
    height, width = xs.shape[1], xs.shape[2]
    size = height * width
    groups = _plane_groups(xs.shape[0])
    for g in prange(len(groups) - 1):
        row_max, column = np.empty(size, dtype=xs.dtype), np.empty(width, dtype=xs.dtype)
        for p in range(groups[g], groups[g + 1]):
            o = outs[p]
            _row_maxima(xs[p].reshape(size), row_max, width)
            for i in range(len(rows)):
                top, bottom = max(rows[i] - 1, 0), min(rows[i] + 2, height)
                a = row_max[top * width : (top + 1) * width]
                if bottom - top == 3:
                    b = row_max[(top + 1) * width : (top + 2) * width]
                    c = row_max[(top + 2) * width : (top + 3) * width]
                    for q in range(width):
                        column[q] = _max3(a[q], b[q], c[q])
                elif bottom - top == 2:
                    b = row_max[(top + 1) * width : (top + 2) * width]
                    for q in range(width):
                        column[q] = b[q] if (b[q] > a[q]) | (b[q] != b[q]) else a[q]
                else:
                    column[:] = a
                for j in range(len(columns)):
                    o[i, j] = column[columns[j]]


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
