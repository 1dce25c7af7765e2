"""``tinynet inspect activations``: what each Inception branch (and the stem) sees of one image.

One forward pass of a trained network, in eval mode, through ``tinynet.capture``; then one PNG
per group, written atomically:

    stem.png          the input image and each stem convolution's output
    inception3a.png   branch1 (1x1), branch2 (1x1 -> 3x3), branch3 (1x1 -> 5x5 or 3x3),
    ...               branch4 (pool -> 1x1): one row each

Each row is titled with the module's name and its output's shape (C x H x W) and shows the
``channels`` feature maps with the largest mean activation, on one colour scale per row (so the
maps of a row compare, and a branch that is nearly silent shows dark).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinynet.capture import capture
from tinynet.data import read_image
from tinynet.data import transforms as T
from tinynet.function import no_grad
from tinynet.models.googlenet import Inception
from tinynet.nn import Conv2d
from tinynet.nn.module import Module
from tinynet.train import load_trained_model

STEM = "stem"


def activation_groups(model: Module) -> dict[str, list[str]]:
    """The modules drawn, by figure: ``"stem"`` -> the model's top-level children before its
    first Inception block that hold a convolution; each Inception block -> its branches."""
    groups: dict[str, list[str]] = {STEM: []}
    for name, child in model.named_children():
        if isinstance(child, Inception):
            groups[name] = [f"{name}.{branch}" for branch, _ in child.named_children()]
        elif len(groups) == 1 and any(isinstance(m, Conv2d) for m in child.modules()):
            groups[STEM].append(name)
    if len(groups) == 1:
        raise ValueError(
            f"inspect activations: {type(model).__name__} has no Inception blocks to draw"
        )
    return groups


def branch_activations(model: Module, image: np.ndarray) -> dict[str, np.ndarray]:
    """Module name -> its output (C, H, W) for ``image`` (C, H, W, already normalised), for every
    module of ``activation_groups``; one forward pass without gradients."""
    names = [name for group in activation_groups(model).values() for name in group]
    with no_grad(), capture(model, names) as record:
        model(image[None])
    return {name: record.activations[name][0] for name in names}


def top_channels(activation: np.ndarray, count: int) -> np.ndarray:
    """The indices of ``activation``'s (C, H, W) ``count`` channels of largest mean, largest
    first (ties: the lower index first)."""
    means = activation.reshape(activation.shape[0], -1).mean(axis=1)
    return np.argsort(-means, kind="stable")[:count]


def inspect_activations(checkpoint, image, out_dir, channels: int = 8) -> list[Path]:
    """Draw ``out_dir``/stem.png and one ``out_dir``/<block>.png per Inception block for the
    image file ``image`` through the network of the training checkpoint ``checkpoint``; returns
    the paths written. Raises ImportError if matplotlib is not installed."""
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"inspect activations: channels must be a positive int; got {channels!r}")
    model, config = load_trained_model(checkpoint)
    pixels = read_image(image, config.input_size, "L" if config.channels == 1 else "RGB")
    normalized = T.Normalize(config.mean, config.std)(pixels[None])[0]
    activations = branch_activations(model, normalized)
    paths = []
    for group, names in activation_groups(model).items():
        rows = {name: activations[name] for name in names}
        if group == STEM:
            rows = {f"input ({Path(image).name})": pixels, **rows}
        paths.append(plot_activation_grid(rows, channels, group, Path(out_dir) / f"{group}.png"))
    return paths


def plot_activation_grid(rows: dict[str, np.ndarray], channels: int, title: str, path) -> Path:
    """One row per entry of ``rows`` (title -> a (C, H, W) activation): its ``channels`` most
    active maps on one colour scale, titled with the name and shape; written atomically."""
    from tinynet.plot import pyplot, save_figure

    plt = pyplot("drawing the activation grids")
    columns = min(channels, max(a.shape[0] for a in rows.values()))
    figure = plt.figure(figsize=(1.3 * columns, 1.6 * len(rows) + 0.4), layout="constrained")
    figure.suptitle(title, fontweight="bold")
    for subfigure, (name, activation) in zip(figure.subfigures(len(rows), 1), rows.items()):
        shown = top_channels(activation, columns)
        low, high = float(activation[shown].min()), float(activation[shown].max())
        subfigure.suptitle(f"{name}: {' x '.join(map(str, activation.shape))}", fontsize=9)
        for column, axes in enumerate(subfigure.subplots(1, columns, squeeze=False)[0]):
            axes.set_axis_off()
            if column < len(shown):
                axes.imshow(activation[shown[column]], cmap="viridis", vmin=low,
                            vmax=max(high, low + 1e-12))  # fmt: skip
                axes.set_title(f"ch {shown[column]}", fontsize=7)
    return save_figure(plt, figure, path)
