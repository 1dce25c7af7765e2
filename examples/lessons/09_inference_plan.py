# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 9: what an inference engine does to a graph
#
# Run eagerly, a network is a queue of ops, each finished before the next starts: the
# convolution writes its output to memory, the ReLU reads all of it back and writes it again,
# the concat copies every branch once more. In training that has to be so, because backward
# needs those ops as they are. At test time the weights are fixed and nothing is differentiated,
# so an inference engine (ONNX Runtime, TensorRT, PyTorch's `torch.jit.freeze`) first looks at
# the whole graph and rewrites it into fewer, fatter steps that compute the same numbers.
#
# `tinynet.inference(model, example_input)` is tinynet's: it traces the eval-mode forward once
# (`tinynet.trace`, the record `draw_graph` draws), rewrites the trace, settles every shape,
# argument check and buffer, and returns a callable plan. `tinynet predict` and `tinynet
# evaluate` run networks through it. This lesson looks at one Inception block before and after.

# %%
import time

import numpy as np

import tinynet
from tinynet import functional as F
from tinynet.models import googlenet_paper, googlenet_small

tinynet.manual_seed(0)
paper = googlenet_paper().eval()
image = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
plan = tinynet.inference(paper, image)
print(plan.describe("inception3a"))

# %% [markdown]
# ## The block before: 14 ops
#
# The trace is the block as `models/googlenet.py` writes it (lesson 3): four branches of
# convolutions each followed by its ReLU, a max pool, and the concat of the four branch outputs.
# Every line is one pass over a (1, C, 28, 28) activation.
#
# ## The block after: 9 steps
#
# Read the brackets: each says what was folded into the step.
# - **ReLU in the GEMM's epilogue.** A convolution is im2col and one GEMM (lesson 2); its bias
#   and ReLU are applied by the pass that writes the GEMM's output, a block of columns at a time
#   while it is still in cache, instead of by two more passes over memory. `relu(y + b)` is the
#   same number either way.
# - **Producers write into the concat.** Activations are stored channel-major (`ops/layout.py`),
#   so channels 0:64 of the concat's output are one contiguous slab. Each branch's last conv
#   writes straight into its slab ("writes channels 64:192 of ..."), and the concat step left in
#   the list is only a name for the finished buffer: no copy.
# - **Stacked 1x1 convolutions.** `branch2.0` and `branch3.0` are 1x1 convolutions of the same
#   input: stacking their weights, (96 + 16) rows by 192, makes one GEMM instead of two, with
#   rows 0:96 and 96:112 of its output read as the two results (the `Rows` steps, views, no
#   copy). `branch1` reads that input too, but it writes into the concat, so it stays apart.
# - What is not rewritten: the max pool. A ReLU *after* a max pool could move behind it
#   (max commutes with a non-decreasing function, so relu(max(x)) = max(relu(x)) and the ReLU
#   then touches 4x fewer values after a stride-2 pool), but here the pool reads the previous
#   block's output, whose ReLU is already free in its producer's epilogue.

# %%
traced = [op for op in plan.traced_ops if "inception3a" in ".".join(op.scope)]
planned = [op for op in plan.ops if "inception3a" in ".".join(op.scope)]
print(f"inception3a: {len(traced)} traced ops -> {len(planned)} planned steps")
assert len(planned) < len(traced)
assert not any(op.op == "ReLU" for op in planned)  # every ReLU went into an epilogue

# %% [markdown]
# ## BatchNorm folds into the convolution
#
# The small network (and torchvision's GoogLeNet) puts a BatchNorm between each convolution
# and its ReLU. In eval mode BatchNorm uses its running statistics, so it is an affine map per
# output channel, y -> s·y + t with s = γ/√(var + eps), t = β - s·mean; and a convolution is
# linear in its weights, so s·conv(x, W, b) + t = conv(x, s·W, s·b + t). The plan computes
# those W' and b' once, and the BatchNorm disappears from the graph.

# %%
small = googlenet_small().eval()
batch = np.random.default_rng(1).standard_normal((8, 3, 32, 32), dtype=np.float32)
small_plan = tinynet.inference(small, batch)
print(small_plan.describe("inception3a.branch1"))
assert not any(op.op == "BatchNorm" for op in small_plan.ops)

# %% [markdown]
# The fold by hand, for the first convolution of the small network's stem: conv then BatchNorm,
# against one convolution with the folded weights (in float64, so any difference would be a
# mistake, not rounding).

# %%
conv, bn = small.conv1.conv, small.conv1.bn
x = batch.astype(np.float64)
weight = conv.weight.data.astype(np.float64)
mean, var = bn.running_mean.astype(np.float64), bn.running_var.astype(np.float64)
gamma, beta = bn.weight.data.astype(np.float64), bn.bias.data.astype(np.float64)
two_ops = F.batch_norm(F.conv2d(x, weight, None, conv.stride, conv.padding), mean, var, gamma,
                       beta, training=False, eps=bn.eps).data  # fmt: skip
s = gamma / np.sqrt(var + bn.eps)
one_op = F.conv2d(x, weight * s[:, None, None, None], beta - s * mean, conv.stride,
                  conv.padding).data  # fmt: skip
print(f"conv then BatchNorm vs one folded conv: max difference {np.abs(two_ops - one_op).max():.1e}")
assert np.allclose(two_ops, one_op, rtol=1e-12, atol=1e-12)

# %% [markdown]
# ## Same numbers, less time
#
# The plan gives what the model gives, within float32 rounding: the rewrites change the order
# of a few roundings (a folded weight is rounded once, where the eager path rounds the
# convolution's output and then the normalised value), never the math. `tests/test_inference.py`
# checks every network tinynet can build in float64 as well, where the two agree within 1e-10.

# %%
with tinynet.no_grad():
    eager = paper(image).data
planned_logits = plan(image).data
print(f"paper GoogLeNet, 1 image: largest logit difference {np.abs(eager - planned_logits).max():.1e}"
      f" (logits up to {np.abs(eager).max():.2f})")  # fmt: skip
assert np.allclose(planned_logits, eager, rtol=1e-4, atol=1e-4 * np.abs(eager).max())


def best_of(run, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


with tinynet.no_grad():
    eager_s = best_of(lambda: paper(image))
plan_s = best_of(lambda: plan(image))
print(f"one 224x224 image: eager {1e3 * eager_s:.0f} ms, plan {1e3 * plan_s:.0f} ms "
      f"(best of 3, on this machine, now)")  # fmt: skip

# %% [markdown]
# The times depend on the machine and on what else runs on it; `benchmarks/RESULTS.md` has
# measured runs against PyTorch and ONNX Runtime. The plan also runs with a buffer arena
# planned from the tensors' lifetimes (`plan.arena_bytes`), so a forward allocates nothing but
# its outputs, and without any autograd record or argument check: those ran once, at planning.
# The price is that a plan is a snapshot: change the model's weights and the plan still computes
# with the old ones, which is why training builds a new plan for each evaluation.

# %%
print(f"arena: {plan.arena_bytes / 2**20:.1f} MB for every activation and scratch buffer")

# %% [markdown]
# **What to take away.** An inference engine is a compiler for a graph whose weights are
# constants: it folds what can be computed once (BatchNorm into weights), fuses what would be
# separate passes over memory (bias and ReLU into the GEMM's output pass, the concat into its
# producers), merges what shares an input (stacked 1x1 GEMMs), and plans memory once. Each
# rewrite is exact in real arithmetic; only the rounding order moves.

# %% [markdown]
# **Practise it.** The exercises below practise this lesson: `tinynet exercises start DIR` writes
# them (one file each, with the math and a hint), `tinynet exercises check DIR` grades them,
# `tinynet exercises solution NAME` shows tinynet's answer.
#
# - `fold_batch_norm`: the weights and bias of one convolution that computes conv then eval-mode
#   BatchNorm
