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
# # Lesson 3: one Inception block
#
# An Inception block looks at its input through four branches at once and stacks what they
# find on the channel axis:
#
# | branch | layers | sees |
# |---|---|---|
# | `branch1` | 1x1 conv | each pixel alone |
# | `branch2` | 1x1 reduce -> 3x3 conv | 3x3 neighbourhoods |
# | `branch3` | 1x1 reduce -> 5x5 conv | 5x5 neighbourhoods |
# | `branch4` | 3x3 max pool (stride 1) -> 1x1 projection | the strongest response nearby |
#
# Every branch keeps the height and width (padding), so the outputs can be concatenated. We
# build the paper's block 3b, `Inception(256, 128, 128, 192, 32, 96, 64)`: 256 channels in,
# 128 + 192 + 96 + 64 = 480 out, on a 28 x 28 map.

# %%
import numpy as np
from lesson_setup import output_folder

import tinynet
from tinynet.models import Inception, googlenet_paper
from tinynet.rng import manual_seed

OUT = output_folder("lesson3")
manual_seed(0)
block = Inception(256, 128, 128, 192, 32, 96, 64).eval()
x = tinynet.tensor(np.random.default_rng(0).normal(size=(1, 256, 28, 28)).astype(np.float32),
                   requires_grad=True)  # fmt: skip

# %% [markdown]
# ## Branches and the concat
#
# `tinynet.capture` records named modules' outputs during one ordinary forward pass (through
# forward hooks). The block's output is exactly its four branches, one after the other.

# %%
branches = ["branch1", "branch2", "branch3", "branch4"]
with tinynet.capture(block, branches) as record:
    y = block(x)
for name in branches:
    print(f"{name}: {record.activations[name].shape}")
print(f"block output: {y.shape}")
assert y.shape == (1, 480, 28, 28)
assert np.array_equal(np.concatenate([record.activations[n] for n in branches], axis=1), y.data)

# %% [markdown]
# ## What the 1x1 reductions save
#
# A k x k convolution from $C_{in}$ to $C_{out}$ channels on an $H \times W$ map costs
# $H W \cdot C_{in} k^2 \cdot C_{out}$ multiply-adds. Without the 1x1 reductions (the *naive*
# block), the 3x3 and 5x5 convolutions would read all 256 input channels. With them, they read
# 128 and 32.

# %%
def macs(c_in, k, c_out, side=28):
    return side * side * c_in * k * k * c_out


naive = macs(256, 1, 128) + macs(256, 3, 192) + macs(256, 5, 96)  # the pool passes through
reduced = (macs(256, 1, 128)
           + macs(256, 1, 128) + macs(128, 3, 192)
           + macs(256, 1, 32) + macs(32, 5, 96)
           + macs(256, 1, 64))  # fmt: skip
print(f"naive {naive / 1e6:.1f}M multiply-adds, with the reductions {reduced / 1e6:.1f}M "
      f"({naive / reduced:.1f} times fewer)")  # fmt: skip
assert round(naive / 1e6) == 854  # the paper's worked example: 854M

# %% [markdown]
# `tinynet summary --model paper` prints the same arithmetic for every block of the network,
# from the layers as built (`tinynet.summary` in Python). Its row for 3b:

# %%
paper = tinynet.summary(googlenet_paper().eval(), (3, 224, 224))
row = next(r for r in paper.bottlenecks if r.name == "inception3b")
print(row)
assert (row.macs, row.naive_macs) == (reduced, naive)
blocks = sum(r.macs for r in paper.bottlenecks)
naive_blocks = sum(r.naive_macs for r in paper.bottlenecks)
print(f"the whole network's nine blocks: {blocks / 1e9:.2f}G multiply-adds, naive "
      f"{naive_blocks / 1e9:.2f}G")  # fmt: skip

# %% [markdown]
# The naive block would also output 128 + 192 + 96 + **256** = 672 channels (the pool passes
# all of its input on), so the next block's input would grow, and the one after it: the cost
# compounds through the network. The 1x1 projection after the pool stops that.
#
# ## Its graph
#
# `tinynet.draw_graph(y, block)` draws the ops with their output shapes, the weights by name,
# and each branch as a box: four boxes side by side, joined by one `Concat`.

# %%
graph = tinynet.draw_graph(y, block)
source = graph.source
for name in branches:
    assert f"cluster_{name}" in source.replace('"', ""), name
assert source.count("label=\"Concat") == 1
print(f"wrote {graph.save(OUT / 'inception3b.dot')}")
if tinynet.graph.renderer_available():
    print(f"wrote {graph.save(OUT / 'inception3b.svg')}")
graph

# %% [markdown]
# **What to take away.** A block is four convolutions of different reach on the same input,
# concatenated. The cheap 1x1 convolutions in front of the 3x3 and 5x5 ones are what make it
# affordable: 2.8 times fewer multiply-adds here, and they keep the channel count from growing.

# %% [markdown]
# **Practise it.** The exercises below practise this lesson: `tinynet exercises start DIR` writes
# them (one file each, with the math and a hint), `tinynet exercises check DIR` grades them,
# `tinynet exercises solution NAME` shows tinynet's answer.
#
# - `max_pool2d_backward`: the backward of max pooling: ties to the first maximum, ceil_mode,
#   padding
# - `inception_block`: assemble an Inception block from tinynet.nn layers, equal to tinynet's
#   Inception
