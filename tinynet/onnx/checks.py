"""Checks on an ONNX model that read no tensor data: what a file may declare, checked before
anything is built from it, and ONNX's own checker, run on a copy without the weights.

A file of a few hundred bytes can declare a graph input of 30000 x 30000 pixels, 10^9 outputs, a
name of a million dots (a million nested modules) or a million nodes; each costs memory and time
out of all proportion to the file once it is built. ``check_bounds`` walks the whole model
(subgraphs included), reading only names, counts and shapes, and refuses one that declares more
than this (a large real model, GoogLeNet's 300 nodes or an LLM's 20,000, is far below each):

    a name                      MAX_NAME_LENGTH characters; an initializer's MAX_KEY_DEPTH
                                dot-separated parts, all of them MAX_MODULES modules together
    nodes, initializers         MAX_NODES, MAX_INITIALIZERS
    node inputs and outputs,    MAX_NODE_VALUES, MAX_ATTRIBUTE_VALUES over the whole model
    attribute values
    a shape                     rank MAX_RANK, each dimension at most MAX_DIM
    a graph input or output     MAX_DECLARED_VALUES values: the largest image the checkpoint
                                path reads (``tinynet.train``'s MAX_CHANNELS channels of
                                MAX_IMAGE_SIZE x MAX_IMAGE_SIZE pixels)

and every node must make an output that no other node, input or initializer makes.
"""

from __future__ import annotations

import re

import onnx
from onnx import AttributeProto, TensorProto

from tinynet.train import MAX_CHANNELS, MAX_IMAGE_SIZE

MAX_NAME_LENGTH = 1024
MAX_KEY_DEPTH = 32
MAX_MODULES = 100_000
MAX_NODES = MAX_INITIALIZERS = 100_000
MAX_NODE_VALUES = MAX_ATTRIBUTE_VALUES = 1_000_000
MAX_METADATA = 1024  # metadata entries; tinynet's export writes three
MAX_RANK = 32
MAX_DIM = 2**31 - 1
MAX_DECLARED_VALUES = MAX_CHANNELS * MAX_IMAGE_SIZE**2

# What an op raises on attributes or input shapes it cannot take (a stride of 0, an axis past
# the rank, a list too short): reported as an OnnxImportError naming the file and the node.
NODE_ERRORS = (ArithmeticError, AttributeError, LookupError, TypeError, ValueError)


def node_label(node: onnx.NodeProto, index: int) -> str:
    """'node NAME (OP)', or 'node #INDEX (OP)' for a node without a name."""
    name = repr(node.name[:80]) if node.name else f"#{index}"
    return f"node {name} ({node.op_type})"


def check_bounds(proto: onnx.ModelProto, fail) -> None:
    """Call ``fail(problem)`` for the first thing ``proto`` declares beyond the module's bounds,
    or for a graph that is empty or makes a name twice or a node that makes no output."""
    if not proto.HasField("graph"):
        fail("not an ONNX model: it holds no graph")
    if len(proto.metadata_props) > MAX_METADATA:
        fail(f"{len(proto.metadata_props):,} metadata entries; tinynet reads at most "
             f"{MAX_METADATA:,}")  # fmt: skip
    for entry in proto.metadata_props:
        _check_name(entry.key, "a metadata entry", fail)
        if not isinstance(entry.value, str):
            fail(f"metadata entry {entry.key!r} holds text that is not UTF-8")
    totals = dict.fromkeys(("node", "initializer", "node input and output", "attribute value"), 0)
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        _count(totals, "node", len(graph.node), MAX_NODES, fail)
        _count(totals, "initializer", len(graph.initializer), MAX_INITIALIZERS, fail)
        if graph.sparse_initializer:
            fail(f"initializer {graph.sparse_initializer[0].values.name[:80]!r} is a sparse "
                 "tensor, which tinynet does not read")  # fmt: skip
        for value in (*graph.input, *graph.output, *graph.value_info):
            _check_name(value.name, "a graph input, output or value_info", fail)
            dims = value.type.tensor_type.shape.dim
            _check_shape([d.dim_value for d in dims], f"value {value.name!r}", fail)
            for d in dims:
                _check_name(d.dim_param, f"an axis of value {value.name!r}", fail)
        for index, tensor in enumerate(graph.initializer):
            _check_tensor(tensor, f"initializer #{index}", fail)
        for index, node in enumerate(graph.node):
            graphs += _check_node(node, index, totals, fail)
        _check_made_once(graph, fail)
    _check_module_count(proto.graph, fail)
    _check_declared_sizes(proto.graph, fail)


def _count(totals: dict, what: str, more: int, limit: int, fail) -> None:
    totals[what] += more
    if totals[what] > limit:
        fail(f"more than {limit:,} {what}s; tinynet reads at most {limit:,}")


def _check_name(name: str, where: str, fail) -> None:
    if not isinstance(name, str):  # protobuf hands out text that is not UTF-8 as bytes
        fail(f"{where} has a name that is not UTF-8 text ({bytes(name[:40])!r})")
    if len(name) > MAX_NAME_LENGTH:
        fail(f"{where} has a name of {len(name):,} characters ({name[:40]!r}...); tinynet "
             f"reads names of at most {MAX_NAME_LENGTH:,}")  # fmt: skip


def _check_shape(dims, what: str, fail) -> None:
    if len(dims) > MAX_RANK:
        fail(f"{what} has {len(dims)} dimensions; tinynet reads at most {MAX_RANK}")
    for d in dims:
        if not 0 <= d <= MAX_DIM:
            fail(f"{what} declares a dimension of {d:,}; a dimension must be in "
                 f"[0, {MAX_DIM:,}]")  # fmt: skip


def _check_tensor(tensor: TensorProto, where: str, fail) -> None:
    _check_name(tensor.name, where, fail)
    _check_shape(tensor.dims, f"{where} ({tensor.name!r})", fail)


def _check_node(node: onnx.NodeProto, index: int, totals: dict, fail) -> list:
    """Check one node's names, output and attributes; its subgraphs (an If's branches)."""
    names = (node.name, node.op_type, node.domain, *node.input, *node.output)
    if not all(isinstance(name, str) and len(name) <= MAX_NAME_LENGTH for name in names):
        for name in names:
            _check_name(name, node_label(node, index), fail)
    _count(totals, "node input and output", len(node.input) + len(node.output),
           MAX_NODE_VALUES, fail)  # fmt: skip
    if not node.output or not node.output[0]:
        fail(f"{node_label(node, index)} makes no output")
    subgraphs = []
    for attribute in node.attribute:
        label = node_label(node, index)
        _check_name(attribute.name, f"an attribute of {label}", fail)
        _count(totals, "attribute value", 1 + len(attribute.ints) + len(attribute.floats)
               + len(attribute.strings) + len(attribute.tensors) + len(attribute.graphs),
               MAX_ATTRIBUTE_VALUES, fail)  # fmt: skip
        if attribute.type in (AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS):
            fail(f"{label}: attribute {attribute.name!r} is a sparse tensor, which tinynet "
                 "does not read")  # fmt: skip
        for tensor in (*([attribute.t] if attribute.HasField("t") else []), *attribute.tensors):
            _check_tensor(tensor, f"{label} attribute {attribute.name!r}", fail)
        subgraphs += [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]
    return subgraphs


def _check_made_once(graph: onnx.GraphProto, fail) -> None:
    """Each name is made once: by a graph input, an initializer or one node's output."""
    made = {value.name: "a graph input" for value in graph.input}
    made.update((tensor.name, "an initializer") for tensor in graph.initializer)  # also inputs
    for index, node in enumerate(graph.node):
        for name in filter(None, node.output):
            if name in made:
                first = made[name]  # a node's index, or what else made it
                first = node_label(graph.node[first], first) if isinstance(first, int) else first
                fail(f"{node_label(node, index)} makes {name!r}, which {first} already makes")
            made[name] = index


def _check_module_count(graph: onnx.GraphProto, fail) -> None:
    """The initializers' names nest no deeper than MAX_KEY_DEPTH and make no more than
    MAX_MODULES modules ('a.b.c' makes 'a' and 'a.b'), counted before any is made."""
    modules, made = {}, 0
    for tensor in graph.initializer:
        *path, _ = tensor.name.split(".")
        if len(path) >= MAX_KEY_DEPTH:
            fail(f"initializer {tensor.name[:80]!r} has {len(path) + 1} dot-separated parts; "
                 f"tinynet nests modules at most {MAX_KEY_DEPTH} deep")  # fmt: skip
        level = modules
        for part in path:
            if part not in level:
                level[part], made = {}, made + 1
            level = level[part]
        if made > MAX_MODULES:
            fail(f"the initializers' names make more than {MAX_MODULES:,} modules; tinynet "
                 f"makes at most {MAX_MODULES:,}")  # fmt: skip


def _check_declared_sizes(graph: onnx.GraphProto, fail) -> None:
    """A graph input (not an initializer) or output declares no more values than the largest
    image tinynet reads; axes without a fixed size count as 1."""
    initializers = {tensor.name for tensor in graph.initializer}
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            if value.name in initializers:
                continue
            dims = [d.dim_value if d.HasField("dim_value") else None
                    for d in value.type.tensor_type.shape.dim]  # fmt: skip
            count = 1
            for d in dims:
                count *= d or 1
            if count > MAX_DECLARED_VALUES:
                fail(f"the graph's {kind} {value.name!r} declares shape "
                     f"{tuple(dims)} ({count:,} values); tinynet reads at most "
                     f"{MAX_DECLARED_VALUES:,} values ({MAX_CHANNELS} channels of "
                     f"{MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE} pixels)")  # fmt: skip


def run_checker(proto: onnx.ModelProto, fail) -> None:
    """ONNX's checker on ``proto`` without its tensors' data (see ``without_data``): schemas,
    attribute types, single assignment, opsets; ``fail(problem)`` names the node it was on."""
    try:
        onnx.checker.check_model(without_data(proto))
    except UnicodeDecodeError:  # the checker's message quotes a text field that is not UTF-8
        fail("not a valid ONNX model: it holds text that is not UTF-8")
    except onnx.checker.ValidationError as error:
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        problem = lines[0] if lines else "invalid"
        context = re.search(r"Bad node spec for node\. Name: (.*) OpType: (\S+)", str(error))
        if context:
            name, op_type = context.groups()
            matches = [node_label(node, index) for index, node in enumerate(proto.graph.node)
                       if node.name == name.strip() and node.op_type == op_type]  # fmt: skip
            where = matches[0] if len(matches) == 1 else f"a {op_type} node"
            problem = f"{where}: {problem}"
        fail(f"not a valid ONNX model: {problem}")


def without_data(message):
    """A copy of ``message`` (a ModelProto or any part of one) in which every tensor is a
    zero-element stand-in with its name and data type: all the checker needs to check the
    graph, with no copy of the weights, and no external-data file for it to open."""
    if isinstance(message, TensorProto):
        return TensorProto(name=message.name, data_type=message.data_type, dims=[0])
    copy = type(message)()
    if isinstance(message, onnx.NodeProto) and not any(map(_holds_data, message.attribute)):
        copy.CopyFrom(message)  # most nodes: copied whole, at protobuf's speed
        return copy
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            if field.is_repeated:
                getattr(copy, field.name).extend(value)
            else:
                setattr(copy, field.name, value)
        elif field.is_repeated:
            getattr(copy, field.name).extend(without_data(item) for item in value)
        else:
            getattr(copy, field.name).CopyFrom(without_data(value))
    return copy


def _holds_data(attribute: AttributeProto) -> bool:
    """Whether an attribute holds a tensor or a graph (whatever its declared type)."""
    return bool(attribute.HasField("t") or attribute.HasField("g") or attribute.tensors
                or attribute.graphs or attribute.HasField("sparse_tensor")
                or attribute.sparse_tensors)  # fmt: skip
