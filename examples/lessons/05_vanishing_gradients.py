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
# # Lesson 5: vanishing gradients, and why the paper added auxiliary heads
#
# The backward pass multiplies the gradient by each layer's local derivative on its way down
# (lesson 1). Through 22 layers, if those factors are mostly below 1, the product shrinks
# geometrically: the last layers learn, the first ones receive almost nothing. The paper's
# network has no BatchNorm; to "increase the gradient signal that gets propagated back" it
# attached two auxiliary classifiers to blocks 4a and 4d, whose losses (weight 0.3) inject
# gradient in the middle of the network. BatchNorm, a year later, fixed it at the root.
#
# `tinynet inspect gradients` measures this on digits: three variants of the paper's network
# trained side by side from the same seed on the same batches (no aux heads; aux heads;
# BatchNorm in every layer, no aux heads), recording the gradient norm of every layer's weights
# as it goes. This lesson runs a miniature of it: 10 SGD steps of 8 images each, recorded every
# 5 (the command's default is 300 steps of 16, which takes minutes).

# %%
from lesson_setup import output_folder

from tinynet.gradflow import block_norms
from tinynet.inspect_gradients import TABLE_BLOCKS, compare_gradient_flow, save_runs, table

OUT = output_folder("lesson5")
runs = compare_gradient_flow(width=0.125, steps=10, batch_size=8, log_every=5, log=print)

# %% [markdown]
# ## The gradient at five depths
#
# For each variant: the norm $\lVert \partial L / \partial W \rVert$ of all the weights of the
# stem's first convolution (`conv1`) and of blocks 3a, 4a, 4d and 5b together, at
# initialisation (step 0) and at the last recorded step, and the main head's loss.

# %%
print(table(runs, window=5))
start = {run.name: block_norms(run.records[0]["grad_norm"], TABLE_BLOCKS) for run in runs}

# %% [markdown]
# Read the first row from right to left. Without aux heads the gradient at 5b, next to the
# loss, is about $10^{-2}$; each block down divides it by orders of magnitude, and `conv1` gets
# nothing usable: its weights will not move.

# %%
no_aux, aux, bn = start["no aux"], start["aux heads"], start["BatchNorm"]
print(f"no aux: conv1 / 5b = {no_aux['conv1'] / no_aux['inception5b']:.1e}")
assert no_aux["conv1"] < 1e-9 * no_aux["inception5b"]
assert no_aux["inception3a"] < no_aux["inception4a"] < no_aux["inception4d"] < no_aux["inception5b"]

# %% [markdown]
# The aux heads' losses enter at 4a and 4d, so the gradient there is that of a loss a few layers
# away, not of one twelve layers away: orders of magnitude larger at 4a, and everything below it
# profits. It is still tiny at `conv1`: at this initialisation (a normal of std 0.01, as in
# torchvision's port) the aux heads help but do not rescue the network; the paper also relied on
# a careful schedule over many epochs.

# %%
for block in ("conv1", "inception4a"):
    print(f"{block}: aux heads / no aux = {aux[block] / no_aux[block]:.1e}")
    assert aux[block] > 1e3 * no_aux[block]

# %% [markdown]
# BatchNorm rescales every layer's output to unit variance, so the local factors of the backward
# pass stay near 1 and the gradient arrives at `conv1` as strong as it left the loss; this is
# why tinynet's default network (lesson 4), torchvision's GoogLeNet and Inception-BN use it.

# %%
print(f"BatchNorm: conv1 {bn['conv1']:.2e}, 5b {bn['inception5b']:.2e}")
assert bn["conv1"] > 1e-2 and bn["conv1"] > 1e12 * no_aux["conv1"]

# %% [markdown]
# ## The whole flow
#
# `save_runs` writes every record (`gradients.jsonl`) and the figure (`gradients.png`): per
# variant, the norm of each block (down) at each recorded step (across) on one log colour scale,
# and, on the right, the norm along the depth at the first and last step. docs/googlenet.md shows
# the same figure for the full 300-step run.

# %%
for path in save_runs(runs, OUT):
    print(f"wrote {path}")
assert (OUT / "gradients.png").stat().st_size > 0

# %% [markdown]
# **What to take away.** The gradient reaching a layer is a product of local factors; deep
# networks without normalisation let it vanish. Auxiliary losses shorten the path for the middle
# layers; BatchNorm keeps every factor near 1. `tinynet train --log-gradients 10` records the
# same per-layer numbers during any training run.

# %% [markdown]
# **Practise it.** The exercises below practise this lesson: `tinynet exercises start DIR` writes
# them (one file each, with the math and a hint), `tinynet exercises check DIR` grades them,
# `tinynet exercises solution NAME` shows tinynet's answer.
#
# - `batch_norm_backward`: the backward of BatchNorm in training (through μ and σ²) and evaluation
