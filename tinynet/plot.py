"""Figures of a training run as PNGs (matplotlib, an optional extra), each written atomically:
the loss and accuracy curves, and the gradient flow per layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinynet.io import atomic_write


def pyplot(what: str):
    """matplotlib.pyplot on the file-only Agg backend; ImportError saying what to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(f"{what} needs matplotlib: pip install 'tinynet[train]'") from error
    return plt


def save_figure(plt, figure, path) -> Path:
    """Write ``figure`` to ``path`` as a PNG, atomically, and close it."""
    path = Path(path)
    try:
        with atomic_write(path) as file:
            figure.savefig(file, format="png", dpi=100)
    finally:
        plt.close(figure)
    return path


def plot_history(history: list[dict], path) -> Path:
    """Draw train/test loss and test top-1 accuracy per epoch into ``path`` (written atomically).

    history: the per-epoch records of ``tinynet.train.Trainer`` (keys epoch, train_loss,
    test_loss, test_top1, train_top1). Raises ImportError if matplotlib is not installed.
    """
    plt = pyplot("plotting the training curves")
    epochs = [h["epoch"] for h in history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    # The training loss is the paper's (main + 0.3 x each aux head); the test loss the main head's.
    loss_axes.plot(epochs, [h["train_loss"] for h in history], "o-", label="train (with aux)")
    loss_axes.plot(epochs, [h["test_loss"] for h in history], "o-", label="test")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    accuracy_axes.plot(epochs, [100 * h["train_top1"] for h in history], "o-", label="train")
    accuracy_axes.plot(epochs, [100 * h["test_top1"] for h in history], "o-", label="test")
    accuracy_axes.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return save_figure(plt, figure, path)


def heatmap(axes, records: list[dict], key: str, norm, title: str):
    """One panel: ``records[i][key]`` (layer -> value; ``tinynet.gradflow`` records) with the
    layers down, in network order, and the steps across; zeros (no gradient) left blank."""
    layers = list(records[0][key])
    steps = [r["step"] for r in records]
    values = np.array([[r[key][layer] for r in records] for layer in layers])
    values = np.ma.masked_less_equal(values, 0)
    # Cell edges halfway between logged steps, so uneven logging draws true widths.
    middles = np.array(steps, dtype=float)
    gaps = np.diff(middles) if len(steps) > 1 else np.array([1.0])
    edges = np.concatenate([[middles[0] - gaps[0] / 2], middles[:-1] + gaps / 2,
                            [middles[-1] + gaps[-1] / 2]])  # fmt: skip
    image = axes.pcolormesh(edges, np.arange(len(layers) + 1), values, norm=norm, cmap="viridis")
    size = max(4, min(8, 400 // len(layers)))
    axes.set_yticks(np.arange(len(layers)) + 0.5, layers, fontsize=size)
    axes.set_ylim(len(layers), 0)  # the first layer on top (idempotent, unlike invert_yaxis)
    axes.set(xlabel="training step", title=title)
    return image


def plot_gradients(records: list[dict], path) -> Path:
    """Draw the gradient norm and the update-to-weight ratio of every layer at every logged step
    (``tinynet.gradflow`` records), on log colour scales, into ``path`` (written atomically).
    Raises ImportError if matplotlib is not installed."""
    plt = pyplot("plotting the gradient flow")
    from matplotlib.colors import LogNorm

    layers = len(records[0]["grad_norm"])
    figure, panels = plt.subplots(1, 2, figsize=(13, 2 + 0.14 * layers), sharey=True)
    titles = {"grad_norm": "gradient norm ‖∂L/∂W‖", "update_ratio": "update ratio ‖ΔW‖ / ‖W‖"}
    for axes, (key, title) in zip(panels, titles.items()):
        image = heatmap(axes, records, key, LogNorm(), title)
        figure.colorbar(image, ax=axes, fraction=0.05, pad=0.02)
    figure.tight_layout()
    return save_figure(plt, figure, path)


def plot_gradient_comparison(runs: dict[str, list[dict]], path) -> Path:
    """Draw, for networks trained side by side, the gradient norm per block and step (one panel
    each, on one log colour scale) and the norm along the depth at the first and last logged
    step (the last panel) into ``path`` (written atomically).

    runs: name -> records with "step" and "grad_norm" (block -> norm), the same blocks in each.
    Raises ImportError if matplotlib is not installed."""
    plt = pyplot("plotting the gradient flow")
    from matplotlib.colors import LogNorm

    values = [v for records in runs.values() for r in records for v in r["grad_norm"].values()]
    positive = [v for v in values if v > 0]
    norm = LogNorm(min(positive), max(positive))
    figure, panels = plt.subplots(
        1, len(runs) + 1, figsize=(4.2 * (len(runs) + 1), 4.6), layout="constrained"
    )
    for axes, (name, records) in zip(panels, runs.items()):
        image = heatmap(axes, records, "grad_norm", norm, name)
    figure.colorbar(image, ax=panels[:-1], fraction=0.02, pad=0.01)
    figure.suptitle("gradient norm ‖∂L/∂W‖ of each block's weights (log scale)")
    depth = panels[-1]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, records), colour in zip(runs.items(), colours):
        blocks = list(records[0]["grad_norm"])
        for record, style in ((records[0], "-"), (records[-1], "--")):
            depth.plot(range(len(blocks)), [record["grad_norm"][b] for b in blocks], style,
                       marker="o", markersize=3, color=colour,
                       label=f"{name}, step {record['step']}")  # fmt: skip
    depth.set_xticks(range(len(blocks)), [b.replace("inception", "") for b in blocks],
                     rotation=90)  # fmt: skip
    depth.set(yscale="log", xlabel="block (input to output)", title="along the depth")
    depth.grid(alpha=0.3)
    depth.legend(fontsize=7)
    return save_figure(plt, figure, path)
