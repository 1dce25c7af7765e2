"""``tinynet.summary``: a table of a network's layers with output shapes, parameters and
multiply-adds, measured by running one forward pass (eval mode, no graph recorded).

Multiply-adds count the convolutions and fully connected layers, as the GoogLeNet paper's
table does: a Conv2d costs out_elements · in_channels · kh · kw, a Linear out_elements ·
in_features; pooling, normalisation and ReLU are not counted.

Each block that defines ``naive_cost(input_shape) -> (multiply-adds, parameters)`` is also
costed as that method says, beside its cost as built: GoogLeNet's ``Inception`` without its 1x1
reductions (section 4 of the paper), 854M multiply-adds on inception3b's 28 x 28 x 256 input
against the 304M of the block as built, which reduces to 128 and 32 channels before its 3x3 and
5x5 and projects the pool to 64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinynet.function import no_grad
from tinynet.nn import Conv2d, Linear, Module


@dataclass
class SummaryRow:
    name: str
    type: str
    output_shape: tuple[int, ...] | None  # None: not run in eval mode (e.g. auxiliary heads)
    params: int
    macs: int  # per image


@dataclass
class BottleneckRow:
    """A block's cost per image as built (with its 1x1 reductions) and naive (``naive_cost``)."""

    name: str
    input_shape: tuple[int, int, int]  # C, H, W
    macs: int
    params: int
    naive_macs: int
    naive_params: int


@dataclass
class Summary:
    model_name: str
    input_shape: tuple[int, ...]
    dtype: np.dtype
    rows: list[SummaryRow]
    total_params: int
    inference_params: int  # parameters of the layers that ran
    total_macs: int  # per image
    bottlenecks: list[BottleneckRow]  # the blocks with a naive_cost that ran

    def __str__(self) -> str:
        return "\n".join([self._layers_table(), *self._bottleneck_table()])

    def _layers_table(self) -> str:
        header = ("name", "type", "output shape", "params", "MACs")
        lines = [
            (
                r.name,
                r.type,
                str(r.output_shape) if r.output_shape else "not run in eval",
                f"{r.params:,}",
                f"{r.macs / 1e6:,.1f}M" if r.output_shape else "-",
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(5)]
        fmt = lambda row: "  ".join(  # noqa: E731
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        )
        rule = "-" * len(fmt(header))
        return "\n".join(
            [
                f"{self.model_name} on input {self.input_shape} ({self.dtype})",
                rule,
                fmt(header),
                rule,
                *map(fmt, lines),
                rule,
                f"parameters: {self.total_params:,} ({self.inference_params:,} used at inference)",
                f"multiply-adds per image: {self.total_macs / 1e9:,.3f}G",
            ]
        )

    def _bottleneck_table(self) -> list[str]:
        if not self.bottlenecks:
            return []
        header = ("block", "input", "MACs", "naive MACs", "params", "naive params")
        total = BottleneckRow(
            "total", (),
            *(sum(getattr(r, field) for r in self.bottlenecks)
              for field in ("macs", "params", "naive_macs", "naive_params")),
        )  # fmt: skip
        lines = [
            (
                r.name,
                "x".join(map(str, r.input_shape)),
                f"{r.macs / 1e6:,.1f}M",
                f"{r.naive_macs / 1e6:,.1f}M",
                f"{r.params:,}",
                f"{r.naive_params:,}",
            )
            for r in [*self.bottlenecks, total]
        ]
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(6)]
        fmt = lambda row: "  ".join(  # noqa: E731
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        )
        rule = "-" * len(fmt(header))
        return [
            "",
            "Inception blocks, each on the input it gets here, with their 1x1 reductions and",
            "without them (naive: the 1x1, 3x3 and 5x5 convolutions on the full input depth,",
            "the pool's depth passed through)",
            rule,
            fmt(header),
            rule,
            *map(fmt, lines[:-1]),
            rule,
            fmt(lines[-1]),
            f"the 1x1 reductions save {1 - total.macs / total.naive_macs:.0%} of the blocks' "
            f"multiply-adds and {1 - total.params / total.naive_params:.0%} of their parameters",
        ]


def _conv2d_macs(module: Conv2d, output) -> int:
    kh, kw = module.kernel_size
    return output.size * module.in_channels * kh * kw


# What the table counts: multiply-adds of the layers that hold the paper's arithmetic, by the
# layer that applies the op of the same name (its Function's name without "Function").
MACS = {
    Conv2d: _conv2d_macs,
    Linear: lambda module, output: output.size * module.in_features,
}
# Every other op counts as nothing, as in the paper's table: a pass over memory or a handful of
# operations per element, against hundreds per output of a convolution (and MatMul, which no
# network here calls outside a Linear layer, where it is counted).
UNCOUNTED = (
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "LocalResponseNorm", "BatchNorm",
    "SyncBatchNorm", "ReLU", "Dropout", "Softmax", "LogSoftmax", "CrossEntropy", "Concat",
    "Reshape", "Permute", "Index", "Stack", "Pad", "Add", "Sub", "Mul", "Div", "Neg", "Pow",
    "Exp", "Log", "Cast", "Where", "Sum", "Mean", "Max", "MatMul", "AllReduce",
    "BackwardHookIdentity",
)  # fmt: skip


def _macs(module: Module, output) -> int:
    for layer, count in MACS.items():
        if isinstance(module, layer):
            return count(module, output)
    return 0


def summary(model: Module, input_shape, depth: int = 1, dtype=np.float32) -> Summary:
    """Tabulate ``model``'s modules down to ``depth`` levels (1: its direct children, such as
    GoogLeNet's stem layers and whole Inception blocks).

    input_shape: (C, H, W) for one image, or (N, C, H, W). MACs are reported per image.
    The model's train/eval mode is restored afterwards.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise ValueError(
            f"summary: input_shape must be (C, H, W) or (N, C, H, W); got {input_shape}"
        )
    named = list(model.named_modules())
    reported = [(name, m) for name, m in named if name and name.count(".") < depth]
    outputs: dict[str, tuple[int, ...]] = {}
    inputs_of: dict[str, tuple[int, ...]] = {}
    leaf_macs: dict[str, int] = {}
    handles = []
    for name, module in named:

        def hook(module, inputs, output, name=name):
            outputs[name] = tuple(output.shape)
            inputs_of[name] = tuple(inputs[0].shape[1:])
            leaf_macs[name] = leaf_macs.get(name, 0) + _macs(module, output)

        handles.append(module.register_forward_hook(hook))

    was_training = model.training
    model.eval()
    try:
        with no_grad():
            model(np.zeros(shape, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    def owned(prefix: str):  # "" is the model itself, which owns every layer
        return lambda name: not prefix or name == prefix or name.startswith(prefix + ".")

    def macs(prefix: str) -> int:
        inside = owned(prefix)
        return sum(m for leaf, m in leaf_macs.items() if inside(leaf)) // shape[0]

    rows = [
        SummaryRow(
            name=name,
            type=type(module).__name__,
            output_shape=outputs.get(name),
            params=sum(p.size for p in module.parameters()),
            macs=macs(name),
        )
        for name, module in reported
    ]
    bottlenecks = [
        BottleneckRow(
            name, inputs_of[name], macs(name), sum(p.size for p in module.parameters()),
            *module.naive_cost(inputs_of[name]),
        )  # fmt: skip
        for name, module in named
        if hasattr(module, "naive_cost") and name in outputs
    ]
    # A parameter is used at inference if the module that owns it ran.
    inference_params = sum(
        p.size for pname, p in model.named_parameters() if pname.rpartition(".")[0] in outputs
    )
    return Summary(
        model_name=type(model).__name__,
        input_shape=shape,
        dtype=np.dtype(dtype),
        rows=rows,
        total_params=sum(p.size for p in model.parameters()),
        inference_params=inference_params,
        total_macs=sum(leaf_macs.values()) // shape[0],
        bottlenecks=bottlenecks,
    )
