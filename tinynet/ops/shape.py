"""Ops that move values without changing them: reshape, permute/transpose, flatten, indexing,
and concatenation. Each backward moves the gradient back the same way."""

from __future__ import annotations

import numbers

import numpy as np

from tinynet.function import Function
from tinynet.ops._args import normalize_dim
from tinynet.tensor import Tensor, as_array, as_tensor


class ReshapeFunction(Function):
    """y = x viewed with ``shape``;  dL/dx = g reshaped to x's shape."""

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)


class PermuteFunction(Function):
    """y = x with axes reordered, y.shape[i] = x.shape[dims[i]];  dL/dx = g permuted by the
    inverse order."""

    @staticmethod
    def forward(ctx, x, dims):
        ctx.inverse = tuple(np.argsort(dims))
        return x.transpose(dims)

    @staticmethod
    def backward(ctx, grad):
        return grad.transpose(ctx.inverse)


class IndexFunction(Function):
    """y = x[index] (NumPy basic or advanced indexing);  dL/dx = g scattered back to the
    indexed positions, summed where an index repeats."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.index, ctx.shape = index, x.shape
        return x[index]

    @staticmethod
    def backward(ctx, grad):
        grad_x = np.zeros(ctx.shape, dtype=grad.dtype)
        np.add.at(grad_x, ctx.index, grad)
        return grad_x


class ConcatFunction(Function):
    """y = [x_0, x_1, ...] joined along ``dim``;  dL/dx_i = the slice of g that x_i filled.

    The output keeps the memory order of the first input (so channel-major activations stay
    channel-major), and the backward hands each input a view of g, not a copy.
    Reference twin: ``tinynet.reference.cat``.
    """

    @staticmethod
    def forward(ctx, *xs, dim):
        sizes = [x.shape[dim] for x in xs]
        ctx.dim, ctx.offsets = dim, np.cumsum(sizes)[:-1]
        shape = list(xs[0].shape)
        shape[dim] = int(np.sum(sizes))
        out = np.empty_like(xs[0], shape=shape, dtype=np.result_type(*xs))
        return np.concatenate(xs, axis=dim, out=out)

    @staticmethod
    def backward(ctx, grad):
        return tuple(np.split(grad, ctx.offsets, axis=ctx.dim))


def reshape(x, shape) -> Tensor:
    """``x`` with a new shape holding the same number of elements (one entry may be -1)."""
    x = as_tensor(x)
    shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        fits = shape.count(-1) == 1 and known > 0 and x.size % known == 0
    else:
        fits = known == x.size
    if not fits or any(s < -1 for s in shape):
        raise ValueError(
            f"reshape: cannot view a tensor of shape {x.shape} ({x.size} elements) as {shape}"
        )
    return ReshapeFunction.apply(x, shape=shape)


def permute(x, dims) -> Tensor:
    """Reorder the axes: ``y.shape[i] == x.shape[dims[i]]``."""
    x = as_tensor(x)
    dims = tuple(normalize_dim(d, x.ndim, "permute", "dims") for d in dims)
    if sorted(dims) != list(range(x.ndim)):
        raise ValueError(
            f"permute: dims must be a permutation of 0..{x.ndim - 1} for a tensor of shape "
            f"{x.shape}; got {dims}"
        )
    return PermuteFunction.apply(x, dims=dims)


def transpose(x, dim0: int, dim1: int) -> Tensor:
    """Swap two axes."""
    x = as_tensor(x)
    dims = list(range(x.ndim))
    a = normalize_dim(dim0, x.ndim, "transpose", "dim0")
    b = normalize_dim(dim1, x.ndim, "transpose", "dim1")
    dims[a], dims[b] = dims[b], dims[a]
    return PermuteFunction.apply(x, dims=tuple(dims))


def flatten(x, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge axes ``start_dim..end_dim`` (inclusive) into one, as ``torch.flatten``."""
    x = as_tensor(x)
    if x.ndim == 0:
        return reshape(x, (1,))
    start = normalize_dim(start_dim, x.ndim, "flatten", "start_dim")
    end = normalize_dim(end_dim, x.ndim, "flatten", "end_dim")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    shape = x.shape[:start] + (int(np.prod(x.shape[start : end + 1])),) + x.shape[end + 1 :]
    return ReshapeFunction.apply(x, shape=shape)


def index(x, index) -> Tensor:
    """``x[index]``; Tensor indices are used by value."""
    if isinstance(index, tuple):
        index = tuple(as_array(i) for i in index)
    elif isinstance(index, Tensor):
        index = index.data
    return IndexFunction.apply(as_tensor(x), index=index)


def cat(tensors, dim: int = 0) -> Tensor:
    """Join tensors along ``dim``; every other dimension must match."""
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("cat: needs at least one tensor; got an empty sequence")
    first = tensors[0]
    axis = normalize_dim(dim, max(first.ndim, 1), "cat")
    for i, t in enumerate(tensors):
        if (
            t.ndim != first.ndim
            or t.ndim == 0
            or any(a != b for k, (a, b) in enumerate(zip(t.shape, first.shape)) if k != axis)
        ):
            raise ValueError(
                f"cat: tensor {i} has shape {t.shape} but tensor 0 has shape {first.shape}; "
                f"every dimension except dim={dim} must match"
            )
    return ConcatFunction.apply(*tensors, dim=axis)


concat = cat


class StackFunction(Function):
    """y = [x_0, x_1, ...] stacked along a new axis ``dim``;  dL/dx_i = g[..., i, ...], the
    slice of g at position i along that axis."""

    @staticmethod
    def forward(ctx, *xs, dim):
        ctx.dim = dim
        return np.stack(xs, axis=dim)

    @staticmethod
    def backward(ctx, grad):
        return tuple(np.moveaxis(grad, ctx.dim, 0))


class PadFunction(Function):
    """y = x with ``widths[axis] = (before, after)`` elements of ``value`` added along each axis;
    dL/dx = g with those elements cut off again."""

    @staticmethod
    def forward(ctx, x, widths, value):
        ctx.inside = tuple(
            slice(before, before + size) for (before, _), size in zip(widths, x.shape)
        )
        return np.pad(x, widths, constant_values=value)

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.inside]


def stack(tensors, dim: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis ``dim``, as ``torch.stack``."""
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: needs at least one tensor; got an empty sequence")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ValueError(
                f"stack: tensor {i} has shape {t.shape} but tensor 0 has shape "
                f"{tensors[0].shape}; every tensor must have the same shape"
            )
    axis = normalize_dim(dim, tensors[0].ndim + 1, "stack")
    return StackFunction.apply(*tensors, dim=axis)


def pad(input, pad, value: float = 0.0) -> Tensor:  # noqa: A002 - PyTorch's names
    """``input`` with constant padding, as ``torch.nn.functional.pad`` (mode 'constant'):
    ``pad = (last_before, last_after, second_last_before, second_last_after, ...)`` counts the
    elements of ``value`` added at each end, the last axis first."""
    x = as_tensor(input)
    if (
        not isinstance(pad, (tuple, list))
        or len(pad) % 2
        or len(pad) > 2 * x.ndim
        or not all(isinstance(p, numbers.Integral) and p >= 0 for p in pad)
    ):
        raise ValueError(
            f"pad: pad must be an even-length sequence of non-negative ints, two per axis of "
            f"the {x.ndim}-D input at most; got {pad!r}"
        )
    pairs = [(int(pad[i]), int(pad[i + 1])) for i in range(0, len(pad), 2)]
    widths = ((0, 0),) * (x.ndim - len(pairs)) + tuple(reversed(pairs))
    return PadFunction.apply(x, widths=widths, value=value)
