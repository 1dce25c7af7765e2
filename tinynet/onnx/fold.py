"""Constant folding: the shape arithmetic exporters write around ordinary ops, worked out in
NumPy once per input shape instead of run as graph nodes.

An exporter tracing ``x.view(x.size(0), -1)`` cannot write the batch size into the file, so
PyTorch's TorchScript exporter writes the arithmetic that finds it when the model runs:
Shape(x) -> Gather(0) -> Unsqueeze -> Concat(-, [-1]) -> Reshape. ``F.local_response_norm``
becomes such arithmetic around a Pad and an AveragePool, with an If on the size of an axis.
These nodes compute small integer arrays from shapes and constants, never from the pixels: once
the input's shape is fixed, each has a single value. Folding replaces each of them by the value
it computes, and an If by the branch its condition picks, so what runs is the data ops alone,
with constant arguments: a Reshape to a fixed target, a Pad by fixed widths.

When to fold: the file names the batch axis ('N') and any batch size may come. Folding once at
load with an assumed batch size would write that size into every Reshape target and be wrong
for every other; folding with a symbolic batch size would need an algebra of shape expressions
for every op. So the folding is per input shape: the first call with a new shape runs the graph
node by node, working out in NumPy each node whose inputs are all known (constants, folded
values, and Shape of any tensor), running the others as tinynet ops, and keeps the run's data
nodes and folded values as a ``Plan``; later calls with that shape run only the plan. Every
batch size gets the values of its own shape, and the first call costs no more than a plain run.

Folding never reads the data: a node with an input computed from the data runs as a tinynet op
(when the reader has one for it), and an If whose condition depends on the data is refused. The
values one plan folds hold at most ``max(MIN_FOLD_BUDGET, FOLD_BUDGET_PER_INPUT * input
elements)`` elements together, checked before each is made, so a small file cannot ask for a
huge ConstantOfShape or Range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto

from tinynet.onnx import checks

MIN_FOLD_BUDGET = 1 << 20
FOLD_BUDGET_PER_INPUT = 16
MAX_PLANS = 8  # input shapes whose plans a model keeps (the oldest goes first)

# Cast's target types (ONNX's numbering) that shape arithmetic uses.
CAST_TYPES = {
    TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64,
    TensorProto.FLOAT16: np.float16, TensorProto.INT64: np.int64, TensorProto.INT32: np.int32,
    TensorProto.INT16: np.int16, TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8,
    TensorProto.BOOL: np.bool_,
}  # fmt: skip


class FoldError(ValueError):
    """A node that cannot be folded; the message names the node."""


@dataclass
class Plan:
    """What runs for one input shape: the data nodes in order, and the values folded for it."""

    nodes: list = field(default_factory=list)
    folded: dict = field(default_factory=dict)


def is_known(value) -> bool:
    """A value known before the data: a constant or a folded value (tensors are data)."""
    return isinstance(value, np.ndarray)


def fold_and_run(nodes: list, values: dict, run, budget: int) -> Plan:
    """Run ``nodes`` (the reader's (op_type, inputs, outputs, attributes, label) tuples) on
    ``values`` (name -> Tensor or ndarray, updated in place), folding each node that can be
    folded and calling ``run(node, args)`` for the others; the plan of the run. ``budget`` is
    how many elements the folded values may hold together."""
    plan = Plan()
    _walk(nodes, values, run, plan, budget)
    return plan


def run_plan(plan: Plan, values: dict, run) -> None:
    """Run a plan made by ``fold_and_run`` for an input of the same shape."""
    values.update(plan.folded)
    for node in plan.nodes:
        values[node[2][0]] = run(node, [values[i] if i else None for i in node[1]])


def _walk(nodes, values, run, plan, budget) -> int:
    """Fold or run each node; the budget left."""
    for node in nodes:
        op_type, inputs, outputs, attributes, label = node
        args = [values[i] if i else None for i in inputs]
        if op_type == "If":
            branch, results = attributes[_branch_name(args[0], label)]
            budget = _walk(branch, values, run, plan, budget)
            for name, result in zip(outputs, results):
                values[name] = values[result]
                if is_known(values[name]):
                    plan.folded[name] = values[name]
                else:
                    plan.nodes.append(("Identity", [result], [name], {}, label))
        elif _foldable(op_type, args):
            values[outputs[0]] = plan.folded[outputs[0]] = _fold(node, args, budget)
            budget -= values[outputs[0]].size
        else:
            values[outputs[0]] = run(node, args)
            plan.nodes.append(node)
    return budget


def _foldable(op_type, args) -> bool:
    """Shape needs only its input's shape; the other folds need every input known."""
    if op_type not in FOLDS:
        return False
    return op_type == "Shape" or all(is_known(a) for a in args if a is not None)


def _branch_name(condition, label) -> str:
    if not is_known(condition):
        raise FoldError(f"{label}: the condition depends on the input's values; tinynet takes "
                        "an If's branch from shapes and constants only")  # fmt: skip
    if condition.size != 1:
        raise FoldError(f"{label}: the condition has shape {list(condition.shape)}; an If "
                        "needs a single value")  # fmt: skip
    return "then_branch" if condition.item() else "else_branch"


def _fold(node, args, budget) -> np.ndarray:
    op_type, _, _, attributes, label = node
    try:
        size = _result_size(op_type, args, attributes)
        if size > budget:
            raise ValueError(f"the result would hold {size} elements, more than the "
                             f"{budget} left for folded values")  # fmt: skip
        return np.asarray(FOLDS[op_type](*args, **attributes))
    except checks.NODE_ERRORS as error:
        raise FoldError(f"{label}: {error}") from None


def _result_size(op_type, args, attributes) -> int:
    """How many elements the fold of a node makes, before it is made (ops whose result can be
    larger than their inputs)."""
    if op_type == "ConstantOfShape":
        return math.prod(_ints(args[0], "the shape"))
    if op_type == "Range":
        start, limit, delta = (scalar(a, n) for a, n in zip(args, ("start", "limit", "delta")))
        if delta == 0:
            raise ValueError("delta is 0")
        return max(math.ceil((limit - start) / delta), 0)
    if op_type in _ELEMENTWISE:
        return math.prod(np.broadcast_shapes(*(np.shape(a) for a in args)))
    if op_type == "Gather":
        data, indices = args
        axis = _axis(attributes.get("axis", 0), data.ndim)
        return math.prod(data.shape[:axis] + indices.shape + data.shape[axis + 1 :])
    if op_type == "Concat":
        return sum(a.size for a in args)
    return max((np.size(a) for a in args if is_known(a)), default=0)


def _ints(value, what) -> list[int]:
    value = np.asarray(value)
    if value.dtype.kind not in "iu" or value.ndim > 1:
        raise TypeError(f"{what} must be a 1-D integer tensor; got {value.dtype} of shape "
                        f"{list(value.shape)}")  # fmt: skip
    return [int(v) for v in value.reshape(-1)]


def scalar(value, what):
    if np.size(value) != 1:
        raise ValueError(f"{what} must hold one value; got shape {list(np.shape(value))}")
    return np.asarray(value).reshape(-1)[0]


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _axes(axes, rank: int) -> list[int]:
    axes = [_axis(a, rank) for a in _ints(axes, "axes")]
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes} repeat an axis")
    return axes


# ---------------------------------------------------------------------- shape helpers
# Each is used both by the NumPy fold below and by the reader's op on data tensors.


def reshape_target(shape: tuple, target, allowzero: int = 0) -> tuple:
    """Reshape's target for an input of ``shape``: a 0 copies the input's size on that axis
    (unless ``allowzero``, where it is a 0), and one -1 is left for the reshape to infer."""
    target = _ints(target, "the shape")
    if not allowzero:
        for k, size in enumerate(target):
            if size == 0:
                if k >= len(shape):
                    raise ValueError(f"the target {target} copies axis {k} (a 0) of an input "
                                     f"of rank {len(shape)}")  # fmt: skip
                target[k] = shape[k]
    if any(size < -1 for size in target) or target.count(-1) > 1:
        raise ValueError(f"the target {target} has a size below -1 or more than one -1")
    return tuple(target)


def unsqueezed(shape: tuple, axes) -> tuple:
    """Unsqueeze's output shape: a new axis of size 1 at each of ``axes``."""
    rank = len(shape) + np.size(axes)
    axes = set(_axes(axes, rank))
    sizes = iter(shape)
    return tuple(1 if k in axes else next(sizes) for k in range(rank))


def squeezed(shape: tuple, axes=None) -> tuple:
    """Squeeze's output shape: ``shape`` without the axes in ``axes`` (each of size 1), or
    without every axis of size 1."""
    axes = [k for k, size in enumerate(shape) if size == 1] if axes is None else \
        _axes(axes, len(shape))  # fmt: skip
    wrong = [k for k in axes if shape[k] != 1]
    if wrong:
        raise ValueError(f"cannot squeeze axes {wrong} of shape {list(shape)}: not of size 1")
    return tuple(size for k, size in enumerate(shape) if k not in axes)


def slices(shape: tuple, starts, ends, axes=None, steps=None) -> tuple:
    """Slice's index: one Python slice per axis, ONNX's starts and ends clamped to the axis. An
    end of INT32_MAX or INT64_MAX runs to the end in the step's direction, as ONNX Runtime reads
    it (NumPy's None; the operator's text would clamp it to the last element when stepping
    backward)."""
    starts, ends = _ints(starts, "starts"), _ints(ends, "ends")
    axes = list(range(len(starts))) if axes is None else _axes(axes, len(shape))
    steps = [1] * len(starts) if steps is None else _ints(steps, "steps")
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError("starts, ends, axes and steps must have one entry per sliced axis")
    index = [slice(None)] * len(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = shape[axis]
        if step == 0:
            raise ValueError("a step is 0")
        start = start + size if start < 0 else start
        if end in _UNBOUNDED:
            end = size if step > 0 else -1
        elif end < 0:
            end += size
        if step > 0:
            start, end = min(max(start, 0), size), min(max(end, 0), size)
        else:  # an end of -1 means "past the first element", which a Python slice writes None
            start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
        index[axis] = slice(start, None if end < 0 else end, step)
    return tuple(index)


_UNBOUNDED = (2**31 - 1, 2**63 - 1)


def pad_widths(rank: int, pads, axes=None) -> list[list[int]]:
    """Pad's ``pads`` (all the starts, then all the ends) as [before, after] per axis."""
    pads = _ints(pads, "pads")
    axes = list(range(rank)) if axes is None else _axes(axes, rank)
    if len(pads) != 2 * len(axes):
        raise ValueError(f"pads has {len(pads)} entries; {2 * len(axes)} expected")
    widths = [[0, 0] for _ in range(rank)]
    for k, axis in enumerate(axes):
        widths[axis] = [pads[k], pads[k + len(axes)]]
    return widths


# ---------------------------------------------------------------------- the folds
def _shape(x, start=0, end=None):
    return np.array(x.shape[start:end], np.int64)


def _gather(data, indices, axis=0):
    axis = _axis(axis, data.ndim)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers; got {indices.dtype}")
    return np.take(data, indices, axis=axis)


def _cast(x, to, saturate=1, round_mode=None):
    if to not in CAST_TYPES:
        raise TypeError(f"Cast to type {to} is not supported")
    return x.astype(CAST_TYPES[to])


def _range(start, limit, delta):
    return np.arange(scalar(start, "start"), scalar(limit, "limit"), scalar(delta, "delta"),
                     dtype=np.result_type(start, limit, delta))  # fmt: skip


def _constant_of_shape(shape, value=None):
    value = np.zeros(1, np.float32) if value is None else value
    if value.size != 1:
        raise ValueError(f"value must hold one element; got shape {list(value.shape)}")
    return np.full(_ints(shape, "the shape"), value.reshape(-1)[0], value.dtype)


def _divide(a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":  # ONNX's integer Div truncates
        if np.any(b == 0):
            raise ZeroDivisionError("integer division by 0")
        return np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))
    return np.divide(a, b)


def _unsqueeze(x, axes):
    return x.reshape(unsqueezed(x.shape, axes))


def _squeeze(x, axes=None):
    return x.reshape(squeezed(x.shape, axes))


def _slice(x, starts, ends, axes=None, steps=None):
    return x[slices(x.shape, starts, ends, axes, steps)]


def _reshape(x, shape, allowzero=0):
    return x.reshape(reshape_target(x.shape, shape, allowzero))


def _transpose(x, perm=None):
    return np.transpose(x, perm)


def _concat(*xs, axis):
    return np.concatenate(xs, axis=axis)


_ELEMENTWISE = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _divide, "Pow": np.power,
    "Equal": np.equal, "Where": np.where,
}  # fmt: skip

# ONNX op -> its NumPy fold (the ONNX operator's semantics on known values).
FOLDS = {
    "Shape": _shape,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Slice": _slice,
    "Concat": _concat,
    "Cast": _cast,
    "Range": _range,
    "ConstantOfShape": _constant_of_shape,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Identity": lambda x: x,
    **_ELEMENTWISE,
}
