"""A training run's numbers as TensorBoard event files: ``tinynet train --tensorboard``.

    tensorboard --logdir RUN_DIR/tensorboard

What the Trainer writes into ``out_dir/tensorboard/`` (rank 0 alone), by step (optimizer steps,
counted over the whole run from 1) and by epoch:

    train/loss, train/top1, train/lr        each step: the step's mean loss and top-1 accuracy
                                            over its images, the learning rate it stepped with
    train/data_wait_s                       each step, when the loader measures it: the seconds
                                            the step waited for its batches
    epoch/<key>                             each epoch: every number of its metrics.jsonl record
                                            (train_loss, test_top1, lr, data_wait_s, ...)
    weights/<name>, gradients/<name>        histograms of every parameter and its gradient (as
                                            the update will use it) every ``histogram_every``
                                            steps, from the first
    augmented_batch                         the first batch of the run, as the network sees it
                                            after augmentation (un-normalised), as a grid

The records are written by tensorboardX (the ``tensorboard`` extra), a small, maintained writer
of TensorBoard's format with NumPy inputs only (no TensorFlow, no PyTorch); the format itself is
protobuf records with CRC-checked framing that this project has no reason to write by hand.
tests/test_tensorboard.py reads the files back with TensorBoard's own reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FOLDER = "tensorboard"
EXTRA = "pip install 'tinynet[tensorboard]' (or: pip install tensorboardX)"


def _writer_class():
    """tensorboardX's SummaryWriter, or the one-line error that names the extra to install."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as error:
        raise ImportError(f"--tensorboard needs the tensorboardX package: {EXTRA}") from error
    return SummaryWriter


def check_available() -> None:
    """Raise the one-line ImportError now (before minutes of loading data) if the writer is
    missing."""
    _writer_class()


def remove_events(out_dir) -> None:
    """Remove the event files of an earlier run from ``out_dir/tensorboard`` (a run that
    starts afresh in its folder replaces them, as ``--overwrite`` replaces its other files)."""
    folder = Path(out_dir) / FOLDER
    if folder.is_dir():
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()


class TensorBoardLog:
    """The writer of one run's event files in ``out_dir/tensorboard``.

    fresh:      a run that starts now (not resumed): it draws its first batch
    mean, std:  the per-channel normalisation, undone to draw the augmented batch
    """

    def __init__(self, out_dir, histogram_every: int, mean, std, fresh: bool):
        writer = _writer_class()
        self.folder = Path(out_dir) / FOLDER
        self.writer = writer(logdir=str(self.folder), flush_secs=30)
        self.histogram_every = histogram_every
        self.mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        self.batch_drawn = not fresh

    def step(self, step: int, loss: float, top1: float, lr: float, data_wait: float | None):
        """One optimizer step's numbers (``step`` counts from 1)."""
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/top1", top1, step)
        self.writer.add_scalar("train/lr", lr, step)
        if data_wait is not None:
            self.writer.add_scalar("train/data_wait_s", data_wait, step)

    def wants_histograms(self, step: int) -> bool:
        return (step - 1) % self.histogram_every == 0

    def histograms(self, step: int, named_parameters) -> None:
        """Every parameter's values and gradient (those without a gradient: values only)."""
        for name, parameter in named_parameters:
            self.writer.add_histogram(f"weights/{name}", parameter.data, step)
            if parameter.grad is not None:
                self.writer.add_histogram(f"gradients/{name}", parameter.grad, step)

    def first_batch(self, images: np.ndarray) -> None:
        """The run's first augmented batch, once: normalised images back to [0, 1] in a grid."""
        if self.batch_drawn:
            return
        self.batch_drawn = True
        pixels = np.clip(images * self.std + self.mean, 0.0, 1.0)
        if pixels.shape[1] not in (1, 3):  # TensorBoard draws gray or RGB: the first channel
            pixels = pixels[:, :1]
        self.writer.add_images("augmented_batch", pixels, 0, dataformats="NCHW")

    def epoch(self, record: dict) -> None:
        """An epoch's metrics.jsonl record, each number as ``epoch/<key>`` at its epoch."""
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"epoch/{key}", value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
