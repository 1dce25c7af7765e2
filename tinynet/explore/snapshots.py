"""What ``tinynet train --explore-every N`` writes for ``tinynet explore --watch`` to show.

Every N optimiser steps (the first at step 0) the trainer's writer rewrites, each file
atomically (``tinynet.io.atomic_write``), in ``RUN_DIR/explore/``:

    steps.json        the run (model, epochs, steps per epoch, N) and one point per logged step:
                      {"step", "epoch", "loss", "top1", "lr"}, the batch's mean loss and top-1
    layers.json       each weight layer's gradient norm ‖∂L/∂W‖ and update ratio ‖ΔW‖/‖W‖ at
                      the logged steps (``tinynet.gradflow``), one list per record in the order
                      of "names"
    activations.json  a fixed image (the first of the test split) and, for the latest
                      ``KEEP_ACTIVATIONS`` logged steps, the output of each top-level module
                      holding a convolution, in eval mode, summarised as the explorer page
                      summarises a value (``tinynet.explore.page``): statistics, histogram and
                      its ``CHANNELS`` most active maps, sides at most ``MAP_SIZE``

Bounded whatever the run's length: the points and layer records are thinned to every other
one when they pass ``MAX_POINTS`` and ``MAX_LAYER_RECORDS`` (the early steps stay, more
sparsely), and only the latest activation snapshots are kept (about 40 kB each for the small
GoogLeNet on the digits).

The snapshot changes nothing in the run: the image's forward pass runs without gradients, in
eval mode (BatchNorm uses and keeps its running statistics, dropout draws nothing), and the
model's mode is restored after it, so a run computes the same losses with the option as
without. A resumed run keeps the points of its earlier part (those before its first step).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tinynet import io
from tinynet.capture import capture
from tinynet.explore.page import ValueSummary
from tinynet.function import no_grad
from tinynet.gradflow import GradientFlow
from tinynet.nn import Conv2d

FOLDER = "explore"
STEPS, LAYERS, ACTIVATIONS = "steps.json", "layers.json", "activations.json"
FILES = tuple(f"{FOLDER}/{name}" for name in (STEPS, LAYERS, ACTIVATIONS))
FORMAT = "tinynet-explore"
MAX_POINTS, MAX_LAYER_RECORDS, KEEP_ACTIVATIONS = 2000, 200, 4
CHANNELS, MAP_SIZE = 8, 32


class SnapshotWriter:
    """Writes ``RUN_DIR/explore/`` for a run every ``every`` steps.

    model:  the network being trained
    image:  the fixed image (C, H, W) as the dataset gives it; ``normalize`` maps a batch of
            such images to the network's input
    run:    what the page shows about the run: {"model", "dataset", "epochs",
            "steps_per_epoch"} (``every`` is added)
    """

    def __init__(self, model, image: np.ndarray, normalize, out_dir, every: int, run: dict):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"SnapshotWriter: every must be a positive int; got {every!r}")
        self.model, self.every = model, every
        self.folder = Path(out_dir) / FOLDER
        self.run = {**run, "every": every}
        image = np.asarray(image, np.float32)[None]
        self.input = normalize(image)
        self.summary = ValueSummary(CHANNELS, MAP_SIZE)
        self.input_summary = self.summary(image, signed=False)
        self.flow = GradientFlow(model)
        self.modules = _watched_modules(model)
        self.points: list[dict] | None = None  # None until the first write reads what is there
        self.layer_records: list[dict] = []
        self.snapshots: list[dict] = []

    def due(self, step: int) -> bool:
        """Whether global step ``step`` (optimiser steps from 0) is logged."""
        return step % self.every == 0

    def before_update(self):
        """After the backward, before clipping and the optimiser's step: what ``after_update``
        needs (the gradient norms and a copy of the weights)."""
        return self.flow.before_step()

    def after_update(self, before, epoch: int, step: int, loss: float, top1: float, lr: float):
        """After the optimiser's step: measure, snapshot and write the three files."""
        record = self.flow.after_step(before, epoch, step)
        if self.points is None:
            self._keep_earlier(step)
        self.points.append(
            {"step": step, "epoch": epoch, "loss": loss, "top1": top1, "lr": float(lr)}
        )
        self.layer_records.append(
            {
                "step": step,
                "epoch": epoch,
                "grad_norm": _finite([record["grad_norm"][name] for name in self.flow.names]),
                "update_ratio": _finite([record["update_ratio"][n] for n in self.flow.names]),
            }
        )
        self.snapshots = [*self.snapshots, self._activations(step, epoch)][-KEEP_ACTIVATIONS:]
        self.points = _thinned(self.points, MAX_POINTS)
        self.layer_records = _thinned(self.layer_records, MAX_LAYER_RECORDS)
        self._write(STEPS, {"run": self.run, "points": self.points})
        self._write(LAYERS, {"names": self.flow.names, "records": self.layer_records})
        self._write(ACTIVATIONS, {"input": self.input_summary, "snapshots": self.snapshots})

    def _keep_earlier(self, step: int) -> None:
        """Start from the points a resumed run's earlier part wrote (those before ``step``;
        none for a new run, which starts at 0), if its files are readable."""
        steps, layers = self._read(STEPS), self._read(LAYERS)
        self.points = _before(steps.get("points"), step)
        if layers.get("names") == self.flow.names:
            self.layer_records = _before(layers.get("records"), step)

    def _read(self, name: str) -> dict:
        try:
            found = json.loads((self.folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet, or not ours to continue: start afresh
            return {}
        return found if isinstance(found, dict) and found.get("format") == FORMAT else {}

    def _write(self, name: str, content: dict) -> None:
        text = json.dumps({"format": FORMAT, **content}, allow_nan=False, separators=(",", ":"))
        with io.atomic_write(self.folder / name, "w") as file:
            file.write(text)

    def _activations(self, step: int, epoch: int) -> dict:
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad(), capture(self.model, self.modules) as record:
                self.model(self.input)
        finally:
            self.model.train(was_training)
        modules = [
            {"name": name, **self.summary(record.activations[name], signed=False)}
            for name in self.modules
            if name in record.activations  # a module eval mode skips (an aux head) has none
        ]
        return {"step": step, "epoch": epoch, "modules": modules}


def _before(records, step: int) -> list[dict]:
    """The records (dicts with an int "step") of ``records`` before ``step``."""
    if not isinstance(records, list):
        return []
    return [
        r for r in records
        if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] < step
    ]  # fmt: skip


def _thinned(items: list, most: int) -> list:
    """``items`` if it has at most ``most`` entries, else every other one and the last."""
    if len(items) <= most:
        return items
    return [*items[:-1:2], items[-1]] if len(items) % 2 == 0 else items[::2]


def _watched_modules(model) -> list[str]:
    """The names of ``model``'s top-level modules holding a convolution (the stem's convs, the
    Inception blocks), looking inside a lone container that holds them all (Inception-v4's
    ``features``)."""
    prefix, module = "", model
    while True:
        names = [
            name for name, child in module.named_children()
            if any(isinstance(m, Conv2d) for m in child.modules())
        ]  # fmt: skip
        if len(names) != 1 or not list(getattr(module, names[0]).children()):
            return [prefix + name for name in names]
        prefix, module = f"{prefix}{names[0]}.", getattr(module, names[0])


def _finite(values: list[float]) -> list[float | None]:
    """``values`` with NaN and infinities as None (JSON's null: a gap in the page's plot); an
    all-zero layer that moved has an infinite update ratio, which need not stop the run."""
    return [value if math.isfinite(value) else None for value in values]
