"""The rewrites an inference plan applies to its graph (``tinynet.inference.graph``), each
exact in real arithmetic; each docstring says why. They run in the order of ``PASSES``.

Measured one at a time (benchmarks/bench_inference.py: the plan with every rewrite against the
plan without one, interleaved, medians of 5, one thread, on a shared 2-core VM, so indicative):
the whole plan took 0.76-0.81 of the eager forward's time (googlenet_paper at 224, batch 8 and
1; googlenet_small at 32, batch 64). Each figure below is what leaving its rewrite out costs.

Concatenation in place, the buffer arena and the column blocks of the epilogue are decided
where the graph is lowered to a program (``tinynet.inference.program``): they change where
values live, not what is computed.
"""

from __future__ import annotations

import numpy as np

from tinynet.inference.graph import Graph, Step, is_pointwise_conv
from tinynet.ops.elementwise import ReLUFunction
from tinynet.ops.norm import BatchNormFunction
from tinynet.ops.pool import MaxPool2dFunction


def _is_conv(step: Step | None) -> bool:
    return step is not None and step.fn is None and step.op == "Conv2d"


def fold_batch_norm(graph: Graph) -> None:
    """BatchNorm in evaluation mode after a convolution, folded into its weights and bias.

    Evaluation BatchNorm is an affine map per channel with constants: y = x·a + b with
    a = γ/√(var + eps) and b = β - mean·a. Applied to a convolution's output
    x[o] = W[o]·cols + c[o] it gives W[o]·a[o]·cols + (c[o]·a[o] + b[o]), a convolution with
    weights W' = W·a and bias c' = (c - mean)·a + β. Exact in real arithmetic; in floating point
    the products round differently (a few ulp of float32). Only where the convolution's output
    feeds nothing else: another reader needs the unnormalised values. The fold is computed in
    float64 and rounded once to the plan's dtype. Measured: googlenet_small at batch 64 0.81 of
    eager with it, 0.89 without (the paper's network has no BatchNorm).
    """
    for bn in list(graph.steps):
        if bn.fn is not BatchNormFunction or bn.params["training"] or len(bn.shape) != 4:
            continue
        conv = graph.step(bn.inputs[0])
        mean, var = bn.params["running_mean"], bn.params["running_var"]
        if not _is_conv(conv) or graph.only_consumer(conv.id) is not bn or var is None:
            continue
        mean = mean.astype(np.float64)
        gamma, beta = (None if c is None else c.value for c in bn.inputs[1:3])
        a = 1.0 / np.sqrt(var.astype(np.float64) + bn.params["eps"])
        if gamma is not None:
            a = a * gamma
        bias = conv.params["bias"]
        shift = -mean * a if bias is None else (bias.astype(np.float64) - mean) * a
        if beta is not None:
            shift = shift + beta
        dtype = conv.params["weight"].dtype
        conv.params["weight"] = (conv.params["weight"] * a[:, None]).astype(dtype)
        conv.params["bias"] = shift.astype(dtype)
        conv.fused.append(f"BatchNorm {bn.module or bn.id}")
        graph.replace(bn.id, conv.id)
        graph.remove(bn)


def fuse_relu(graph: Graph) -> None:
    """A ReLU reading a convolution's output, applied by the convolution's epilogue
    (``tinynet.kernels.epilogue``) as it writes each block of its output.

    max(x, 0) is applied to the same values the eager ReLU would see, in the same dtype: bitwise
    the same result. Only where the convolution's output feeds nothing else. Measured: 0.81 of
    eager with it, 0.84 without (googlenet_small, batch 64); 0.76 and 0.77 (paper, batch 8).
    """
    for relu in list(graph.steps):
        if relu.fn is not ReLUFunction:
            continue
        conv = graph.step(relu.inputs[0])
        if not _is_conv(conv) or conv.params["relu"] or graph.only_consumer(conv.id) is not relu:
            continue
        conv.params["relu"] = True
        conv.fused.append(f"ReLU {relu.module or relu.id}")
        graph.replace(relu.id, conv.id)
        graph.remove(relu)


def relu_after_max_pool(graph: Graph) -> None:
    """ReLU then max pool, run as max pool then ReLU: the ReLU then touches a quarter of the
    values (a 3x3/2 pool).

    ReLU is monotone non-decreasing, so for any non-empty set S, max(relu(S)) = relu(max(S)).
    A max-pool window is never empty: every window starts inside the input or its left padding
    and padding is at most half the kernel (PyTorch's rule, ``tinynet.ops.pool``), so each holds
    at least one input element; the -inf padding never wins against one (and relu(-inf) = 0
    would not either), and ceil_mode's last window is clipped to the input, still non-empty.
    NaN: the eager pool keeps a NaN, the ReLU passes NaN through; swapped, the same NaN reaches
    the output. Only where the ReLU feeds nothing but the pool. A ReLU a convolution's epilogue
    already applies (``fuse_relu``) costs nothing there, so this pass runs after it and moves
    only the ReLUs that stayed separate steps; in the registry's networks every ReLU follows a
    convolution, so it fires on none of them. Alone, 8 x 64 x 112 x 112 values through a
    multiply, a ReLU and a 3x3/2 pool: 79.7 ms as traced, 76.0 ms with the ReLU after the pool.
    """
    for pool in list(graph.steps):
        if pool.fn is not MaxPool2dFunction:
            continue
        relu = graph.step(pool.inputs[0])
        if relu is None or relu.fn is not ReLUFunction or graph.only_consumer(relu.id) is not pool:
            continue
        # pool reads the ReLU's input; the ReLU reads the pool's output and takes its place
        graph.replace(pool.id, relu.id)  # readers of the pool now read the ReLU
        pool.inputs = list(relu.inputs)
        relu.inputs = [pool.id]
        relu.shape, relu.scope = pool.shape, pool.scope
        relu.fused.append(f"moved after MaxPool2d {pool.module or pool.id}")
        steps = [s for s in graph.steps if s is not relu]
        steps.insert(steps.index(pool) + 1, relu)
        graph.steps = steps


def stack_pointwise(graph: Graph) -> None:
    """The 1x1 convolutions (stride 1, no padding) that read the same input, as one GEMM with
    their weight matrices stacked: [W1; W2] · x = [W1·x; W2·x], row by row the same sums (each
    output row is one row of W times x, whichever other rows are in the GEMM). Each member's
    output is then a block of rows of the stacked output (a ``Rows`` view step).

    A member whose output goes straight into a concatenation stays out of the stack: it writes
    into its slab of the concatenation instead (``tinynet.inference.program``), which saves more
    than the bigger GEMM does. Members need equal ReLU flags (one epilogue for the stack).
    Measured: 0.81 of eager with it, 0.82 without (googlenet_small, batch 64); within 1% on the
    paper's network at batch 1 and 8.
    """
    groups: dict[tuple, list[Step]] = {}
    for step in graph.steps:
        if is_pointwise_conv(step):
            reader = graph.only_consumer(step.id)
            if reader is not None and reader.op == "Concat":
                continue
            key = (step.inputs[0], step.params["relu"], step.params["bias"] is None)
            groups.setdefault(key, []).append(step)
    for members in groups.values():
        if len(members) < 2:
            continue
        first = members[0]
        weight = np.concatenate([m.params["weight"] for m in members])
        bias = (
            None
            if first.params["bias"] is None
            else np.concatenate([m.params["bias"] for m in members])
        )
        stacked = Step(
            f"{first.id}+",
            "Conv2d",
            list(first.inputs),
            {**first.params, "weight": weight, "bias": bias},
            (first.shape[0], len(weight), *first.shape[2:]),
            first.dtype,
            _common_scope([m.scope for m in members]),
            fused=[
                f"stacked 1x1 {m.module or m.id} ({len(m.params['weight'])} rows)" for m in members
            ],  # fmt: skip
        )
        graph.steps.insert(graph.steps.index(first), stacked)
        start = 0
        for m in members:
            rows = len(m.params["weight"])
            m.op, m.inputs, m.fn = "Rows", [stacked.id], None
            m.params = {"start": start, "stop": start + rows}
            m.fused = [*m.fused, f"rows {start}:{start + rows} of {stacked.id}"]
            start += rows


def _common_scope(scopes: list[tuple[str, ...]]) -> tuple[str, ...]:
    common = scopes[0]
    for scope in scopes[1:]:
        n = 0
        while n < min(len(common), len(scope)) and common[n] == scope[n]:
            n += 1
        common = common[:n]
    return common


PASSES = {
    "fold_batch_norm": fold_batch_norm,
    "fuse_relu": fuse_relu,
    "relu_after_max_pool": relu_after_max_pool,
    "stack_pointwise": stack_pointwise,
}
