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
# # Lesson 6: multi-crop evaluation, and why 144 crops do not help 8 x 8 digits
#
# At test time the paper (section 7) showed the network many views of each image and averaged
# the softmax outputs: 4 scales (shorter side 256, 288, 320, 352) x 3 squares (left, centre,
# right) x 6 crops (the four corners and the centre at 224, and the whole square resized to
# 224) x 2 (each one mirrored) = 144 crops. On ImageNet that bought about 2% of top-5 error
# over a single crop: objects appear at different sizes and places, and a mirrored dog is a dog.
#
# `tinynet evaluate CHECKPOINT --multi-crop 144` does the same at any size: for 32-pixel digits
# the scales become 32 x 256/224 = 37, 41, 46 and 50 pixels, and the crops 32 pixels. This
# lesson takes a checkpoint (`--checkpoint`, e.g. lesson 4's; without one it trains a quick one
# first) and looks at what those crops are.

# %%
import argparse

import numpy as np
from lesson_setup import output_folder

import tinynet
from tinynet.data import average_softmax, load_dataset
from tinynet.data import transforms as T
from tinynet.evaluate import crops_of
from tinynet.train import CHECKPOINT, TrainConfig, Trainer, load_trained_model

OUT = output_folder("lesson6")
parser = argparse.ArgumentParser()
parser.add_argument("--checkpoint", help="a checkpoint.npz of `tinynet train` on digits")
checkpoint = parser.parse_known_args()[0].checkpoint
if checkpoint is None:  # a quick, poor network: enough to see what the crops do
    Trainer(TrainConfig(width=0.125, epochs=1, batch_size=32, max_batches=4, ema_decay=None,
                        out_dir=str(OUT)), log=print).fit()  # fmt: skip
    checkpoint = OUT / CHECKPOINT
model, config = load_trained_model(checkpoint)
images, labels = load_dataset("digits").test.arrays
images, labels = images[:12], labels[:12]
crops = crops_of(images, config.input_size, "144")
print(f"{len(images)} test digits of {images.shape[1:]} -> crops {crops.shape}")
assert crops.shape == (144, len(images), 1, 32, 32)

# %% [markdown]
# ## 144 crops, 48 different ones
#
# The crops come in the order (scale, square, [corners, centre, whole]), then all of them
# mirrored. A digit is square, so its left, centre and right squares are the same square: each
# scale repeats its 6 crops three times, and only 4 x 6 x 2 = 48 of the 144 differ.

# %%
per_scale = crops[:72].reshape(4, 3, 6, *crops.shape[1:])
assert all(np.array_equal(per_scale[s, 0], per_scale[s, k]) for s in range(4) for k in (1, 2))
distinct = np.unique(crops.reshape(144, -1), axis=0)
print(f"distinct crops: {len(distinct)} of 144")
assert len(distinct) == 48

# %% [markdown]
# ## No new pixels
#
# These digits are scikit-learn's 8 x 8 scans, scaled up to 32 x 32. Scaling them again to 37-50
# pixels and cropping 32 shows the same 64 numbers, interpolated: the "whole square" crop of the
# first scale, for one, is the image itself, give or take the interpolation.

# %%
whole = per_scale[0, 0, 5]
change = np.abs(whole - images).max() / np.abs(images).max()
print(f"the 37-pixel square resized back to 32 differs from the image by at most {change:.1%}")
assert change < 0.25

# %% [markdown]
# The corner crops cut off up to 18 of 50 pixels on a side: a third of a digit that fills its
# frame, where a photograph's object sits somewhere inside a larger scene. And the mirrors: the
# network never saw a mirrored digit in training (digits are not flipped, since a mirrored 3 is
# not a 3), so half of the 144 views are shapes it does not know.
#
# ## What they do to the predictions
#
# The softmax of each crop, averaged (`average_softmax`), for one crop, 10 crops and 144, and for
# the 72 unmirrored and the 72 mirrored crops alone:

# %%
normalize = T.Normalize(config.mean, config.std)
with tinynet.no_grad():
    logits = np.stack([model(normalize(c)).data for c in crops])
    single = model(normalize(images)).data[None]
    ten = np.stack([model(normalize(c)).data for c in crops_of(images, config.input_size, "10")])
views = {"1 crop": single, "10 crops": ten, "144 crops": logits,
         "72 unmirrored": logits[:72], "72 mirrored": logits[72:]}  # fmt: skip
accuracy = {}
for name, scores in views.items():
    accuracy[name] = float((average_softmax(scores).argmax(axis=1) == labels).mean())
    print(f"{name:>14}: top-1 {100 * accuracy[name]:5.1f}% on {len(labels)} digits")
mirrored_alone = (logits[72:].argmax(axis=2) == labels).mean()
unmirrored_alone = (logits[:72].argmax(axis=2) == labels).mean()
print(f"each crop alone: {100 * unmirrored_alone:.1f}% unmirrored, "
      f"{100 * mirrored_alone:.1f}% mirrored")  # fmt: skip

# %% [markdown]
# With a trained network a single crop is already right on nearly every digit; the crops can
# only repeat that, and the mirrored half votes with shapes the network never learnt. Measured
# with the checkpoint of a default `tinynet train` run (99.16% test top-1) on these 12 digits:
# 1 crop 100%, 10 crops 100%, 144 crops 91.7%; each unmirrored crop alone is right 81.6% of the
# time, each mirrored one 41.7%, and the 72 mirrored crops averaged get 50%. 144 times the work, for no gain: multi-crop pays
# when the test images hold more than the network sees at once, which 8 x 8 digits do not.

# %%
assert np.isclose(average_softmax(logits).sum(axis=1), 1).all()
if accuracy["1 crop"] >= 0.9:  # a trained network: the claims above, measured
    assert mirrored_alone < unmirrored_alone
    assert accuracy["144 crops"] <= accuracy["1 crop"]

# %% [markdown]
# **What to take away.** Multi-crop averages many views of the same image. It helps when the
# views carry different information (large photographs, objects off-centre, symmetric classes);
# for tiny, centred, asymmetric digits they are the same few pixels, a third of them duplicates
# and half of them mirror images the network was never taught.

# %% [markdown]
# **Practise it.** The exercises below practise this lesson: `tinynet exercises start DIR` writes
# them (one file each, with the math and a hint), `tinynet exercises check DIR` grades them,
# `tinynet exercises solution NAME` shows tinynet's answer.
#
# - `softmax_cross_entropy_backward`: the gradient of mean cross-entropy over softmax, stable at 1e4
#   logits
