"""``tinynet.inference(model, example_input)``: the eval-mode forward planned once, then run.

    plan = tinynet.inference(model, images[:8])
    logits = plan(images[:8])            # what model.eval()(images[:8]) returns
    print(plan.describe("inception3a"))  # the traced ops, then the planned steps

Planning copies the model (``copy.deepcopy``: the plan's snapshot of its weights; the model
itself is neither mutated nor switched to eval mode), traces the copy's eval forward on the
example (``tinynet.trace``), rewrites the graph (``tinynet.inference.passes``) and lowers it to
a ``Program`` (``tinynet.inference.program``): every argument check, shape computation, window
table and buffer of the forward is settled there, once. A call then checks the input once and
runs the prepared steps, recording no graph.

Snapshot semantics: change the model's weights and the plan still computes with the old ones;
build a new plan. An input of another shape (the last, smaller batch of an evaluation) gets its
own program, traced from the same snapshot on first use (that call returns the traced forward's
own outputs) and kept by shape. Without an example input the first call plans: a loop over
batches (an evaluation) then runs no forward twice. A plan runs one call at a time: its buffers
are reused by every call, so concurrent calls from several threads take turns (a lock).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from tinynet.function import enable_grad, no_grad
from tinynet.inference.graph import INPUT, Constant, Step, from_trace
from tinynet.inference.passes import PASSES
from tinynet.inference.program import Program
from tinynet.nn.module import Module
from tinynet.tensor import Tensor, as_array
from tinynet.trace import trace


@dataclass(frozen=True)
class PlannedOp:
    """One entry of ``Plan.ops`` / ``Plan.traced_ops``: a step's id, op name, inputs (ids, or
    the names of constants), output shape, the module it ran in and what was fused into it."""

    id: str
    op: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    scope: tuple[str, ...]
    fused: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return self.scope[-1] if self.scope else ""

    def line(self) -> str:
        fused = f"  [{'; '.join(self.fused)}]" if self.fused else ""
        inputs = ", ".join(self.inputs)
        return f"{self.id:>8} {self.op:<18} ({inputs}) -> {self.shape}  {self.module}{fused}"


class Plan:
    """A callable inference plan of ``model`` for inputs like ``example_input``; see the module
    docstring. ``passes``: the names of the graph rewrites to apply (default all of
    ``tinynet.inference.passes.PASSES``); ``column_block``: columns per GEMM block whose
    bias/ReLU epilogue runs right after it (None: one epilogue per im2col chunk); ``winograd``:
    Winograd's F(2x2, 3x3) where ``tinynet.inference.winograd.use_winograd`` picks it;
    ``trace_on_call``: the call, for each input shape, that traces and plans it (earlier ones
    run the snapshot eagerly); see ``tinynet.inference.inference``."""

    def __init__(
        self,
        model,
        example_input=None,
        passes=None,
        column_block: int | None = None,
        winograd: bool = True,
        trace_on_call: int = 1,
    ):
        if not isinstance(model, Module):
            raise TypeError(
                f"inference: model must be a tinynet Module; got {type(model).__name__}"
            )
        self.passes = tuple(PASSES) if passes is None else tuple(passes)
        unknown = [name for name in self.passes if name not in PASSES]
        if unknown:
            raise ValueError(f"inference: passes must be among {sorted(PASSES)}; got {unknown}")
        self.column_block, self.winograd = column_block, bool(winograd)
        if not isinstance(trace_on_call, int) or trace_on_call < 1:
            raise ValueError(f"inference: trace_on_call must be an int >= 1; got {trace_on_call!r}")
        self.trace_on_call = trace_on_call
        self._calls: dict[tuple[int, ...], int] = {}
        self.dtype = self.example_shape = None  # set by the first input planned
        self._model = _snapshot(model)
        for module in self._model.modules():
            module.register_forward_hook(_drop_saved_arrays)
        self._programs: dict[tuple[int, ...], Program] = {}
        self._traced: dict[tuple[int, ...], list[PlannedOp]] = {}
        self._lock = threading.Lock()
        if example_input is not None:
            self._plan(_input_array(example_input, "example_input"))

    def __call__(self, x):
        """The model's eval-mode outputs for ``x`` (a Tensor or an ndarray), as the model
        returns them: a Tensor, or a tuple (namedtuple) of them; none requires grad."""
        x = self._check(_input_array(x, "x"))
        with self._lock:
            program = self._programs.get(x.shape)
            if program is not None:
                outputs = program.run(x)
            else:
                self._calls[x.shape] = self._calls.get(x.shape, 0) + 1
                eager = self._calls[x.shape] < self.trace_on_call
                outputs = self._run_eagerly(x) if eager else self._plan(x)
        return self._structure(outputs)

    # ------------------------------------------------------------------ inspection
    @property
    def ops(self) -> list[PlannedOp]:
        """The planned steps for the example input's shape, in the order they run."""
        return _planned_ops(self._programs[self._first_shape()])

    @property
    def traced_ops(self) -> list[PlannedOp]:
        """The eval forward's ops as traced, before any rewrite."""
        return self._traced[self._first_shape()]

    def _first_shape(self) -> tuple[int, ...]:
        if self.example_shape is None:
            raise RuntimeError("inference plan: nothing is planned yet; call the plan once, or "
                               "pass example_input to tinynet.inference")  # fmt: skip
        return self.example_shape

    def describe(self, scope: str | None = None) -> str:
        """The traced ops, then the planned steps, of the modules named ``scope`` (and those
        inside it; everything when None): what the plan did to that part of the graph."""
        inside = lambda op: (
            scope is None or any(name == scope or name.startswith(scope + ".") for name in op.scope)
        )
        before = [op.line() for op in self.traced_ops if inside(op)]
        after = [op.line() for op in self.ops if inside(op)]
        if not before and not after:
            modules = sorted({name for op in self.traced_ops for name in op.scope[:1]})
            raise ValueError(f"describe: no op ran in a module named {scope!r}; top-level "
                             f"modules: {modules}")  # fmt: skip
        title = "the whole network" if scope is None else scope
        return "\n".join(
            [f"{title}: {len(before)} traced ops", *before,
             f"{title}: {len(after)} planned steps", *after]
        )  # fmt: skip

    @property
    def arena_bytes(self) -> int:
        """The bytes of the example shape's buffer arena."""
        return self._programs[self._first_shape()].arena_bytes

    # ------------------------------------------------------------------ planning
    def _plan(self, x: np.ndarray) -> list[np.ndarray]:
        """Trace the snapshot on ``x``, build and keep its program; the traced outputs."""
        if self.example_shape is None:
            self.dtype, self.example_shape = x.dtype, x.shape
        with enable_grad():  # the trace needs the recorded graph, even inside no_grad()
            traced_input = Tensor(x, requires_grad=True)
            output = self._model(traced_input)
        tensors, self._layout = _flatten(output)
        record = trace(tensors, self._model)
        input_id = next(
            (leaf.id for leaf in record.leaves if leaf.value is traced_input), "no input"
        )
        graph = from_trace(record, input_id)
        self._traced[x.shape] = _planned_ops_of(graph.steps, graph.outputs)
        for name in self.passes:
            PASSES[name](graph)
        self._programs[x.shape] = Program(graph, x.shape, x.dtype, self.column_block, self.winograd)
        return [t.data for t in tensors]

    def _run_eagerly(self, x: np.ndarray) -> list[np.ndarray]:
        """The snapshot's eval forward on ``x``, op by op under no_grad: a call before its
        shape's ``trace_on_call``-th."""
        with no_grad():
            tensors, self._layout = _flatten(self._model(Tensor(x)))
        return [t.data for t in tensors]

    def _check(self, x: np.ndarray) -> np.ndarray:
        expected = self.example_shape
        if expected is None:
            return x
        if x.dtype != self.dtype:
            raise TypeError(f"plan(x): x has dtype {x.dtype} but the plan was made for "
                            f"{self.dtype} inputs (the example input's)")  # fmt: skip
        if x.ndim != len(expected):
            raise ValueError(f"plan(x): x must have {len(expected)} dimensions like the example "
                             f"input {expected}; got shape {x.shape}")  # fmt: skip
        if len(expected) > 1 and x.shape[1] != expected[1]:
            raise ValueError(f"plan(x): x must have {expected[1]} channels (dim 1) like the "
                             f"example input {expected}; got shape {x.shape}")  # fmt: skip
        return x

    def _structure(self, arrays: list[np.ndarray]):
        kind, slots = self._layout
        values = iter(Tensor._from_op(a, None) for a in arrays)
        if kind is None:
            return next(values)
        items = [None if slot is None else next(values) for slot in slots]
        return kind(*items) if hasattr(kind, "_fields") else kind(items)


def _snapshot(model: Module) -> Module:
    """A deep copy of ``model`` in eval mode: the plan's own weights. The model's forward hooks
    are shared with the copy, not copied (a hook bound to a trainer would drag the trainer, its
    data and locks into the copy); its backward hooks, which no inference runs, are left out."""
    memo: dict = {}
    for module in model.modules():
        for hook in (*module._forward_pre_hooks.values(), *module._forward_hooks.values()):
            memo[id(hook)] = hook
        memo[id(module._backward_hooks)] = OrderedDict()
    for parameter in model.parameters():
        if getattr(parameter, "_hooks", None) is not None:  # register_hook's gradient hooks
            memo[id(parameter._hooks)] = OrderedDict()
    return copy.deepcopy(model, memo).eval()


# What tinynet.trace reads from an op's Context; the rest is what its backward would need.
_TRACED_FIELDS = {"needs_input_grad", "fn", "parents", "inputs", "params", "scope", "released"}


def _drop_saved_arrays(module, args, output) -> None:
    """Forward hook on every module of the snapshot: the ops a module just recorded forget what
    they saved for a backward that never comes (inputs, argmax tables, ...), so a traced forward
    holds about what a no_grad one does, not a training forward's memory. Walks back from the
    outputs to the ops already stripped; the trace keeps each op's inputs, params and scope."""
    stack = [t._grad_node for t in _flatten(output)[0]] if _has_tensors(output) else []
    while stack:
        ctx = getattr(stack.pop(), "_ctx", None)
        if ctx is None or "_stripped" in vars(ctx):
            continue
        for key in [k for k in vars(ctx) if k not in _TRACED_FIELDS]:
            setattr(ctx, key, None)
        ctx._stripped = True
        stack.extend(ctx.inputs)


def _has_tensors(output) -> bool:
    items = output if isinstance(output, (tuple, list)) else [output]
    return any(isinstance(t, Tensor) for t in items) and all(
        t is None or isinstance(t, Tensor) for t in items
    )


def _input_array(x, name: str) -> np.ndarray:
    array = as_array(x)
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"inference: {name} must be a float Tensor or ndarray; got "
                        f"{type(x).__name__} of {getattr(array, 'dtype', None)}")  # fmt: skip
    return array


def _flatten(output):
    """(the output's Tensors, (its type or None for one Tensor, one slot per item: None where
    the item is None)), so ``Plan._structure`` rebuilds what the model returned."""
    if isinstance(output, Tensor):
        return [output], (None, None)
    if isinstance(output, (tuple, list)):
        tensors = [item for item in output if item is not None]
        if all(isinstance(t, Tensor) for t in tensors) and tensors:
            return tensors, (type(output), [None if i is None else 1 for i in output])
    raise TypeError(f"inference: the model must return a Tensor or a tuple of Tensors; got "
                    f"{type(output).__name__}")  # fmt: skip


def _name(value) -> str:
    if isinstance(value, Constant):
        return value.name
    return "None" if value is None else value


def _planned_ops_of(steps: list[Step], outputs) -> list[PlannedOp]:
    return [
        PlannedOp(s.id, s.op, tuple(_name(v) for v in s.inputs), tuple(s.shape), s.scope,
                  tuple(s.fused))
        for s in steps
    ]  # fmt: skip


def _planned_ops(program: Program) -> list[PlannedOp]:
    return _planned_ops_of(program.graph.steps, program.graph.outputs)


__all__ = ["INPUT", "Plan", "PlannedOp"]
