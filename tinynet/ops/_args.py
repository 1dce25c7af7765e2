"""Argument checks shared by the ops: each error names the op, the argument, what it got and
what it expected."""

from __future__ import annotations

import numbers

import numpy as np

from tinynet.kernels import KERNEL_DTYPES


def normalize_dim(dim: int, ndim: int, op: str, name: str = "dim") -> int:
    """A dimension index in [-ndim, ndim) as a non-negative index."""
    if not isinstance(dim, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int; got {dim!r}")
    if not -ndim <= dim < ndim:
        raise IndexError(
            f"{op}: {name}={dim} is out of range for a tensor with {ndim} dimensions "
            f"(expected {-ndim} <= {name} < {ndim})"
        )
    return int(dim) % ndim


def normalize_dims(dim, ndim: int, op: str) -> tuple[int, ...]:
    """``None`` (every axis), an int or a sequence of ints, as sorted non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, numbers.Integral):
        dims = (dim,)
    elif isinstance(dim, (tuple, list)):
        dims = tuple(dim)
    else:
        raise TypeError(f"{op}: dim must be an int, a tuple of ints or None; got {dim!r}")
    # A 0-d tensor accepts dim 0 or -1, as in PyTorch, and has no axis to reduce.
    axes = tuple(sorted(normalize_dim(d, max(ndim, 1), op) for d in dims))
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: dim {dim!r} repeats an axis")
    return axes if ndim else ()


def pair(value, name: str, op: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (height, width), each at least ``minimum``."""
    if isinstance(value, numbers.Integral):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, numbers.Integral) for v in value)
    ):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints; got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}; got {value!r}")
    return int(value[0]), int(value[1])


def check_ndim(shape: tuple[int, ...], ndims: tuple[int, ...], name: str, op: str, layout: str):
    """Raise unless ``shape`` has one of the dimension counts in ``ndims``."""
    if len(shape) not in ndims:
        expected = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{op}: {name} must be {expected} {layout}; got shape {tuple(shape)}")


def check_float(dtype: np.dtype, name: str, op: str, kernels_only: bool = False) -> None:
    """Raise unless ``dtype`` is a floating-point dtype, and with ``kernels_only`` one of the
    kernels' dtypes (float32, float64)."""
    if kernels_only and dtype not in KERNEL_DTYPES:
        raise TypeError(f"{op}: {name} must be float32 or float64; got {dtype}")
    if dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be a floating-point tensor; got dtype {dtype}")
