"""How much memory one training step needs, estimated before the step runs, and how much the
machine has.

    estimate = estimate_training_memory(model, (3, 224, 224), 64, loss_fn, optimizer_factory)
    print(estimate)            # the peak and what it is made of
    estimate.total > available_memory()

The estimate is derived from the model's own graph, not a formula per network: one forward in
training mode at a batch of 2 and one at 3 images (the dry runs; no backward, no update, and the
model's buffers and the random generator are put back as they were) give every op's output and
what it saved for backward. Each size is a + b·N in the batch N, so two batches give it at any
batch size; the graph is then walked as ``Tensor.backward`` walks it:

    parameters + gradients + optimizer state           (the model's, whatever the batch)
  + activations: what the forward saved for backward   (each array once, however many ops hold it)
  + workspace: the most, at any op of the backward, of the gradients waiting for their op, the
    op's own output gradient and its inputs' new gradients and the convolutions' im2col scratch
    (``tinynet.ops.conv``), less what the ops already walked have freed (``Context.release``)

The optimizer state is measured, not looked up, by one update of a probe parameter: the momentum
and moment buffers it keeps per parameter and the scratch of its largest update
(``tinynet.optim.Workspace``). Not counted: the interpreter, NumPy, numba and their compiled
kernels (what a process holds before it trains: the run's starting memory), the data set and the
batches in flight. tests/test_memory_estimate.py holds the estimate to the peak measured in a
fresh process at two batch sizes (docs/training.md gives the numbers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tinynet.function import Context
from tinynet.nn import Module, Parameter
from tinynet.ops.conv import Conv2dFunction, image_chunks
from tinynet.rng import default_generator
from tinynet.tensor import Tensor, _topological_order


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimated peak of one training step, in bytes, and its parts."""

    batch_size: int
    input_shape: tuple[int, ...]  # (C, H, W)
    parameters: int
    gradients: int
    optimizer_state: int
    activations: int  # saved by the forward for the backward
    workspace: int  # the backward's transient arrays at its fullest moment

    @property
    def total(self) -> int:
        return (
            self.parameters + self.gradients + self.optimizer_state + self.activations
            + self.workspace
        )  # fmt: skip

    def __str__(self) -> str:
        parts = ", ".join(
            f"{name} {human_bytes(value)}"
            for name, value in (
                ("activations saved for backward", self.activations),
                ("workspace", self.workspace),
                ("parameters", self.parameters),
                ("gradients", self.gradients),
                ("optimizer state", self.optimizer_state),
            )
        )
        shape = "x".join(map(str, self.input_shape))
        return (
            f"estimated peak memory of a training step at batch {self.batch_size} of {shape}: "
            f"{human_bytes(self.total)} ({parts})"
        )


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def available_memory() -> int | None:
    """The memory this process could still take, in bytes: MemAvailable of /proc/meminfo (what
    Linux says can be allocated without swapping), else the free physical pages by sysconf;
    None where neither is known."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_warning(estimate: MemoryEstimate, available: int | None) -> str | None:
    """The one line a run prints before its first step when ``estimate`` exceeds ``available``
    memory; None when it fits (or nothing is known of the machine)."""
    if available is None or estimate.total <= available:
        return None
    return (
        f"warning: a training step at batch {estimate.batch_size} needs about "
        f"{human_bytes(estimate.total)}, more than the {human_bytes(available)} available: "
        f"expect swapping or an out-of-memory error; lower --batch-size and add --accumulate "
        f"to keep the step's size"
    )


def estimate_training_memory(
    model: Module, input_shape, batch_size: int, loss_fn, optimizer_factory
) -> MemoryEstimate:
    """The estimated peak memory of one training step of ``model`` on ``batch_size`` images of
    ``input_shape`` (C, H, W) (see the module's docstring for what is counted and how).

    loss_fn:           ``loss_fn(outputs, labels)`` -> the scalar loss, as the step calls it
    optimizer_factory: ``optimizer_factory(parameters)`` -> the step's optimizer
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"estimate_training_memory: input_shape must be (C, H, W); got {shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"estimate_training_memory: batch_size must be a positive int; got {batch_size!r}"
        )
    parameters = list(model.parameters())
    weights = sum(p.data.nbytes for p in parameters)
    # 2 and 3, not 1 and 2: at one image some layout changes are free views, not copies
    at2, at3 = (_dry_graph(model, shape, n, loss_fn) for n in (2, 3))
    activations, workspace = _backward_peak(at2, at3, batch_size)
    return MemoryEstimate(
        batch_size=batch_size,
        input_shape=shape,
        parameters=weights,
        gradients=weights,
        optimizer_state=_optimizer_bytes(optimizer_factory, parameters),
        activations=activations,
        workspace=workspace,
    )


# ---------------------------------------------------------------- the dry forward
@dataclass
class _Op:
    """One op of the dry graph: sizes in bytes, and what it holds by index into the graph's
    list of saved buffers."""

    output: int
    saved: list[int]  # indices of the saved buffers this op holds
    parents: list[int]  # indices of the ops (or -1: a leaf) its input gradients go to
    parent_bytes: list[int]
    conv: tuple | None  # (patch size, pixels per image, itemsize) of a convolution


@dataclass
class _Graph:
    ops: list[_Op]  # in the order Tensor.backward walks them
    buffers: list[int]  # the bytes of each distinct saved array


def _dry_graph(model: Module, shape, n: int, loss_fn) -> _Graph:
    """The graph of one forward in training mode on ``n`` zero images, read and let go; the
    model's mode, buffers and the random generator are as they were afterwards."""
    buffers = {name: b.copy() for name, b in model.named_buffers()}
    rng_state = default_generator().bit_generator.state
    layer_generators = [
        (m, m.generator.bit_generator.state)
        for m in model.modules()
        if isinstance(getattr(m, "generator", None), np.random.Generator)
    ]
    was_training = model.training
    model.train()
    try:
        dtype = next(iter(model.parameters())).dtype
        outputs = model(np.zeros((n, *shape), dtype=dtype))
        loss = loss_fn(outputs, np.zeros(n, dtype=np.int64))
        return _read_graph(loss)
    finally:
        model.train(was_training)
        for name, buffer in model.named_buffers():
            buffer[...] = buffers[name]
        default_generator().bit_generator.state = rng_state
        for module, state in layer_generators:
            module.generator.bit_generator.state = state


def _read_graph(loss: Tensor) -> _Graph:
    order = list(reversed(_topological_order([loss._grad_node])))
    parameter_arrays = {id(_base(node.data)) for node in order if isinstance(node, Parameter)}
    order = [node for node in order if node._ctx is not None]  # the ops, the loss's first
    index = {id(node): i for i, node in enumerate(order)}
    buffer_index: dict[int, int] = {}
    sizes: list[int] = []
    ops = []
    for node in order:
        ctx = node._ctx
        saved = []
        for array in _saved_arrays(ctx):
            base = _base(array)
            if id(base) in parameter_arrays:
                continue
            if id(base) not in buffer_index:
                buffer_index[id(base)] = len(sizes)
                sizes.append(base.nbytes)
            saved.append(buffer_index[id(base)])
        parents = [p for p in ctx.parents if p is not None]
        conv = None
        if ctx.fn is Conv2dFunction:
            _, weight = ctx.saved_tensors
            pixels = int(np.prod(node.shape[2:]))
            conv = (int(np.prod(weight.shape[1:])), pixels, weight.itemsize)
        ops.append(
            _Op(
                output=int(np.prod(node.shape)) * np.dtype(node.dtype).itemsize,
                saved=sorted(set(saved)),
                parents=[index.get(id(p), -1) for p in parents],
                parent_bytes=[int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize for p in parents],
                conv=conv,
            )
        )
    return _Graph(ops, sizes)


def _saved_arrays(ctx: Context):
    """Every ndarray an op's context keeps for its backward: ``saved_tensors`` and plain
    attributes (the graph's own bookkeeping aside)."""
    for value in ctx.saved_tensors:
        if isinstance(value, np.ndarray):
            yield value
    for key, value in vars(ctx).items():
        if key in ("saved_tensors", "inputs", "parents", "params", "scope"):
            continue
        values = value if isinstance(value, (tuple, list)) else (value,)
        for item in values:
            if isinstance(item, np.ndarray):
                yield item


def _base(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


# ---------------------------------------------------------------- the walk at any batch
def _at(two: int, three: int, batch: int) -> int:
    """A size that is a + b·N, known at N = 2 and 3, at N = ``batch``."""
    return max(0, two + (three - two) * (batch - 2))


def _backward_peak(at2: _Graph, at3: _Graph, batch: int) -> tuple[int, int]:
    """(activations, workspace) at ``batch``: what the forward saved, and the most the backward
    holds beyond it at once, walking the ops in Tensor.backward's order."""
    if len(at2.ops) != len(at3.ops) or len(at2.buffers) != len(at3.buffers):
        raise ValueError(
            "estimate_training_memory: the model's graph differs between a batch of 2 and of 3 "
            "images; its memory cannot be extrapolated to other batch sizes"
        )
    sizes = [_at(a, b, batch) for a, b in zip(at2.buffers, at3.buffers)]
    holders = [0] * len(sizes)
    for op in at2.ops:
        for i in op.saved:
            holders[i] += 1
    activations = live = sum(sizes)
    pending = {0: 0}  # op index -> bytes of the gradient waiting for it (the loss's own)
    workspace = 0
    for i, (op, op3) in enumerate(zip(at2.ops, at3.ops)):
        own = pending.pop(i, 0) if i else _at(op.output, op3.output, batch)
        new = [_at(a, b, batch) for a, b in zip(op.parent_bytes, op3.parent_bytes)]
        scratch = 0
        if op.conv is not None:
            patch, pixels, itemsize = op.conv
            first, last = image_chunks(batch, patch, pixels, itemsize)[0]
            scratch = patch * (last - first) * pixels * itemsize
        waiting = sum(pending.values())
        workspace = max(workspace, live - activations + waiting + own + sum(new) + scratch)
        for parent, size in zip(op.parents, new):
            if parent >= 0:  # a parameter's gradient is counted with the parameters
                pending[parent] = size  # a second one is summed into it
        for index in op.saved:  # Context.release: the last holder frees a saved array
            holders[index] -= 1
            if holders[index] == 0:
                live -= sizes[index]
    return activations, max(0, workspace)


def _optimizer_bytes(optimizer_factory, parameters: list[Parameter]) -> int:
    """The state an optimizer keeps for ``parameters`` and the scratch of its largest update,
    measured by one step of a probe parameter (the real ones are not touched)."""
    if not parameters:
        return 0
    dtype = parameters[0].dtype
    probe = Parameter(np.zeros(1024, dtype=dtype))
    probe.grad = np.ones_like(probe.data)
    optimizer = optimizer_factory([probe])
    optimizer.step()
    per_byte = (
        sum(v.nbytes for v in optimizer.state.get(probe, {}).values() if isinstance(v, np.ndarray))
        / probe.data.nbytes
    )
    scratch = sum(b.nbytes for b in optimizer._workspace._buffers.values()) / probe.data.nbytes
    total = sum(p.data.nbytes for p in parameters)
    largest = max(p.data.nbytes for p in parameters)
    return int(per_byte * total + scratch * largest)
