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
# # Lesson 8: the training loop, written out by hand
#
# Lesson 4 let `tinynet.train.Trainer` run the loop. Under its progress bar, checkpoints and
# (with `mpiexec`) its several processes, every step of the Trainer is the loop of any textbook,
# `tinynet.step.training_step`:
#
# ```python
# outputs = model(images)              # forward
# loss = loss_fn(outputs, labels)      # how wrong the outputs are
# optimizer.zero_grad()                # forget the last step's gradients
# loss.backward()                      # dL/dθ for every parameter θ, by the chain rule
# optimizer.step()                     # θ <- θ - lr · dL/dθ (with momentum, weight decay)
# ```
#
# What a run adds (dividing the batch between processes, catching a diverging loss, clipping
# and logging gradients, stepping the learning-rate schedule, averaging the weights) attaches
# between those lines at named seams (`tinynet.step.StepSeams`), so the lines stay as they are.
#
# This lesson proves it: it trains one short epoch with the Trainer (`train_epoch`, what
# `fit()` runs each epoch before it evaluates and saves), then builds the same pieces again (same
# seed: same initial weights, same batches in the same order) and runs the five lines by hand,
# plus the one thing this run attaches, the schedule's step. The weights at the end are the
# Trainer's to the last bit.

# %%
import numpy as np
from lesson_setup import output_folder

from tinynet.data import DataSplits, TensorDataset, load_dataset
from tinynet.models.googlenet import googlenet_loss
from tinynet.train import TrainConfig, Trainer

OUT = output_folder("lesson8")
train, test, classes = load_dataset("digits")
data = DataSplits(TensorDataset(*train[:192]), TensorDataset(*test[:64]), classes)


def config(name):
    return TrainConfig(width=0.125, epochs=1, batch_size=32, ema_decay=None,
                       out_dir=str(OUT / name))  # fmt: skip


trainer = Trainer(config("trainer"), data, log=print)
record = trainer.train_epoch(1)
print(f"the Trainer: {trainer.steps_per_epoch} steps, mean training loss {record['loss']:.6f}")

# %% [markdown]
# ## The same epoch, by hand
#
# A second Trainer, built from the same configuration, makes the same model, data loader,
# optimiser (SGD with Nesterov momentum) and schedule (cosine decay); we use only those pieces.
# The loss is the paper's: the main head's cross-entropy plus 0.3 times each auxiliary head's.

# %%
pieces = Trainer(config("by_hand"), data, log=print)
model, loader = pieces.model, pieces.loader
optimizer, scheduler = pieces.optimizer, pieces.scheduler

model.train()
losses, sizes = [], []
for step, (images, labels) in enumerate(loader):
    outputs = model(images)
    loss = googlenet_loss(outputs, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()  # this run's one seam: the learning rate for the next step
    losses.append(loss.item())
    sizes.append(len(labels))
    print(f"step {step + 1}: loss {loss.item():.6f}, lr now {scheduler.get_last_lr()[0]:.4f}")

by_hand = sum(loss * n for loss, n in zip(losses, sizes)) / sum(sizes)  # as the Trainer averages
print(f"by hand: {len(losses)} steps, mean training loss {by_hand:.6f}")

# %% [markdown]
# ## The same numbers
#
# The mean loss is the Trainer's, and so is every weight and every BatchNorm running statistic
# after the epoch: not close, equal. Nothing in the Trainer changed the arithmetic of a step.

# %%
assert len(losses) == trainer.steps_per_epoch
assert by_hand == record["loss"]
theirs, ours = trainer.model.state_dict(), model.state_dict()
assert theirs.keys() == ours.keys()
assert all(np.array_equal(theirs[key], ours[key]) for key in theirs)
print(f"all {len(ours)} weights and statistics equal the Trainer's, bit for bit")

# %% [markdown]
# **What to take away.** Training is five lines repeated; everything else a framework's trainer
# does happens around them. To change what a step computes (a new loss, a second optimiser, a
# gradient penalty), change these lines; to add something around a step (logging, clipping,
# another process's gradients), use a seam: `tinynet/train.py`'s `_RunSeams` is the Trainer's.

# %% [markdown]
# **Practise it.** The exercises below practise this lesson: `tinynet exercises start DIR` writes
# them (one file each, with the math and a hint), `tinynet exercises check DIR` grades them,
# `tinynet exercises solution NAME` shows tinynet's answer.
#
# - `training_loop`: SGD with momentum and weight decay by hand: five steps equal
#   tinynet.optim.SGD's
