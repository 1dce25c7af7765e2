"""The inference plan's graph: a trace turned into steps that passes may rewrite.

``from_trace`` turns each traced op into a ``Step``: its inputs are the ids of the steps that
make them (``'input'`` for the model's input) or ``Constant``s (a snapshot of a parameter,
buffer or other constant, never the model's own array), and its params the op's keyword
arguments. A convolution becomes a ``conv`` step holding its weight as the (O, C·kh·kw) matrix
of the GEMM, its bias, and the flags the passes set (``relu``); every other op keeps its
Function (``fn``) and runs it. The passes in ``tinynet.inference.passes`` rewrite this list.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from tinynet.ops.conv import Conv2dFunction, pointwise
from tinynet.trace import LeafRecord, Trace

INPUT = "input"


@dataclass(frozen=True)
class Constant:
    """A value fixed at planning: the plan's own copy of a parameter, buffer or constant."""

    value: object
    name: str

    def __repr__(self) -> str:
        return self.name


@dataclass
class Step:
    """One step of the plan. ``op``: the traced op's name ('Conv2d', 'MaxPool2d', ...) or a
    pass's ('Conv2d' stays 'Conv2d' with ``fused`` naming what it absorbed)."""

    id: str
    op: str
    inputs: list
    params: dict
    shape: tuple[int, ...]
    dtype: np.dtype
    scope: tuple[str, ...]
    fn: type | None = None
    fused: list[str] = field(default_factory=list)

    @property
    def module(self) -> str:
        """The innermost module the step ran in ('' at the top level)."""
        return self.scope[-1] if self.scope else ""


@dataclass
class Graph:
    steps: list[Step]
    outputs: list[str]

    def consumers(self, value: str) -> list[Step]:
        """The steps that read ``value`` (a step twice if it reads it twice)."""
        return [s for s in self.steps for i in s.inputs if i == value]

    def only_consumer(self, value: str) -> Step | None:
        """The one step reading ``value`` once, if nothing else (nor the outputs) reads it."""
        readers = self.consumers(value)
        if len(readers) == 1 and value not in self.outputs:
            return readers[0]
        return None

    def step(self, value: str) -> Step | None:
        """The step making ``value`` (None for the input)."""
        return next((s for s in self.steps if s.id == value), None)

    def replace(self, old: str, new: str) -> None:
        """Every reader of ``old`` (and the outputs) reads ``new`` instead."""
        for s in self.steps:
            s.inputs = [new if i == old else i for i in s.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove(self, step: Step) -> None:
        self.steps = [s for s in self.steps if s is not step]


def is_pointwise_conv(step: Step | None) -> bool:
    """Whether ``step`` is a conv step (``_as_conv``) of a pointwise convolution: 1x1, stride 1,
    no padding, so its input's channel rows are its GEMM operand as they are."""
    if step is None or step.fn is not None or step.op != "Conv2d":
        return False
    p = step.params
    return pointwise(p["kernel"], p["stride"], p["padding"])


def from_trace(trace: Trace, input_id: str) -> Graph:
    """The steps of ``trace``, whose leaf ``input_id`` is the model's input; every other leaf
    becomes a ``Constant`` holding a copy of its value. Only convolutions in the input's dtype
    become conv steps (the plan's buffers hold that dtype)."""
    constants = {leaf.id: _constant(leaf) for leaf in trace.leaves if leaf.id != input_id}
    dtype = next((leaf.dtype for leaf in trace.leaves if leaf.id == input_id), None)
    steps = []
    for op in trace.ops:
        inputs = [
            None if i is None else INPUT if i == input_id else constants.get(i, i)
            for i in op.inputs
        ]
        params = {name: _owned(value) for name, value in op.params.items()}
        step = Step(op.id, op.op, inputs, params, op.shape, op.dtype, op.scope, op.fn)
        if op.fn is Conv2dFunction and op.dtype == dtype:
            _as_conv(step)
        steps.append(step)
    outputs = [INPUT if o == input_id else o for o in trace.outputs]
    return Graph(steps, outputs)


def _constant(leaf: LeafRecord) -> Constant:
    value = leaf.value
    data = getattr(value, "data", value)  # a Tensor's array; a constant as given
    return Constant(_owned(data), leaf.name)


def _owned(value):
    """A copy of an array (or of the arrays in a tuple), so the plan never shares the model's."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple):
        return tuple(_owned(v) for v in value)
    return copy.copy(value) if isinstance(value, (list, dict)) else value


def _as_conv(step: Step) -> None:
    """A traced convolution as the plan's conv step: params weight (O, C·kh·kw), bias (O,) or
    None, kernel, stride, padding, relu; its one input the activation."""
    x, weight, bias = step.inputs
    if not isinstance(weight, Constant) or not (bias is None or isinstance(bias, Constant)):
        return  # a weight computed in the forward: the op runs as traced
    if not isinstance(x, str):
        return  # a convolution of a constant: the op runs as traced
    W = weight.value
    step.params.update(
        weight=W.reshape(len(W), -1),
        bias=None if bias is None else bias.value,
        kernel=tuple(W.shape[2:]),
        relu=False,
    )
    step.inputs = [x]
    step.op = "Conv2d"
    step.fn = None
