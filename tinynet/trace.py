"""One walk over the autograd graph behind a tensor: the record that ``tinynet.draw_graph`` draws
and that an exporter (ONNX, say) can translate op by op.

    out = model(x)
    trace = tinynet.trace(out, model)
    for op in trace.ops: print(op.id, op.op, op.inputs, op.shape, op.scope[-1:])

Every op a Function applies while recording keeps, on its ``ctx``: ``fn`` (the Function class),
``inputs`` (each positional input: a Tensor's graph node, constants as given), ``params`` (its
keyword arguments) and ``scope`` (the modules whose ``forward`` was running: ``Module.__call__``
keeps that stack). The walk follows ``ctx.inputs`` from the outputs back to the leaves;
parameters and buffers are named by identity through ``model.named_parameters()`` and
``named_buffers()``.

The record
----------
Trace
    ops:          list[OpRecord], topologically sorted: each after every op it reads.
    leaves:       list[LeafRecord], in order of first use.
    outputs:      tuple[str, ...], the ids of the traced outputs.
    module_types: dict[str, str], dotted module name -> class name, for each module in a scope.
OpRecord
    id:      'op0', 'op1', ... (unique in the trace)
    fn:      the Function class (``Conv2dFunction``); ``op`` is its name without 'Function'
    inputs:  one entry per positional input of ``fn.forward``: the id of an op or leaf, or None
             where the input was None (a conv without bias)
    params:  dict, the keyword arguments of ``fn.apply`` (stride, padding, dim, ...)
    shape, dtype: of the output
    scope:   dotted module names, outermost first, e.g. ('inception3a', 'inception3a.branch2',
             'inception3a.branch2.1', 'inception3a.branch2.1.conv'); () without a model
    tensor:  the output's graph node (``tinynet.tensor.GraphNode``: shape, dtype and
             ``register_hook``, where gradient hooks attach; not the values)
LeafRecord
    id:      'leaf0', 'leaf1', ...
    kind:    'parameter' | 'buffer' | 'input' (any other Tensor) | 'constant' (a non-Tensor)
    name:    the dotted parameter or buffer name; 'input', 'input1', ... for inputs;
             repr(value) for constants
    shape, dtype: of the value (a constant's as NumPy sees it)
    value:   the Tensor or constant itself

The identity ops that full backward hooks insert (``BackwardHookIdentityFunction``) are hook
plumbing, not the user's computation: the trace reads through them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinynet.function import Function
from tinynet.nn.hooks import BackwardHookIdentityFunction
from tinynet.nn.module import Module
from tinynet.tensor import GraphNode, Tensor, _topological_order, as_array


@dataclass
class OpRecord:
    id: str
    fn: type[Function]
    inputs: tuple[str | None, ...]
    params: dict
    shape: tuple[int, ...]
    dtype: np.dtype
    scope: tuple[str, ...]
    tensor: GraphNode = field(repr=False)

    @property
    def op(self) -> str:
        return self.fn.__name__.removesuffix("Function")


@dataclass
class LeafRecord:
    id: str
    kind: str
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    value: object = field(repr=False)


@dataclass
class Trace:
    ops: list[OpRecord]
    leaves: list[LeafRecord]
    outputs: tuple[str, ...]
    module_types: dict[str, str]

    def __getitem__(self, node_id: str) -> OpRecord | LeafRecord:
        """The op or leaf with this id."""
        for record in (*self.ops, *self.leaves):
            if record.id == node_id:
                return record
        raise KeyError(node_id)


def output_tensors(output, caller: str) -> list[Tensor]:
    """``output`` as a list of Tensors: a Tensor, or a tuple/list (a model's namedtuple of main
    and aux logits) of them; anything else is a one-line TypeError naming ``caller``."""
    outputs = list(output) if isinstance(output, (tuple, list)) else [output]
    if not outputs or not all(isinstance(t, Tensor) for t in outputs):
        raise TypeError(
            f"{caller}: output must be a tinynet Tensor (or a tuple of them) made by running a "
            f"model or ops; got {type(output).__name__}"
        )
    for tensor in outputs:
        if tensor._ctx is not None and tensor._ctx.released:
            raise RuntimeError(
                f"{caller}: backward() has already freed the graph behind this output; call "
                f"{caller} before backward, or pass retain_graph=True to backward"
            )
    if all(t._ctx is None for t in outputs):
        raise ValueError(
            f"{caller}: the output has no recorded graph: it was computed under no_grad(), or "
            "from tensors none of which requires grad"
        )
    return outputs


def trace(output, model: Module | None = None) -> Trace:
    """Record the graph behind ``output`` (a Tensor or a tuple of them); with ``model``, name
    its parameters, buffers and the modules each op ran in."""
    outputs = output_tensors(output, "trace")
    if model is not None and not isinstance(model, Module):
        raise TypeError(f"trace: model must be a tinynet Module; got {type(model).__name__}")
    names = _Names(model)
    ids: dict[int, str] = {}  # id(Tensor or constant) -> record id
    ops: list[OpRecord] = []
    leaves: list[LeafRecord] = []

    def leaf(value) -> str:
        if id(value) not in ids:
            kind, name = names.leaf(value)
            array = np.asarray(as_array(value))
            ids[id(value)] = f"leaf{len(leaves)}"
            leaves.append(
                LeafRecord(ids[id(value)], kind, name, array.shape, array.dtype, value)
            )
        return ids[id(value)]

    # Reversed, so the walk reaches each op's first input first: branches in the order written.
    roots = [t._grad_node for t in outputs]
    for node in _topological_order(roots, inputs_of=lambda ctx: reversed(ctx.inputs)):
        ctx = node._ctx
        if ctx is None:
            leaf(node)
            continue
        inputs = tuple(
            None if x is None else ids[id(x)] if isinstance(x, (Tensor, GraphNode)) else leaf(x)
            for x in ctx.inputs
        )
        if ctx.fn is BackwardHookIdentityFunction:
            ids[id(node)] = inputs[0]
            continue
        ids[id(node)] = f"op{len(ops)}"
        ops.append(
            OpRecord(
                ids[id(node)],
                ctx.fn,
                inputs,
                dict(ctx.params),
                node.shape,
                node.dtype,
                names.scope(ctx.scope),
                node,
            )
        )
    module_types = {name: type(module).__name__ for name, module in names.modules.items()}
    used = {name for op in ops for name in op.scope}
    return Trace(
        ops,
        leaves,
        tuple(ids[id(t._grad_node)] for t in outputs),
        {name: kind for name, kind in module_types.items() if name in used},
    )


class _Names:
    """Dotted names of a model's modules, parameters and buffers, looked up by identity."""

    def __init__(self, model: Module | None):
        self.modules = dict(model.named_modules()) if model is not None else {}
        self.module_names = {id(module): name for name, module in self.modules.items() if name}
        self.parameters = (
            {id(p): name for name, p in model.named_parameters()} if model is not None else {}
        )
        self.buffers = (
            {id(b): name for name, b in model.named_buffers()} if model is not None else {}
        )
        self.inputs = 0

    def scope(self, modules: tuple) -> tuple[str, ...]:
        return tuple(self.module_names[id(m)] for m in modules if id(m) in self.module_names)

    def leaf(self, value) -> tuple[str, str]:
        """(kind, name) of a leaf value."""
        if id(value) in self.parameters:
            return "parameter", self.parameters[id(value)]
        if isinstance(value, Tensor) and id(value.data) in self.buffers:
            return "buffer", self.buffers[id(value.data)]  # passed as an array, wrapped
        if id(value) in self.buffers:
            return "buffer", self.buffers[id(value)]
        if isinstance(value, Tensor):
            self.inputs += 1
            return "input", "input" if self.inputs == 1 else f"input{self.inputs - 1}"
        return "constant", repr(value)
