"""Read an ONNX file (tinynet's or another tool's) into a tinynet Module that runs its graph with
tinynet's functional ops; the float initializers (but 0-d ones) become trainable Parameters.

    model = tinynet.onnx.load("googlenet.onnx")      # an OnnxModule, in eval mode
    logits = model(images)                            # tinynet ops, gradients included

Nothing in the file executes: each node is looked up in ``_OPS`` (ONNX op -> tinynet op) or
``fold.FOLDS`` (shape arithmetic, worked out in NumPy once per input shape: see
``tinynet.onnx.fold``), and anything else is a one-line ``OnnxImportError`` naming the file, the
node and the problem. Supported (default domain, opsets 13..21, float32 data, int64 shapes):

    Conv (group 1, dilation 1)  Relu  MaxPool  AveragePool (2-D windows, and 1-D and 3-D ones
    that pool one axis or pair)  GlobalAveragePool  LRN (odd size)  BatchNormalization
    (inference)  Concat  Gemm  MatMul  Flatten  Reshape  Pad (constant)  Transpose  Squeeze
    Unsqueeze  Slice  Cast (to float)  ReduceMean  Add  Sub  Mul  Div  Pow  Softmax  LogSoftmax
    Dropout (inference)  Identity  Constant
    and on shapes and constants only: Shape  Gather  Range  ConstantOfShape  Equal  Where  If

so PyTorch's exports, in its TorchScript mode and its torch.export mode, import as written.
Sizes are checked before allocation: the file must fit protobuf's 2 GiB, and each tensor's bytes
must match its declared shape before it becomes an array. Initializers in an external-data file
(``model.onnx.data``, the torch.export exporter's default) are read only from the model's own
folder, within the file's bounds (see ``tinynet.onnx.external_data``); anything else is refused.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

from tinynet import functional as F
from tinynet import io, nn
from tinynet.onnx import checks, fold
from tinynet.onnx.external_data import ExternalData, ExternalDataError
from tinynet.ops.pool import pool_output_size
from tinynet.tensor import Tensor, as_tensor
from tinynet.train import MAX_CLASSES, TrainConfig

OPSETS = range(13, 22)
MAX_FILE_BYTES = 2**31 - 1  # protobuf's limit for one message
_DTYPES = {TensorProto.FLOAT: np.float32, TensorProto.INT64: np.int64}
MAX_SETTING_CHARS = 64 * MAX_CLASSES  # 'tinynet.classes': names of 64 characters on average


class OnnxImportError(ValueError):
    """An ONNX file tinynet cannot read or run; the message names the file and the problem."""


def load(path) -> OnnxModule:
    """The tinynet Module (eval mode) that runs the ONNX graph in ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load: no such ONNX file: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise OnnxImportError(
            f"{path}: {size} bytes is more than an ONNX protobuf can hold (2 GiB)"
        )
    if size == 0:
        raise OnnxImportError(f"{path} is empty, not an ONNX model")
    try:
        proto = onnx.load_model_from_string(path.read_bytes())
    except (DecodeError, RuntimeWarning, ValueError) as error:
        if "alloc failed" in str(error):  # upb's arena: the file is fine, the memory is not
            raise MemoryError(f"{path}: parsing its {size:,} bytes needs more memory") from None
        raise OnnxImportError(
            f"{path} is not a valid ONNX file (malformed protobuf: {error})"
        ) from None
    return OnnxModule(proto, str(path), path.parent).eval()


def convert_onnx(src, dst, log=None) -> dict:
    """Write the weights of the ONNX model ``src`` (its state dict: Parameters and buffers by
    initializer name) to ``dst`` with ``tinynet.io.save``; returns the state dict. ``log`` is
    accepted for ``convert_torch_checkpoint``'s signature and has nothing to say."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"convert_onnx: {dst} is the source file; choose another path")
    state = load(src).state_dict()
    io.save(state, dst)
    return state


@dataclass(frozen=True)
class ImageSettings:
    """How ``tinynet predict`` reads images for an ONNX model: from the metadata ``tinynet
    export`` writes for a checkpoint, else the graph's input shape, no normalisation and the
    class numbers as names."""

    channels: int
    input_size: int
    mean: list
    std: list
    classes: list


def load_for_prediction(path) -> tuple[OnnxModule, ImageSettings]:
    """The model in ``path`` and how to read the images it classifies."""
    model = load(path)
    _, channels, height, width = (*model.input_shape, None, None, None, None)[:4]
    if len(model.input_shape) != 4 or None in (channels, height) or height != width:
        model.fail(f"predict needs a fixed square image input (N, C, S, S); the graph's input "
                   f"{model.input_name!r} has shape {model.input_shape}")  # fmt: skip
    if len(model.output_names) != 1:
        model.fail(f"predict needs a graph with one output; it has {len(model.output_names)}")
    outputs = model.output_shape[-1] if len(model.output_shape) == 2 else None
    if outputs is not None and outputs > MAX_CLASSES:  # before a name is made for each
        model.fail(f"the graph's output {model.output_names[0]!r} has shape "
                   f"{model.output_shape}: {outputs:,} classes; predict reads at most "
                   f"{MAX_CLASSES:,}")  # fmt: skip
    classes = _setting(model, "classes", None)
    if classes is None and not outputs:
        model.fail(f"predict needs the number of classes: the graph's output "
                   f"{model.output_names[0]!r} has shape {model.output_shape}, not a fixed "
                   "(N, classes)")  # fmt: skip
    classes = [str(k) for k in range(outputs)] if classes is None else classes
    mean = _setting(model, "mean", [0.0] * channels)
    std = _setting(model, "std", [1.0] * channels)
    try:  # the rules a checkpoint's settings follow
        TrainConfig(channels=channels, input_size=height, mean=mean, std=std, classes=classes)
    except ValueError as error:
        model.fail(f"predict cannot read images for this model: {error}")
    if outputs and len(classes) != outputs:
        model.fail(f"its metadata names {len(classes)} classes; the graph's output "
                   f"{model.output_names[0]!r} has shape {model.output_shape}")  # fmt: skip
    return model, ImageSettings(channels, height, mean, std, classes)


def _setting(model: OnnxModule, name: str, default):
    """The JSON value of the metadata entry 'tinynet.NAME' that ``tinynet export`` writes."""
    text = model.metadata.get(f"tinynet.{name}")
    if text is None:
        return default
    if len(text) > MAX_SETTING_CHARS:
        model.fail(f"its metadata 'tinynet.{name}' has {len(text):,} characters; predict "
                   f"reads at most {MAX_SETTING_CHARS:,}")  # fmt: skip
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        model.fail(f"its metadata 'tinynet.{name}' is not valid JSON ({error})")


class OnnxModule(nn.Module):
    """An ONNX graph run with tinynet's ops. Initializer 'a.b.c' is the Parameter (float, used
    as a weight) or buffer (BatchNormalization's running statistics) with state-dict key 'a.b.c'
    (characters a Module name cannot hold become '_', and a part that is already an attribute of
    the module, like 'source', gains a '_'); int64 tensors are constants."""

    def __init__(self, proto: onnx.ModelProto, source: str = "<model>", folder=None):
        super().__init__()
        self.source = source
        self._external_data = ExternalData(folder)  # initializers in files in ``folder``
        self._check_opset(proto)
        checks.check_bounds(proto, self.fail)
        graph = proto.graph
        statistics = {
            name for node in graph.node if node.op_type == "BatchNormalization"
            for name in node.input[3:5]
        }  # fmt: skip
        self._constants: dict[str, np.ndarray] = {}
        self._keys: dict[str, str] = {}  # ONNX initializer name -> state-dict key
        for initializer in graph.initializer:
            self._add_initializer(initializer, initializer.name in statistics)
        inputs = [v.name for v in graph.input if v.name not in self._keys
                  and v.name not in self._constants]  # fmt: skip
        if len(inputs) != 1:
            self.fail(f"the graph must have one input besides its initializers; got {inputs}")
        if not graph.output:
            self.fail("the graph has no outputs")
        self.input_name = inputs[0]
        self.input_shape = _dims(next(v for v in graph.input if v.name == inputs[0]))
        self.output_names = [v.name for v in graph.output]
        self.output_shape = _dims(graph.output[0])
        self.metadata = {prop.key: prop.value for prop in proto.metadata_props}
        known = _Names()
        known.update([self.input_name, *self._keys, *self._constants])
        self._nodes = self._parse_nodes(graph.node, known)
        self._plans: dict[tuple, fold.Plan] = {}  # input shape -> its folded plan
        missing = [name for name in self.output_names if name not in known]
        if missing:
            self.fail(f"the graph's outputs {missing} are made by no node")
        checks.run_checker(proto, self.fail)

    def fail(self, problem: str):
        raise OnnxImportError(f"{self.source}: {problem}")

    def _parse_nodes(self, nodes, known: _Names) -> list:
        """``nodes`` as (op_type, inputs, outputs, attributes, label), each checked against the
        op tables; Constants become constants and an If's branches lists of nodes. ``known``
        holds the names made so far, and gains the nodes' outputs."""
        parsed = []
        for index, node in enumerate(nodes):
            label = checks.node_label(node, index)
            if node.domain not in ("", "ai.onnx") or node.op_type not in _SUPPORTED:
                self.fail(f"{label}: op {node.domain + '.' if node.domain else ''}"
                          f"{node.op_type} is not supported")  # fmt: skip
            missing = [i for i in node.input if i and i not in known]
            if missing:
                self.fail(f"{label} reads {missing}, which no earlier node or initializer makes")
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                self._add_constant(node, attributes, label)
            else:
                if node.op_type == "If":
                    attributes = self._branches(node, attributes, known, label)
                attributes = {key: self._tensor_array(value, f"{label} attribute {key!r}")
                              if isinstance(value, TensorProto) else value
                              for key, value in attributes.items()}  # fmt: skip
                parsed.append((node.op_type, list(node.input), list(node.output),
                               attributes, label))  # fmt: skip
            known.update(node.output)
        return parsed

    def _branches(self, node, attributes, known, label) -> dict:
        """An If's then_branch and else_branch, each as (its nodes, its output names); a branch
        reads the names made before the If."""
        branches = {}
        for key in ("then_branch", "else_branch"):
            graph = attributes.get(key)
            if not isinstance(graph, onnx.GraphProto):
                self.fail(f"{label}: the If has no {key}")
            if graph.input or graph.initializer or graph.sparse_initializer:
                self.fail(f"{label}: its {key} has inputs or initializers of its own, which "
                          "tinynet does not read")  # fmt: skip
            inside = _Names(known)  # the branch's names over the graph's, without copying
            nodes = self._parse_nodes(graph.node, inside)
            results = [value.name for value in graph.output]
            if len(results) != len(node.output) or not inside.issuperset(results):
                self.fail(f"{label}: its {key} makes {results}; the If has outputs "
                          f"{list(node.output)}")  # fmt: skip
            branches[key] = (nodes, results)
        return branches

    def _check_opset(self, proto) -> None:
        for opset in proto.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version not in OPSETS:
                self.fail(f"opset {opset.version} is not supported (tinynet reads opsets "
                          f"{OPSETS.start} to {OPSETS.stop - 1})")  # fmt: skip

    def _tensor_array(self, tensor: TensorProto, what: str, external: bool = False) -> np.ndarray:
        """The tensor's values, after checking its type, location and size against its shape;
        ``external``: it may be stored in a file beside the model (an initializer)."""
        if tensor.data_type not in _DTYPES:
            name = TensorProto.DataType.Name(tensor.data_type) if tensor.data_type in \
                TensorProto.DataType.values() else str(tensor.data_type)  # fmt: skip
            self.fail(f"{what} has data type {name}; tinynet reads FLOAT and INT64 tensors")
        dims = list(tensor.dims)
        if any(d < 0 for d in dims):
            self.fail(f"{what} has a negative dimension in its shape {dims}")
        dtype = np.dtype(_DTYPES[tensor.data_type])
        count = math.prod(dims)
        if tensor.data_location == TensorProto.EXTERNAL:
            if not external:
                self.fail(f"{what} is stored in an external-data file; tinynet reads external "
                          "data for initializers only")  # fmt: skip
            try:
                return self._external_data.read(tensor, dtype, count)
            except ExternalDataError as error:
                self.fail(f"{what}: {error}")
        if tensor.HasField("raw_data"):
            data = tensor.raw_data  # each read copies the bytes out of the protobuf: read once
            stored = -1 if len(data) % dtype.itemsize else len(data) // dtype.itemsize
        else:
            data = tensor.float_data if dtype == np.float32 else tensor.int64_data
            stored = len(data)
        if stored != count:
            self.fail(f"{what} declares shape {dims} ({count} values) but holds {stored}")
        if isinstance(data, bytes):  # little-endian in the file; one writable copy
            return np.frombuffer(data, dtype.newbyteorder("<")).astype(dtype).reshape(dims)
        return np.array(data, dtype).reshape(dims)

    def _add_initializer(self, tensor: TensorProto, statistic: bool) -> None:
        array = self._tensor_array(tensor, f"initializer {tensor.name!r}", external=True)
        if array.dtype.kind == "f" and array.size and np.isnan(array.min()):  # min keeps NaN
            self.fail(f"initializer {tensor.name!r} holds NaN values")
        if array.dtype != np.float32 or array.ndim == 0:  # 0-d: a scalar the exporter lifted
            self._constants[tensor.name] = array
            return
        *path, leaf = _module_key(tensor.name).split(".")
        owner, parts = self, []
        for part in path:
            while part in owner.__dict__:  # an attribute of the module: 'source', '_buffers'
                part += "_"
            if part not in owner._modules:
                owner._modules[part] = nn.Module()
            owner = owner._modules[part]
            parts.append(part)
        while leaf in owner.__dict__ or leaf in owner._modules:
            leaf += "_"
        key = ".".join([*parts, leaf])
        if key in self._keys.values():
            self.fail(f"initializer {tensor.name!r} has the same module name {key!r} as another")
        if statistic:
            owner.register_buffer(leaf, array)
        else:
            owner.register_parameter(leaf, nn.Parameter(array))
        self._keys[tensor.name] = key

    def _add_constant(self, node, attributes, label) -> None:
        if set(attributes) != {"value"} or not isinstance(attributes["value"], TensorProto):
            self.fail(f"{label}: only a Constant with a tensor 'value' is supported")
        self._constants[node.output[0]] = self._tensor_array(attributes["value"], label)

    def _weight(self, name: str):
        *path, leaf = self._keys[name].split(".")
        owner = self
        for part in path:
            owner = owner._modules[part]
        return owner._parameters[leaf] if leaf in owner._parameters else owner._buffers[leaf]

    def forward(self, x):
        x = as_tensor(x)
        values = {self.input_name: x}
        for name in self._keys:
            values[name] = self._weight(name)
        values.update(self._constants)
        plan = self._plans.get(x.shape)
        try:
            if plan is not None:
                fold.run_plan(plan, values, self._run)
            else:  # the first call with this shape folds as it runs (see tinynet.onnx.fold)
                budget = max(fold.MIN_FOLD_BUDGET, fold.FOLD_BUDGET_PER_INPUT * x.size)
                plan = fold.fold_and_run(self._nodes, values, self._run, budget)
                if len(self._plans) >= fold.MAX_PLANS:
                    del self._plans[next(iter(self._plans))]
                self._plans[x.shape] = plan
        except fold.FoldError as error:
            self.fail(str(error))
        results = tuple(values[name] for name in self.output_names)
        return results[0] if len(results) == 1 else results

    def _run(self, node, args):
        """A node that is not folded, run as tinynet ops."""
        op_type, _, _, attributes, label = node
        if _OPS.get(op_type) is None:
            self.fail(f"{label}: an input is computed from the data; tinynet runs {op_type} on "
                      "shapes and constants only")  # fmt: skip
        try:
            return _OPS[op_type](*args, **attributes)
        except (*checks.NODE_ERRORS, _Unsupported) as error:  # attributes, input shapes
            self.fail(f"{label}: {error}")
        except MemoryError as error:
            raise MemoryError(f"{self.source}: {label}: {error}") from None


class _Names:
    """The value names made so far in a graph: a set whose lookups fall through to the graph
    around it (an If's branch reads what was made before the If), so entering a branch copies
    nothing: a file of thousands of Ifs parses in time proportional to its size."""

    def __init__(self, outer: _Names | None = None):
        self.own, self.outer = set(), outer

    def __contains__(self, name) -> bool:
        return name in self.own or (self.outer is not None and name in self.outer)

    def update(self, names) -> None:
        self.own.update(names)

    def issuperset(self, names) -> bool:
        return all(name in self for name in names)


class _Unsupported(Exception):
    """A node whose attributes ask for something tinynet's ops do not do."""


def _dims(value: onnx.ValueInfoProto) -> tuple:
    """A graph input's or output's shape, None for a named or unknown axis."""
    return tuple(
        d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim
    )


def _module_key(name: str) -> str:
    """'a.b.c' with each part made of letters, digits and '_' (a Module's attribute name)."""
    parts = [re.sub(r"\W", "_", part) or "_" for part in name.split(".")]
    return ".".join(parts)


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise _Unsupported(what)


def _spatial(kernel_shape, strides, pads, dilations, auto_pad) -> tuple:
    """(stride, symmetric padding, (left, right, top, bottom) extra padding) of a 2-D window."""
    _require(len(kernel_shape) == 2, f"only 2-D windows are supported; got {kernel_shape}")
    _require(auto_pad in ("NOTSET", b"NOTSET", "VALID", b"VALID"), f"auto_pad {auto_pad!r}")
    _require(all(d == 1 for d in dilations), f"dilations must be 1; got {dilations}")
    _require(min(kernel_shape) >= 1, f"kernel_shape must be >= 1; got {list(kernel_shape)}")
    _require(len(strides) == 2 and min(strides) >= 1,
             f"strides must be two ints >= 1; got {list(strides)}")  # fmt: skip
    # Padding wider than the window is padding alone: a file of a few bytes could ask for any.
    _require(len(pads) == 4 and all(0 <= p <= k for p, k in zip(pads, [*kernel_shape] * 2)),
             f"pads must be four ints from 0 to the kernel's size {list(kernel_shape)}; got "
             f"{list(pads)}")  # fmt: skip
    top, left, bottom, right = pads
    return tuple(strides), (top, left), (top, bottom, left, right)


def _conv(x, w, b=None, kernel_shape=None, strides=(1, 1), pads=(0, 0, 0, 0),
          dilations=(1, 1), group=1, auto_pad="NOTSET"):  # fmt: skip
    _require(group == 1, f"group must be 1; got {group}")
    stride, _, (top, bottom, left, right) = _spatial(
        kernel_shape or w.shape[2:], strides, pads, dilations, auto_pad
    )
    if (top, left) == (bottom, right):
        return F.conv2d(x, w, b, stride=stride, padding=(top, left))
    return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride=stride)


def _check_ceil_mode(x, kernel_shape, strides, pads, ceil_mode) -> None:
    """ONNX's ceil_mode keeps a last window that starts in the padding; tinynet (as PyTorch)
    drops it, so such a pool would give a different size."""
    if not ceil_mode:
        return
    for n, k, s, p in zip(x.shape[2:], kernel_shape, strides, pads[:2]):
        _require(-(-(n + 2 * p - k) // s) + 1 == pool_output_size(n, k, s, p, True),
                 f"ceil_mode's last window along an axis of {n} starts in the padding "
                 "(ONNX keeps it, tinynet drops it)")  # fmt: skip


def _over_2d_windows(pool):
    """``pool`` (a 2-D window over (N, C, H, W)) for the 1-D and 3-D windows a reshape makes
    2-D: a 1-D window over (N, C, L) as an (L, 1) window, and a 3-D one over (N, C, D, H, W) that
    leaves two axes as they are (window 1, stride 1, no padding), as a 2-D window over the other
    axis and the two merged; torch.export writes PyTorch's LRN as an AveragePool of window
    (size, 1, 1) over the channels of (N, 1, C, H, W)."""

    def run(x, kernel_shape, strides=None, pads=None, dilations=None, **attributes):
        rank = len(kernel_shape)
        if rank == 2:
            given = {"strides": strides, "pads": pads, "dilations": dilations}
            return pool(x, kernel_shape, **{k: v for k, v in given.items() if v is not None},
                        **attributes)  # fmt: skip
        _require(rank in (1, 3) and x.ndim == rank + 2,
                 f"a {rank}-D window over an input of shape {x.shape} is not supported")
        strides, dilations = strides or [1] * rank, dilations or [1] * rank
        pads = pads or [0] * 2 * rank
        axes = [(kernel_shape[k], strides[k], pads[k], pads[k + rank], dilations[k])
                for k in range(rank)]  # fmt: skip
        still = (1, 1, 0, 0, 1)
        n, c, *sizes = x.shape
        if rank == 1:
            planar, window = (n, c, sizes[0], 1), [axes[0], still]
            output_shape = lambda y: y.shape[:3]
        elif axes[1] == axes[2] == still:
            planar, window = (n, c, sizes[0], sizes[1] * sizes[2]), [axes[0], still]
            output_shape = lambda y: (n, c, y.shape[2], *sizes[1:])
        else:
            _require(axes[0] == still, f"a 3-D window {list(kernel_shape)} that pools more than "
                                       "one axis or pair of axes is not supported")
            planar, window = (n, c * sizes[0], *sizes[1:]), axes[1:]
            output_shape = lambda y: (n, c, sizes[0], *y.shape[2:])
        (kh, sh, top, bottom, dh), (kw, sw, left, right, dw) = window
        y = pool(F.reshape(x, planar), (kh, kw), strides=(sh, sw), pads=(top, left, bottom, right),
                 dilations=(dh, dw), **attributes)  # fmt: skip
        return F.reshape(y, output_shape(y))

    return run


def _max_pool(x, kernel_shape, strides=None, pads=(0, 0, 0, 0), dilations=(1, 1),
              ceil_mode=0, storage_order=0, auto_pad="NOTSET"):  # fmt: skip
    stride, padding, (top, bottom, left, right) = _spatial(
        kernel_shape, strides or (1, 1), pads, dilations, auto_pad
    )
    _require((top, left) == (bottom, right), f"pads must be symmetric; got {list(pads)}")
    _check_ceil_mode(x, kernel_shape, stride, pads, ceil_mode)
    return F.max_pool2d(x, tuple(kernel_shape), stride, padding, bool(ceil_mode))


def _average_pool(x, kernel_shape, strides=None, pads=(0, 0, 0, 0), ceil_mode=0,
                  count_include_pad=0, dilations=(1, 1), auto_pad="NOTSET"):  # fmt: skip
    stride, padding, (top, bottom, left, right) = _spatial(
        kernel_shape, strides or (1, 1), pads, dilations, auto_pad
    )
    _require((top, left) == (bottom, right), f"pads must be symmetric; got {list(pads)}")
    _check_ceil_mode(x, kernel_shape, stride, pads, ceil_mode)
    return F.avg_pool2d(
        x, tuple(kernel_shape), stride, padding, bool(ceil_mode), bool(count_include_pad)
    )


def _lrn(x, size, alpha=1e-4, beta=0.75, bias=1.0):
    # ONNX centres an even window one channel later than PyTorch (and tinynet) do.
    _require(size % 2 == 1, f"LRN size must be odd; got {size}")
    return F.local_response_norm(x, size, alpha, beta, bias)


def _batch_norm(x, scale, shift, mean, var, epsilon=1e-5, momentum=0.9, training_mode=0):
    _require(not training_mode, "only inference BatchNormalization (training_mode=0) runs")
    return F.batch_norm(x, mean, var, scale, shift, training=False, eps=epsilon)


def _gemm(a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):  # noqa: N803 - ONNX names
    a = F.transpose(a, 0, 1) if transA else a
    if transB and alpha == 1.0 and (c is None or beta == 1.0):
        return F.linear(a, b, c)
    y = F.matmul(a, F.transpose(b, 0, 1) if transB else b)
    y = y if alpha == 1.0 else F.mul(y, np.float32(alpha))
    return y if c is None else F.add(y, c if beta == 1.0 else F.mul(c, np.float32(beta)))


def _flatten(x, axis=1):
    _require(-x.ndim <= axis <= x.ndim, f"axis must be in [{-x.ndim}, {x.ndim}]; got {axis}")
    axis = axis + x.ndim if axis < 0 else axis
    return F.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


def _reshape(x, shape, allowzero=0):
    _require(fold.is_known(shape), "the shape must be known before the data (a constant)")
    return F.reshape(x, fold.reshape_target(x.shape, shape, allowzero))


def _known(name, value):
    """``value``, an input the data must not decide (an attribute's list, or a constant)."""
    _require(value is None or isinstance(value, list) or fold.is_known(value),
             f"{name} must be known before the data (a constant)")  # fmt: skip
    return value


def _pad(x, pads, constant_value=None, axes=None, mode="constant"):
    _require(mode in ("constant", b"constant"), f"only constant padding runs; got mode {mode!r}")
    widths = fold.pad_widths(x.ndim, _known("pads", pads), _known("axes", axes))
    _require(min(map(min, widths)) >= 0, f"negative pads (cropping) are not supported; got "
                                         f"{pads.tolist()}")  # fmt: skip
    value = _known("the value", constant_value)
    value = 0.0 if value is None else float(fold.scalar(value, "the value"))
    return F.pad(x, [w for pair in reversed(widths) for w in pair], value)


def _transpose(x, perm=None):
    return F.permute(x, range(x.ndim - 1, -1, -1) if perm is None else perm)


def _squeeze(x, axes=None):
    return F.reshape(x, fold.squeezed(x.shape, _known("axes", axes)))


def _unsqueeze(x, axes):
    return F.reshape(x, fold.unsqueezed(x.shape, _known("axes", axes)))


def _slice(x, starts, ends, axes=None, steps=None):
    for name, value in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps)):
        _known(name, value)
    return F.index(x, fold.slices(x.shape, starts, ends, axes, steps))


def _cast(x, to, saturate=1, round_mode=None):
    dtype = np.dtype(fold.CAST_TYPES.get(to, object))
    _require(dtype.kind == "f", f"a Cast of data to type {to} is not supported (float types only)")
    return x if x.dtype == dtype else F.cast(x, dtype)


def _reduce_mean(x, axes=None, keepdims=1, noop_with_empty_axes=0):
    axes = None if axes is None else [int(a) for a in _known("axes", axes)]  # input or attribute
    if not axes and noop_with_empty_axes:
        return x
    return F.mean(x, dim=tuple(axes) if axes else None, keepdim=bool(keepdims))


def _softmax(function):
    return lambda x, axis=-1: function(x, dim=axis)


def _dropout(x, ratio=None, training_mode=None, seed=None):
    _require(training_mode is None or isinstance(training_mode, np.ndarray)
             and not training_mode.any(), "only inference Dropout runs")  # fmt: skip
    return x


def _operand(value):
    return value if isinstance(value, Tensor) else np.asarray(value)


def _binary(function):
    return lambda a, b: function(_operand(a), _operand(b))


_OPS = {
    "Conv": _conv,
    "Relu": F.relu,
    "MaxPool": _over_2d_windows(_max_pool),
    "AveragePool": _over_2d_windows(_average_pool),
    "GlobalAveragePool": lambda x: F.adaptive_avg_pool2d(x, 1),
    "LRN": _lrn,
    "BatchNormalization": _batch_norm,
    "Concat": lambda *xs, axis: F.cat(list(xs), dim=axis),
    "Gemm": _gemm,
    "MatMul": _binary(F.matmul),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Pad": _pad,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Slice": _slice,
    "Cast": _cast,
    "ReduceMean": _reduce_mean,
    "Add": _binary(F.add),
    "Sub": _binary(F.sub),
    "Mul": _binary(F.mul),
    "Div": _binary(F.div),
    "Pow": _binary(F.pow),
    "Softmax": _softmax(F.softmax),
    "LogSoftmax": _softmax(F.log_softmax),
    "Dropout": _dropout,
    "Identity": lambda x: x,
    "Constant": None,  # read into constants when the graph is built
    "If": None,  # replaced by its branch when the graph is folded (tinynet.onnx.fold)
}
_SUPPORTED = frozenset({*_OPS, *fold.FOLDS})  # what a node's op_type may be
