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
# # Lesson 4: training the small GoogLeNet on digits
#
# The whole network is nine Inception blocks (lesson 3) on a small stem, trained by the chain
# rule of lesson 1 through the convolutions of lesson 2. `tinynet.train.Trainer` runs the loop:
# for each batch, forward, the paper's loss (the main head's cross-entropy plus 0.3 times each
# auxiliary head's), `backward()`, an SGD step; after each epoch, the test split's loss and
# accuracy, a checkpoint, `metrics.jsonl` and the curves (`curves.png`).
#
# The data are scikit-learn's 1,797 handwritten digits, 8 x 8 pixels each, scaled up to 32 x 32.
# To need well under a minute of CPU time this lesson trains a narrow network (width 0.125: an
# eighth of the paper's channels) for 3 short epochs of 5 batches of 32 images, tests on 128 of
# the 359 test digits, and leaves out the Polyak averaging (an average over a few dozen steps
# would still be mostly the initial weights). The full run, `tinynet train` (width 0.25, 6
# epochs of all 1,438 training images, with averaging), reached 98.89% test top-1 (355 of 359
# digits) in about a minute on a 2-core machine, in the run recorded in `benchmarks/digits.md`.

# %%
import json

from lesson_setup import output_folder

from tinynet.data import DataSplits, TensorDataset, load_dataset
from tinynet.train import CHECKPOINT, CURVES, METRICS, TrainConfig, Trainer

OUT = output_folder("lesson4")
train, test, classes = load_dataset("digits")
data = DataSplits(train, TensorDataset(*test[:128]), classes)
config = TrainConfig(width=0.125, epochs=3, batch_size=32, max_batches=5, ema_decay=None,
                     out_dir=str(OUT))  # fmt: skip
history = Trainer(config, data, log=print).fit()

# %% [markdown]
# ## The curves
#
# Each epoch's record holds the training loss (with the aux heads' share), the test loss (main
# head only) and the accuracies. The training loss falls from about $\ln 10 \cdot 1.6 \approx 3.7$
# (chance, for the main head and the two aux heads at weight 0.3) as the network starts to tell
# the digits apart. The test accuracy lags: after so few steps BatchNorm's running statistics,
# which evaluation uses instead of the batch's, are still settling, so expect it near chance
# here. The full run evaluates Polyak-averaged weights with BatchNorm statistics measured anew
# for them, so its test top-1 means something from the first epoch: 89.97% after epoch 1, 97.77%
# after epoch 2 and 99.16% after epoch 3 in the run recorded in `benchmarks/digits.md`.

# %%
for record in history:
    print(f"epoch {record['epoch']}: train loss {record['train_loss']:.3f}, test loss "
          f"{record['test_loss']:.3f}, test top-1 {100 * record['test_top1']:.1f}%")  # fmt: skip
assert history[-1]["train_loss"] < history[0]["train_loss"], "the loss should fall"
assert history[-1]["train_top1"] > 0.2, "well above chance (10%) on the training batches"

# %% [markdown]
# Everything the run measured is in `metrics.jsonl`, one JSON record per epoch, and drawn in
# `curves.png` (loss on the left, accuracy on the right); `checkpoint.npz` holds everything needed
# to resume the run exactly (`tinynet train --resume`) or to evaluate it (lesson 6).

# %%
records = [json.loads(line) for line in (OUT / METRICS).read_text().splitlines()]
assert [r["epoch"] for r in records] == [1, 2, 3]
for name in (CHECKPOINT, METRICS, CURVES):
    print(f"{OUT / name}: {(OUT / name).stat().st_size:,} bytes")

# %% [markdown]
# **What to take away.** Training is the backward pass of lesson 1, repeated: a few hundred
# images already move the loss. With BatchNorm in every layer (this `small` preset) the signal
# reaches the first layers from the first step; lesson 5 shows what happens without it.

# %% [markdown]
# **Practise it.** The exercises below practise this lesson: `tinynet exercises start DIR` writes
# them (one file each, with the math and a hint), `tinynet exercises check DIR` grades them,
# `tinynet exercises solution NAME` shows tinynet's answer.
#
# - `softmax_cross_entropy_backward`: the gradient of mean cross-entropy over softmax, stable at 1e4
#   logits
# - `training_loop`: SGD with momentum and weight decay by hand: five steps equal
#   tinynet.optim.SGD's
