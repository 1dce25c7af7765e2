"""Export a tinynet model to ONNX: run its eval-mode forward once, walk the graph with
``tinynet.trace`` and write each recorded op as standard ONNX nodes.

    tinynet.onnx.export(model, np.zeros((1, 3, 224, 224), np.float32), "googlenet.onnx")

Parameters and buffers become initializers named by their state-dict keys; the graph input is
'input' and the outputs 'output' ('output1', ... for more), with a dynamic batch axis 'N'.
Translation, op by op (tinynet -> ONNX):

    Conv2d            Conv (pads, strides; group 1)
    ReLU              Relu
    MaxPool2d         MaxPool (ceil_mode, pads)       inside an nn.MaxPool2d
    AvgPool2d         AveragePool (count_include_pad) inside an nn.AvgPool2d
    AdaptiveAvgPool2d GlobalAveragePool (1x1 output), else AveragePool when the size divides
    LocalResponseNorm LRN
    BatchNorm         BatchNormalization (eval mode)
    Concat            Concat
    Linear            Gemm (transB=1);  MatMul  MatMul
    Reshape           Flatten (N, rest), else Reshape (batch kept as 0)
    Add Sub Mul Div   Add Sub Mul Div (a number in the forward becomes a Constant node)
    Softmax           Softmax;  LogSoftmax  LogSoftmax

The pools' Functions hold window tables, not the arguments that made them, so their ONNX
attributes are read from the pooling module the op ran in (its scope); a pool called outside
one, like any op missing above, is a one-line ``OnnxExportError`` naming the op and its module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tinynet import io, nn
from tinynet.function import enable_grad
from tinynet.tensor import as_array, tensor
from tinynet.trace import output_tensors, trace

DEFAULT_OPSET = 17


class OnnxExportError(ValueError):
    """A model (or an op in it) that cannot be written as ONNX."""


def export(
    model: nn.Module, example_input, path, opset: int = DEFAULT_OPSET, metadata=None
) -> Path:
    """Trace ``model``'s eval-mode forward on ``example_input`` (N, C, H, W) and write it to
    ``path`` as ONNX at ``opset`` (13..21); returns the path. The model's training mode is
    restored afterwards. ``metadata``: str -> str pairs kept in the file's metadata_props
    (``tinynet export`` of a checkpoint keeps how its images are read there)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"export: model must be a tinynet Module; got {type(model).__name__}")
    if not isinstance(opset, int) or not 13 <= opset <= 21:
        raise ValueError(f"export: opset must be an int from 13 to 21; got {opset!r}")
    array = np.asarray(as_array(example_input))
    if array.ndim < 1 or array.dtype != np.float32:
        raise ValueError(
            "export: example_input must be a float32 array with a batch axis; got "
            f"{array.dtype} of shape {array.shape}"
        )
    proto = to_onnx(model, array, opset)
    helper.set_model_props(proto, dict(metadata or {}))
    with io.atomic_write(path) as file:
        file.write(proto.SerializeToString())
    return Path(path)


def to_onnx(model: nn.Module, example_input: np.ndarray, opset: int = DEFAULT_OPSET):
    """The checked ``onnx.ModelProto`` of ``model``'s eval-mode forward on ``example_input``."""
    training = model.training
    model.eval()
    try:
        # The input requires grad so every op that depends on it is recorded, whatever the
        # parameters' flags (the same choice as `tinynet graph`); eval mode leaves out dropout.
        with enable_grad():
            outputs = output_tensors(model(tensor(example_input, requires_grad=True)), "export")
        recorded = trace(tuple(outputs), model)
    finally:
        model.train(training)
    graph = _GraphWriter(model, recorded)
    for op in recorded.ops:
        graph.write(op)
    proto = helper.make_model(
        graph.finish(),
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="tinynet",
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto


class _GraphWriter:
    """Collects the nodes, initializers, input and outputs of one traced model."""

    def __init__(self, model, recorded):
        self.model, self.trace = model, recorded
        self.modules = dict(model.named_modules())
        self.buffers = {id(b): name for name, b in model.named_buffers()}
        self.nodes, self.initializers, self.inputs = [], {}, []
        self.names = {}  # trace id -> ONNX value name
        for leaf in recorded.leaves:
            if leaf.kind in ("parameter", "buffer"):
                value = as_array(leaf.value)
                self.names[leaf.id] = self.initializer(leaf.name, value)
            elif leaf.kind == "input":
                if self.inputs:
                    raise OnnxExportError(
                        "export: the traced graph reads a second tensor besides the input "
                        f"({leaf.name}, shape {leaf.shape}); tinynet exports one-input models"
                    )
                self.names[leaf.id] = "input"
                self.inputs.append(_value_info("input", leaf.shape))
            else:  # a number in the forward (a residual scale): a Constant, not a weight
                self.names[leaf.id] = leaf.id
                self.nodes.append(helper.make_node(
                    "Constant", [], [leaf.id], name=leaf.id,
                    value=numpy_helper.from_array(np.asarray(leaf.value, np.float32)),
                ))  # fmt: skip

    def initializer(self, name: str, value, dtype=np.float32) -> str:
        self.initializers[name] = numpy_helper.from_array(np.asarray(value, dtype), name)
        return name

    def buffer(self, array, op_name: str) -> str:
        """The initializer of a buffer passed as a keyword (BatchNorm's running statistics)."""
        if id(array) in self.buffers:
            return self.initializer(self.buffers[id(array)], array)
        return self.initializer(f"{op_name}.{len(self.initializers)}", array)

    def node(self, op_type, inputs, record, **attributes) -> None:
        out = self.names[record.id] = record.id
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [out], name=record.id, **attributes)
        )

    def write(self, record) -> None:
        """Write one recorded op through its entry in ``WRITERS``, the op table."""
        inputs = [self.names[i] for i in record.inputs if i is not None]
        writer = WRITERS.get(record.op)
        if writer is None:
            why = NOT_EXPORTED.get(record.op, "it has no ONNX translation here")
            self.cannot(record, f"tinynet's {record.op} op is not exported: {why}")
        writer(self, record, inputs)

    def conv(self, record, inputs) -> None:
        (top, bottom), (left, right) = record.params["padding"]
        self.node("Conv", inputs, record, strides=list(record.params["stride"]),
                  pads=[top, left, bottom, right])  # fmt: skip

    def lrn(self, record, inputs) -> None:
        p = record.params
        if p["size"] % 2 == 0:  # ONNX centres an even window one channel later
            self.cannot(record, f"ONNX's LRN sums a different window for even size {p['size']}")
        self.node("LRN", inputs, record, size=p["size"], alpha=p["alpha"], beta=p["beta"],
                  bias=p["k"])  # fmt: skip

    def batch_norm(self, record, inputs) -> None:
        channels = record.shape[1]
        scale = inputs[1] if record.inputs[1] else self.initializer(
            f"{record.id}.weight", np.ones(channels))
        shift = inputs[2] if record.inputs[2] else self.initializer(
            f"{record.id}.bias", np.zeros(channels))  # fmt: skip
        statistics = [self.buffer(record.params[k], record.id)
                      for k in ("running_mean", "running_var")]  # fmt: skip
        self.node("BatchNormalization", [inputs[0], scale, shift, *statistics], record,
                  epsilon=record.params["eps"])  # fmt: skip

    def reshape(self, record, inputs) -> None:
        source = self.trace[record.inputs[0]].shape
        if len(record.shape) == 2 and record.shape[0] == source[0]:
            return self.node("Flatten", inputs, record, axis=1)
        shape = (0, *record.shape[1:]) if record.shape[:1] == source[:1] else record.shape
        target = self.initializer(f"{record.id}.shape", shape, np.int64)
        self.node("Reshape", [inputs[0], target], record)

    def along_dim(self, record, inputs) -> None:
        """Concat, Softmax, LogSoftmax: the same name, with tinynet's ``dim`` as ``axis``."""
        self.node(record.op, inputs, record, axis=record.params["dim"])

    def same_name(self, record, inputs) -> None:
        self.node(_SAME_NAME[record.op], inputs, record)

    def pool(self, record, inputs) -> None:
        module = self.modules.get(record.scope[-1]) if record.scope else None
        h, w = self.trace[record.inputs[0]].shape[2:]
        oh, ow = record.shape[2:]
        if record.op == "AdaptiveAvgPool2d":
            if (oh, ow) == (1, 1):
                return self.node("GlobalAveragePool", inputs, record)
            if h % oh or w % ow:
                self.cannot(record, f"an adaptive pool from {h}x{w} to {oh}x{ow} (the sizes do "
                            "not divide) has no ONNX op")  # fmt: skip
            kernel = [h // oh, w // ow]
            return self.node("AveragePool", inputs, record, kernel_shape=kernel, strides=kernel)
        expected = nn.MaxPool2d if record.op == "MaxPool2d" else nn.AvgPool2d
        if not isinstance(module, expected):
            self.cannot(record, f"a {record.op} called outside an nn.{expected.__name__} "
                        "(its attributes are read from that module)")  # fmt: skip
        kernel = _pair(module.kernel_size)
        stride = kernel if module.stride is None else _pair(module.stride)
        pad = _pair(module.padding)
        attributes = dict(kernel_shape=kernel, strides=stride, pads=[*pad, *pad])
        sizes = zip((h, w), kernel, stride, pad)
        if module.ceil_mode and [-(-(n + 2 * p - k) // s) + 1 for n, k, s, p in sizes] == [oh, ow]:
            attributes["ceil_mode"] = 1
        elif module.ceil_mode:
            # ONNX's ceil_mode keeps a last window that starts in the padding, PyTorch's drops
            # it: the pads after each axis are written out to give tinynet's size instead.
            end = [max(p, (o - 1) * s + k - n - p)
                   for p, o, s, k, n in zip(pad, (oh, ow), stride, kernel, (h, w))]  # fmt: skip
            if any(e >= k for e, k in zip(end, kernel)):
                self.cannot(record, f"its ceil_mode windows need end pads {end} >= kernel {kernel}")
            attributes["pads"] = [*pad, *end]
        if record.op == "AvgPool2d":
            if module.count_include_pad and attributes["pads"][2:] != pad:
                self.cannot(record, "with ceil_mode and count_include_pad its last windows' "
                            "divisors stop at the padding, which ONNX cannot say")  # fmt: skip
            attributes["count_include_pad"] = int(bool(module.count_include_pad))
        self.node("MaxPool" if record.op == "MaxPool2d" else "AveragePool", inputs, record,
                  **attributes)  # fmt: skip

    def cannot(self, record, why: str):
        module = record.scope[-1] if record.scope else "the model's own forward"
        kind = self.trace.module_types.get(module, "")
        raise OnnxExportError(
            f"export: cannot write {record.op} (op {record.id}, in module "
            f"{module}{f' ({kind})' if kind else ''}) as ONNX: {why}"
        )

    def finish(self):
        outputs = [
            _value_info("output" if k == 0 else f"output{k}", self.trace[i].shape)
            for k, i in enumerate(self.trace.outputs)
        ]
        for value, traced in zip(outputs, self.trace.outputs):
            self.nodes.append(helper.make_node("Identity", [self.names[traced]], [value.name]))
        return helper.make_graph(
            self.nodes, "tinynet", self.inputs, outputs, list(self.initializers.values())
        )


_SAME_NAME = {"ReLU": "Relu", "Add": "Add", "Sub": "Sub", "Mul": "Mul", "Div": "Div",
              "MatMul": "MatMul", "Neg": "Neg", "Exp": "Exp", "Log": "Log"}  # fmt: skip

# The op table: tinynet's op name (a Function's name without "Function") -> the _GraphWriter
# method that writes it. An op missing here cannot be exported: ``NOT_EXPORTED`` says why.
WRITERS = {
    "Conv2d": _GraphWriter.conv,
    "MaxPool2d": _GraphWriter.pool,
    "AvgPool2d": _GraphWriter.pool,
    "AdaptiveAvgPool2d": _GraphWriter.pool,
    "LocalResponseNorm": _GraphWriter.lrn,
    "BatchNorm": _GraphWriter.batch_norm,
    "Linear": lambda graph, record, inputs: graph.node("Gemm", inputs, record, transB=1),
    "Reshape": _GraphWriter.reshape,
    "Concat": _GraphWriter.along_dim,
    "Softmax": _GraphWriter.along_dim,
    "LogSoftmax": _GraphWriter.along_dim,
    **{op: _GraphWriter.same_name for op in _SAME_NAME},
}

# The ops with no entry above, and why: an inference graph never records them, or nothing in
# the Inception family's forward uses them.
NOT_EXPORTED = {
    "Dropout": "eval mode records no dropout (it is the identity there)",
    "SyncBatchNorm": "training only: in eval mode a synchronised BatchNorm runs BatchNorm",
    "AllReduce": "training only: it sums over MPI processes",
    "CrossEntropy": "a training loss, not part of a model's forward",
    "BackwardHookIdentity": "records a module's backward hooks; the identity in a forward",
    "Sum": "no model's forward reduces with it",
    "Mean": "no model's forward reduces with it (pools are exported as pools)",
    "Max": "no model's forward reduces with it (pools are exported as pools)",
    "Permute": "no model's forward permutes axes",
    "Index": "no model's forward slices a tensor",
    "Stack": "no model's forward stacks tensors",
    "Pad": "no model's forward pads outside a convolution or pool",
    "Pow": "no model's forward raises to a power outside LRN",
    "Cast": "an export is float32 throughout",
    "Where": "no model's forward selects elementwise",
}


def _pair(value) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * 2


def _value_info(name: str, shape) -> onnx.ValueInfoProto:
    """A float32 value whose first axis is the dynamic batch 'N'."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape[1:]])
