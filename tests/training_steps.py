"""The training steps tests/test_distributed.py compares: the small GoogLeNet (width 1/16, one
channel in, 10 classes, its Dropout on) trained by SGD with momentum 0.9 on a seeded stream of
global batches of a learnable task.

Run as a script by every rank, under ``mpiexec -n N`` or as one process alone; rank 0 saves the
global mean losses and its state into the .npz file OUT, and each rank r the ReLU and max-pool
decisions of its shard at each step into OUT's folder as <OUT's stem>-decisions-r.npz (keys
"step-index"):

    python training_steps.py DTYPE sync|per BATCH STEPS LR SIZE SEED OUT [closed-form]

The test also imports it, to run the same steps in one process in float32 and float64 side by
side.
"""

import sys
from pathlib import Path

import numpy as np

import tinynet
from tinynet import distributed, optim
from tinynet.models.registry import model_entry

import kinks

ENTRY = model_entry("small")


def batches(seed: int, batch: int, size: int, count: int):
    """``count`` global batches (float32 images, labels): each image is its class's pattern
    (standard normal, drawn first, fixed) plus standard normal noise of std 0.3."""
    data = np.random.default_rng(seed)
    patterns = data.standard_normal((10, 1, size, size))
    for _ in range(count):
        labels = data.integers(0, 10, batch)
        noise = data.standard_normal((batch, 1, size, size))
        yield (patterns[labels] + 0.3 * noise).astype(np.float32), labels


def model_and_optimizer(dtype, lr: float):
    """The network, seeded (the same weights in every dtype), and its optimiser."""
    tinynet.manual_seed(0)
    model = ENTRY.build(in_channels=1, num_classes=10, width=0.0625).to(dtype)
    return model, optim.SGD(model.parameters(), lr, momentum=0.9)


def loss_of(model, images, labels):
    """The network's training loss: main + 0.3 x the aux heads' cross-entropies."""
    return ENTRY.loss(model(images), labels, 0.3, 0.0)


def closed_form_step(model, images, labels) -> float:
    """Per-rank BatchNorm's closed form for 2 ranks in one process: each half's gradient of
    (B_r/B) L_r with BatchNorm over that half alone, summed; the running statistics averaged
    over the halves; each half's Dropout masks are its rows of the masks drawn for the whole
    batch. Returns the batch's mean loss."""
    batch = len(labels)
    model.zero_grad()
    buffers = [b for _, b in model.named_buffers() if b.dtype.kind == "f"]
    dropouts = [m for m in model.modules() if isinstance(m, tinynet.nn.Dropout)]
    before, after, total = [b.copy() for b in buffers], [], 0.0
    masks = tinynet.rng.default_generator().bit_generator.state
    for rows in (slice(0, batch // 2), slice(batch // 2, batch)):
        for b, saved in zip(buffers, before):
            b[...] = saved
        for layer in dropouts:
            layer.generator = distributed.ShardedDraws(rows, batch)
        tinynet.rng.default_generator().bit_generator.state = masks
        loss = loss_of(model, images[rows], labels[rows])
        (loss * 0.5).backward()
        after.append([b.copy() for b in buffers])
        total += loss.item() * (batch // 2)
    for b, first, second in zip(buffers, *after):
        b[...] = (first + second) / 2
    return total / batch


def decisions_file(out, rank: int) -> Path:
    """Where ``rank`` saves its decisions when the losses and state go to ``out``."""
    return Path(out).with_name(f"{Path(out).stem}-decisions-{rank}.npz")


def main(dtype, mode, batch, count, lr, size, seed, out, *closed_form) -> None:
    group = distributed.world()
    model, optimizer = model_and_optimizer(dtype, float(lr))
    if mode == "sync":
        model = distributed.convert_sync_batchnorm(model, group)
    parallel = distributed.DataParallel(group, model, average_buffers=mode != "sync")
    losses, decided = [], {}
    for step, (images, labels) in enumerate(batches(int(seed), int(batch), int(size), int(count))):
        images = images.astype(dtype)
        if closed_form:
            losses.append(closed_form_step(model, images, labels))
        else:  # every rank: its shard of the batch, its gradient, the sum over the ranks
            shard, shard_labels = parallel.shard(images, labels)
            loss = loss_of(model, shard, shard_labels)
            for index, decision in enumerate(kinks.decisions(loss)):
                decided[f"{step}-{index}"] = decision
            optimizer.zero_grad()
            parallel.backward(loss)
            (total,) = parallel.allreduce_gradients(loss.item() * len(shard_labels))
            losses.append(total / len(labels))
        optimizer.step()
    np.savez(decisions_file(out, group.rank), **decided)
    if group.rank == 0:
        np.savez(out, losses=np.array(losses), **model.state_dict())


if __name__ == "__main__":
    main(*sys.argv[1:])
