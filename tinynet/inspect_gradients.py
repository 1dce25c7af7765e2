"""``tinynet inspect gradients``: why the paper added auxiliary classifiers, measured.

Three variants of the paper's network (its Inception blocks, LRN, dropout, and torchvision's
initialisation for it: a truncated normal of std 0.01) train side by side on the bundled digits, each from the same seed and on the
same batches:

    no aux      the paper's network without its auxiliary heads
    aux heads   with its two auxiliary classifiers on 4a and 4d (loss weight 0.3)
    BatchNorm   conv -> BatchNorm -> ReLU in every layer (Inception-BN), no aux heads

Each has the small stem (32x32 digits keep 16x16, 8x8 and 4x4 through the three stages; the
aux heads pool adaptively to 4x4) and trains with SGD (momentum 0.9, constant learning rate,
no weight decay, no augmentation). Every ``log_every`` steps ``tinynet.gradflow`` records each
layer's gradient norm; the comparison gives, per variant, the gradient norm of the stem's
first convolution and of blocks 3a, 4a, 4d and 5b (all their layers' weights together) at
initialisation and at the end, with the main head's loss, and draws the whole flow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from tinynet import io
from tinynet.data import DataLoader, load_dataset
from tinynet.data import transforms as T
from tinynet.functional import cross_entropy
from tinynet.gradflow import GradientFlow, block_norms, nonfinite
from tinynet.models.googlenet import googlenet_loss, googlenet_paper
from tinynet.optim import SGD
from tinynet.rng import manual_seed

VARIANTS = {
    "no aux": {"aux_logits": False},
    "aux heads": {"aux_logits": True},
    "BatchNorm": {"aux_logits": False, "batch_norm": True},
}
# The table's columns, and the rows of the figure (every weight-carrying block, input to output).
TABLE_BLOCKS = ("conv1", "inception3a", "inception4a", "inception4d", "inception5b")
FIGURE_BLOCKS = (
    "conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a", "inception4b",
    "inception4c", "inception4d", "inception4e", "inception5a", "inception5b", "fc",
)  # fmt: skip
MAX_WIDTH = 1.0


@dataclass
class GradientRun:
    """One variant's training: its gradient records (``tinynet.gradflow``) and the main head's
    cross-entropy at every step."""

    name: str
    records: list[dict]
    losses: list[float]

    def blocks(self, names=FIGURE_BLOCKS) -> list[dict]:
        """Its records with the gradient norm per block of ``names`` instead of per layer."""
        return [{"step": r["step"], "grad_norm": block_norms(r["grad_norm"], names)}
                for r in self.records]  # fmt: skip


def _check(name: str, value, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"compare_gradient_flow: {name} must be {expected}; got {value!r}")


def compare_gradient_flow(
    width: float = 0.125,
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 0.01,
    log_every: int = 10,
    seed: int = 0,
    data=None,
    log=None,
) -> list[GradientRun]:
    """Train each of ``VARIANTS`` for ``steps`` SGD steps and record its gradient flow every
    ``log_every`` steps (step 0: at initialisation).

    data: the digits' DataSplits (default: ``load_dataset('digits', seed=seed)``), of which the
    training split is used; log: called with a line as each variant finishes.
    """
    _check("width", width, 0 < width <= MAX_WIDTH, f"a number in (0, {MAX_WIDTH:g}]")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every)):
        _check(name, value, isinstance(value, int) and value >= 1, "a positive int")
    _check("lr", lr, math.isfinite(lr) and lr > 0, "a finite number > 0")
    _check("log_every", log_every, log_every <= steps, f"at most steps ({steps})")
    data = data if data is not None else load_dataset("digits", seed=seed)
    images = data.train.arrays[0]
    normalize = T.Normalize(images.mean(axis=(0, 2, 3)), images.std(axis=(0, 2, 3)) + 1e-6)
    runs = []
    for name, options in VARIANTS.items():
        manual_seed(seed)
        model = googlenet_paper(
            num_classes=len(data.classes), in_channels=images.shape[1], width=width,
            stem="small", aux_pool="adaptive4x4", **options,
        )  # fmt: skip
        loader = DataLoader(data.train, batch_size, shuffle=True, drop_last=True, seed=seed,
                            transform=normalize)  # fmt: skip
        runs.append(_train(name, model, loader, steps, lr, log_every))
        if log is not None:
            run = runs[-1]
            log(f"{name}: {steps} steps, main-head loss {run.losses[0]:.3f} -> "
                f"{run.losses[-1]:.3f}")  # fmt: skip
    return runs


def _batches(loader: DataLoader):
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def _train(name, model, loader, steps, lr, log_every) -> GradientRun:
    model.train()
    optimizer = SGD(list(model.parameters()), lr, momentum=0.9)
    flow = GradientFlow(model)
    records, losses = [], []
    for step, (images, labels) in enumerate(islice(_batches(loader), steps)):
        outputs = model(images)
        loss = googlenet_loss(outputs, labels)  # with aux heads: main + 0.3 x each
        losses.append(cross_entropy(getattr(outputs, "logits", outputs), labels).item())
        if not math.isfinite(losses[-1]):
            raise ValueError(f"inspect gradients: {name} diverged at step {step}; lower --lr")
        optimizer.zero_grad()
        loss.backward()
        logged = step % log_every == 0
        if logged:
            before = flow.before_step()
        optimizer.step()
        if logged:
            records.append(flow.after_step(before, 1 + step // len(loader), step))
            problem = nonfinite(records[-1])
            if problem:
                raise ValueError(f"inspect gradients: {name}: {problem} at step {step}; lower --lr")
    return GradientRun(name, records, losses)


def table(runs: list[GradientRun], window: int = 10) -> str:
    """The gradient norm of each of ``TABLE_BLOCKS`` per variant at step 0 and at the last
    logged step, with the main head's loss (at step 0, and the mean of the last ``window``)."""
    short = [b.replace("inception", "") for b in TABLE_BLOCKS]
    header = ["network", "step", *short, "main loss"]
    lines = []
    for run in runs:
        last = run.losses[-window:]
        ends = ((run.records[0], run.losses[0]), (run.records[-1], sum(last) / len(last)))
        for record, loss in ends:
            norms = block_norms(record["grad_norm"], TABLE_BLOCKS)
            cells = [f"{norms[block]:.2e}" for block in TABLE_BLOCKS]
            lines.append([run.name, str(record["step"]), *cells, f"{loss:.3f}"])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = lambda row: "  ".join(  # noqa: E731
        cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
    )
    return "\n".join([fmt(header), *map(fmt, lines)])


def save_runs(runs: list[GradientRun], out_dir) -> tuple[Path, Path]:
    """Write ``out_dir``/gradients.jsonl (every record, tagged with its variant; strict JSON)
    and ``out_dir``/gradients.png (the figure), each atomically; returns their paths."""
    from tinynet.plot import plot_gradient_comparison

    out_dir = Path(out_dir)
    records = out_dir / "gradients.jsonl"
    with io.atomic_write(records, "w") as file:
        for run in runs:
            for record in run.records:
                file.write(json.dumps({"network": run.name, **record}, allow_nan=False) + "\n")
    figure = plot_gradient_comparison({run.name: run.blocks() for run in runs},
                                      out_dir / "gradients.png")  # fmt: skip
    return records, figure
