"""A plan's graph lowered, for one input shape, to a list of prepared steps over one arena.

Where values live
-----------------
Every 4-D value a planned step makes is channel-major (``tinynet.ops.layout``): a C-contiguous
(C, N, H, W) block, so its (C, N·H·W) rows are the next GEMM's operand and a block of its rows
(channels c0:c1) is itself contiguous. That is what lets a producer of a channel concatenation
write straight into its slab of the concatenation's output (``_place_concats``) and a stacked
1x1 GEMM's members read their rows of its output without a copy.

All of them live in one arena: a single byte array in which each buffer (im2col scratch
included) gets an offset, planned from the steps' lifetimes so that two buffers share bytes
only if no step needs both (``arena_offsets``). A forward then allocates nothing but its
returned outputs (fresh copies) and what the steps run through their Functions allocate.

Steps the plan does not rewrite run their Function's ``forward`` on the arrays with a
throwaway Context: any op works, with its eager arithmetic. Such an op's output may be a view
of its input (a reshape), so every buffer it reads stays alive as long as its output does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from tinynet.function import Context
from tinynet.inference import winograd
from tinynet.inference.graph import INPUT, Constant, Graph, Step, is_pointwise_conv
from tinynet.kernels import KERNEL_DTYPES, pool
from tinynet.kernels.activation import relu_forward
from tinynet.kernels.epilogue import bias_relu
from tinynet.kernels.im2col import im2col
from tinynet.ops.conv import image_chunks
from tinynet.ops.elementwise import ReLUFunction
from tinynet.ops.pool import AdaptiveAvgPool2dFunction, AvgPool2dFunction, MaxPool2dFunction
from tinynet.ops.shape import ConcatFunction

ALIGN = 64  # bytes: every buffer starts on a cache line

_POOLS = (MaxPool2dFunction, AvgPool2dFunction, AdaptiveAvgPool2dFunction)


@dataclass
class Placement:
    """Where a channel-major value lives: rows [row, row + C) of the root buffer ``root``."""

    root: str
    row: int
    shape: tuple[int, ...]  # (C, N, H, W)


def arena_offsets(buffers: dict[str, tuple[int, int, int]]) -> tuple[dict[str, int], int]:
    """First-fit offsets for buffers {key: (nbytes, first, last)} alive from step ``first`` to
    step ``last`` inclusive: largest first, each at the lowest aligned offset that overlaps no
    placed buffer alive at the same time. Returns ({key: offset}, total bytes)."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    offsets = {}
    for key, (nbytes, first, last) in sorted(buffers.items(), key=lambda kv: -kv[1][0]):
        busy = sorted((o, e) for o, e, f, z in placed if f <= last and first <= z)
        offset = 0
        for start, end in busy:
            if offset + nbytes <= start:
                break
            offset = max(offset, -(-end // ALIGN) * ALIGN)
        offsets[key] = offset
        placed.append((offset, offset + nbytes, first, last))
    return offsets, max((end for _, end, _, _ in placed), default=0)


class Program:
    """``graph`` prepared for inputs of ``input_shape`` and ``dtype``: ``run(x)`` returns the
    outputs' arrays (fresh copies). column_block: columns per GEMM block whose epilogue runs
    right after it (None: one epilogue per im2col chunk). winograd: run each 3x3 stride-1
    padding-1 convolution that ``winograd.use_winograd`` picks by F(2x2, 3x3).

    Column blocks were tried and are off by default: with one thread, blocks of 4,096-65,536
    columns took 0.98-1.01 of one epilogue per chunk; with two, blocks of 256-2,048 columns took
    2.1-22 times as long (googlenet_small, batch 64), each of the many GEMM calls waking
    OpenBLAS's second thread. Winograd (where ``use_winograd`` picks it): paper network 0.76 of
    eager with it at batch 8, 0.94 without; 0.77 and 0.86 at batch 1; googlenet_small 0.81 and
    0.86 (one thread).
    """

    def __init__(self, graph: Graph, input_shape, dtype, column_block=None, winograd=False):
        self.graph, self.dtype, self.column_block = graph, np.dtype(dtype), column_block
        self.winograd = winograd
        self.input_shape = tuple(input_shape)
        self.shapes = {INPUT: self.input_shape, **{s.id: s.shape for s in graph.steps}}
        self.slot = {v: i for i, v in enumerate(self.shapes)}
        self.placement = self._place_values()
        self.buffers, self.arena = self._allocate()
        self.env: list = [None] * len(self.slot)
        for value, array in self.buffers.items():
            self.env[self.slot[value]] = array.transpose(1, 0, 2, 3)  # the NCHW view
        self.generic_slots = [self.slot[s.id] for s in graph.steps if s.id not in self.buffers]
        self.runners = [self._runner(s) for s in graph.steps]
        self.output_slots = [self.slot[o] for o in graph.outputs]

    # ------------------------------------------------------------------ running
    def run(self, x: np.ndarray) -> list[np.ndarray]:
        env = self.env
        if INPUT in self.buffers:
            np.copyto(self.buffers[INPUT], x.transpose(1, 0, 2, 3))
        else:
            env[self.slot[INPUT]] = x
        for runner in self.runners:
            runner(env)
        outputs = [np.array(env[i], copy=True, order="K") for i in self.output_slots]
        for i in self.generic_slots:  # hold no Function's output between calls
            env[i] = None
        return outputs

    # ------------------------------------------------------------------ placement
    def _planned(self, step: Step) -> bool:
        """Whether ``step`` writes a channel-major buffer of the plan (else it runs its
        Function and its output lives wherever that puts it). The arena holds the plan's dtype:
        a value of another (a model that casts) is left to its Function."""
        if step.fn is None:  # conv and Rows (graph.from_trace made them in the input's dtype)
            return True
        if len(step.shape) != 4 or step.dtype != self.dtype:
            return False
        if step.fn in _POOLS or step.fn is ReLUFunction:
            source = step.inputs[0]
            return isinstance(source, str) and source in self.channel_major_values
        return (
            step.fn is ConcatFunction
            and step.params["dim"] == 1
            and all(isinstance(v, str) for v in step.inputs)
        )

    def _place_values(self) -> dict[str, Placement]:
        """Each channel-major value's Placement: its own root, or a slab of a concatenation's
        (``_place_concats``), or rows of a stacked GEMM's output."""
        self.channel_major_values = {INPUT} if len(self.input_shape) == 4 else set()
        placement = {}
        for value in self.channel_major_values:
            placement[value] = Placement(value, 0, _channel_major(self.shapes[value]))
        for step in self.graph.steps:
            if self._planned(step):
                self.channel_major_values.add(step.id)
                placement[step.id] = Placement(step.id, 0, _channel_major(step.shape))
        self._place_concats(placement)
        for step in self.graph.steps:
            if step.op == "Rows" and step.fn is None:
                parent = placement[step.inputs[0]]
                placement[step.id] = Placement(
                    parent.root, parent.row + step.params["start"], placement[step.id].shape
                )
        return placement

    def _place_concats(self, placement: dict[str, Placement]) -> None:
        """Concatenation without the copy: each input of a channel concatenation that a planned
        step makes for it alone is placed in its slab of the output, so its producer writes it
        there. Legal because the slab (rows c0:c1 of a (C, N·H·W) buffer) is contiguous and the
        value has no other reader that could see the rest of the buffer. Outer concatenations
        first (reverse order), so a nested one's inputs land in the outer buffer too. Measured
        (benchmarks/bench_inference.py, one thread): googlenet_small at batch 64 0.81 of eager
        with it, 0.83 without; the paper's network at batch 8 within 1%."""
        for step in reversed(self.graph.steps):
            if step.fn is not ConcatFunction or step.id not in placement:
                continue
            target = placement[step.id]
            row = target.row
            for value in step.inputs:
                producer = self.graph.step(value) if isinstance(value, str) else None
                if (
                    producer is not None
                    and producer.id in placement
                    and producer.op != "Rows"
                    and self.graph.only_consumer(value) is step
                ):
                    placement[value] = Placement(target.root, row, placement[value].shape)
                    channels = self.shapes[value][1]
                    producer.fused.append(f"writes channels {row}:{row + channels} of {step.id}")
                row += self.shapes[value][1] if isinstance(value, str) else 0

    def _lifetimes(self) -> dict[str, list[int]]:
        """[first, last] step index of each root buffer: from the first step writing into it to
        the last reading any value in it (index 0 is the input's copy, step i is i + 1; the
        outputs live to the end). A Function's output may be a view of its inputs, so the
        values it reads live as long as it does."""
        end = len(self.graph.steps) + 1
        last = {v: 0 for v in self.shapes}
        for index, step in enumerate(self.graph.steps, start=1):
            for value in step.inputs:
                if isinstance(value, str):
                    last[value] = max(last[value], index)
        for value in self.graph.outputs:
            last[value] = end
        for step in reversed(self.graph.steps):
            if step.id not in self.placement or step.op == "Rows":
                for value in step.inputs:
                    if isinstance(value, str):
                        last[value] = max(last[value], last[step.id])
        spans: dict[str, list[int]] = {}
        first = {INPUT: 0, **{s.id: i for i, s in enumerate(self.graph.steps, start=1)}}
        for value, where in self.placement.items():
            span = spans.setdefault(where.root, [first[value], last[value]])
            span[0], span[1] = min(span[0], first[value]), max(span[1], last[value])
        return spans

    def _allocate(self):
        """The arena and, for each placed value, its (C, N, H, W) view; plus im2col scratch."""
        itemsize = self.dtype.itemsize
        spans = self._lifetimes()
        sizes = {}
        for value, where in self.placement.items():
            if where.root == value:
                sizes[value] = int(np.prod(where.shape)) * itemsize
        requests = {root: (sizes[root], *spans[root]) for root in spans}
        index = {s.id: i for i, s in enumerate(self.graph.steps, start=1)}
        self.scratch_size = {}
        for step in self.graph.steps:
            size = self._scratch_elements(step)
            if size:
                self.scratch_size[step.id] = size
                requests[f"scratch:{step.id}"] = (size * itemsize, index[step.id], index[step.id])
        offsets, total = arena_offsets(requests)
        self.arena_bytes = total
        raw = np.empty(total + ALIGN, dtype=np.uint8)
        base = -raw.ctypes.data % ALIGN
        arena = raw[base : base + total]
        views = {}
        for value, where in self.placement.items():
            start = offsets[where.root] + where.row * int(np.prod(where.shape[1:])) * itemsize
            count = int(np.prod(where.shape))
            views[value] = (
                arena[start : start + count * itemsize].view(self.dtype).reshape(where.shape)
            )
        self.scratch = {
            step_id: arena[offsets[f"scratch:{step_id}"] :][: size * itemsize].view(self.dtype)
            for step_id, size in self.scratch_size.items()
        }
        return views, arena

    def _scratch_elements(self, step: Step) -> int:
        """Elements of the im2col matrix of a conv step's largest chunk, or of Winograd's
        transformed tiles for all threads (0: none needed)."""
        if step.fn is not None or step.op != "Conv2d" or is_pointwise_conv(step):
            return 0
        n, c, h, w = self.shapes[step.inputs[0]]
        if self._winograd(step):
            threads = numba.get_num_threads()
            return winograd.scratch_size(c, len(step.params["weight"]), h, w, n, threads)
        patch = c * step.params["kernel"][0] * step.params["kernel"][1]
        pixels = step.shape[2] * step.shape[3]
        n0, n1 = image_chunks(n, patch, pixels, self.dtype.itemsize)[0]
        return patch * (n1 - n0) * pixels

    # ------------------------------------------------------------------ steps
    def _reader(self, value):
        """env -> the value as a Function sees it (a 4-D value as its NCHW view)."""
        if isinstance(value, Constant):
            constant = value.value
            return lambda env: constant
        if value is None:
            return lambda env: None
        slot = self.slot[value]
        return lambda env: env[slot]

    def _channel_major_reader(self, value):
        """env -> the value as a C-contiguous (C, N, H, W) array (a copy if a Function made it
        in another layout)."""
        if value in self.buffers:
            array = self.buffers[value]
            return lambda env: array
        slot = self.slot[value]
        return lambda env: np.ascontiguousarray(env[slot].transpose(1, 0, 2, 3))

    def _runner(self, step: Step):
        if step.id not in self.buffers:
            return self._function_runner(step)
        out = self.buffers[step.id]
        if step.fn is None and step.op == "Rows":
            return lambda env: None
        if step.fn is None:
            return self._conv_runner(step, out)
        read = self._channel_major_reader(step.inputs[0])
        params = step.params
        if step.fn is MaxPool2dFunction:
            yw, xw, kernel, stride = (
                params[k] for k in ("y_windows", "x_windows", "kernel", "stride")
            )
            return lambda env: pool.max_pool2d(read(env), out, yw, xw, kernel, stride, False)
        if step.fn in _POOLS:
            yw, xw = params["y_windows"], params["x_windows"]
            return lambda env: pool.avg_pool2d_forward(read(env), out, yw, xw)
        if step.fn is ReLUFunction:
            flat = out.reshape(-1)
            return lambda env: relu_forward(read(env).reshape(-1), flat)
        return self._concat_runner(step, out)

    def _concat_runner(self, step: Step, out):
        copies, row = [], 0
        for value in step.inputs:
            rows = self.shapes[value][1]
            where = self.placement.get(value)
            mine = self.placement[step.id]
            in_place = (
                where is not None
                and where.root == mine.root
                and where.row == mine.row + row
                and value in self.buffers
            )
            if not in_place:
                copies.append((out[row : row + rows], self._channel_major_reader(value)))
            row += rows
        step.fused.append(f"copies {len(copies)} of {len(step.inputs)} inputs" if copies else
                          "no copy: each input was written into its slab")  # fmt: skip

        def run(env):
            for slab, read in copies:
                np.copyto(slab, read(env))

        return run

    def _winograd(self, step: Step) -> bool:
        """Whether this conv step runs by Winograd's F(2x2, 3x3): asked for, a 3x3 stride-1
        padding-1 convolution, and ``use_winograd`` measured it faster at this size."""
        p = step.params
        if not self.winograd or self.dtype not in KERNEL_DTYPES:
            return False
        if p["kernel"] != (3, 3) or p["stride"] != (1, 1) or p["padding"] != ((1, 1), (1, 1)):
            return False
        n, c, h, w = self.shapes[step.inputs[0]]
        return winograd.use_winograd(c, len(p["weight"]), h, w, n)

    def _winograd_runner(self, step: Step, out):
        """out = act(conv3x3(x) + b) by F(2x2, 3x3) into the step's rows (maybe a slab of a
        concatenation), the transformed filters U made here, once."""
        W, bias, relu = step.params["weight"], step.params["bias"], step.params["relu"]
        U = winograd.filter_transform(W.reshape(len(W), -1, 3, 3))
        read = self._channel_major_reader(step.inputs[0])
        out_rows, scratch = out.reshape(len(out), -1), self.scratch[step.id]
        step.fused.append("Winograd F(2x2,3x3)")
        # unchecked: U, out and scratch are made right here (looked up per call, so a profiler
        # that wraps the module's function sees it)
        return lambda env: winograd.winograd_conv3x3_unchecked(
            read(env), U, bias, relu, out_rows, scratch
        )

    def _conv_runner(self, step: Step, out):
        if self._winograd(step):
            return self._winograd_runner(step, out)
        W, bias, relu = step.params["weight"], step.params["bias"], step.params["relu"]
        with_bias = bias is not None
        bias = bias if with_bias else W[:0, 0]
        epilogue = with_bias or relu
        read = self._channel_major_reader(step.inputs[0])
        out_rows = out.reshape(len(out), -1)
        columns = out_rows.shape[1]
        if is_pointwise_conv(step):
            blocks = _blocks(0, columns, self.column_block)

            def run(env):
                x = read(env)
                x_rows = x.reshape(len(x), -1)
                for block in blocks:
                    np.matmul(W, x_rows[:, block], out=out_rows[:, block])
                    if epilogue:
                        bias_relu(out_rows, block.start, block.stop, bias, with_bias, relu)

            return run
        n, c, _, _ = self.shapes[step.inputs[0]]
        kernel, stride = step.params["kernel"], step.params["stride"]
        (top, _), (left, _) = step.params["padding"]
        out_size = step.shape[2:]
        pixels = out_size[0] * out_size[1]
        patch = W.shape[1]
        scratch = self.scratch[step.id]
        chunks = []
        for n0, n1 in image_chunks(n, patch, pixels, self.dtype.itemsize):
            cols = scratch[: patch * (n1 - n0) * pixels].reshape(patch, -1)
            blocks = [
                (block, slice(block.start + n0 * pixels, block.stop + n0 * pixels))
                for block in _blocks(0, cols.shape[1], self.column_block)
            ]
            chunks.append((n0, n1, cols, blocks))

        def run(env):
            x = read(env)
            for n0, n1, cols, blocks in chunks:
                im2col(x[:, n0:n1], kernel, stride, (top, left), out_size, cols)
                for local, block in blocks:
                    np.matmul(W, cols[:, local], out=out_rows[:, block])
                    if epilogue:
                        bias_relu(out_rows, block.start, block.stop, bias, with_bias, relu)

        return run

    def _function_runner(self, step: Step):
        """Run the op's Function forward with a throwaway Context: no graph, no checks."""
        fn, params, slot = step.fn, step.params, self.slot[step.id]
        reads = [self._reader(v) for v in step.inputs]
        flags = (False,) * len(reads)

        def run(env):
            env[slot] = fn.forward(Context(flags), *[read(env) for read in reads], **params)

        return run


def _blocks(start: int, stop: int, size: int | None) -> list[slice]:
    if size is None or size >= stop - start:
        return [slice(start, stop)]
    return [slice(b, min(b + size, stop)) for b in range(start, stop, size)]


def _channel_major(shape) -> tuple[int, ...]:
    n, c, h, w = shape
    return (c, n, h, w)
