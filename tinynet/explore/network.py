"""The explorer page of a whole network for one image: what ``tinynet explore`` writes.

    model, settings = network_from(checkpoint=None, model="small")
    data = network_page(model, image, label=None, classes=settings["classes"], title=...)
    write_page(data, "page.html")

The network runs in eval mode (BatchNorm on its running statistics, no dropout) on one image
(C, H, W); the loss is the cross-entropy of its logits against ``label``, by default the class
it predicts, so the backward shows what would make that prediction more certain.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tinynet import functional as F
from tinynet.explore.html import render_html
from tinynet.explore.page import page_data
from tinynet.io import atomic_write, check_writable_folder
from tinynet.nn.module import Module
from tinynet.tensor import Tensor

SAMPLE_SEED = 0
SAMPLE_NAME = "a fixed sample (seeded noise)"


def fixed_sample(channels: int, size: int) -> np.ndarray:
    """The image shown when none is given: seeded standard-normal noise (C, H, W), the same on
    every run, so that two pages of one network compare."""
    return np.random.default_rng(SAMPLE_SEED).standard_normal((channels, size, size), np.float32)


def first_test_image(config, size: int) -> tuple[np.ndarray | None, str]:
    """A checkpoint's image when none is given: (the first image of its run's test split in
    [0, 1], its name) if that split is held in memory and its files are at hand (nothing is
    downloaded); else (None, why not)."""
    from tinynet.data.dataset import TensorDataset
    from tinynet.train import load_data

    try:
        test = load_data(dataclasses.replace(config, image_size=size, download=False)).test
    except (OSError, ValueError, ImportError) as error:  # DatasetError is a ValueError
        return None, (str(error).splitlines() or [type(error).__name__])[0]
    if not isinstance(test, TensorDataset):
        return None, "an image folder's test split: give one of its files as --image"
    images, labels = test.arrays[:2]
    return images[0], f"test image 0 of {config.dataset} (class {config.classes[labels[0]]})"


def network_from(checkpoint=None, model: str | None = None) -> tuple[Module, dict]:
    """(eval-mode network, settings: name, channels, input_size, mean, std, classes) from a
    training checkpoint (loaded as ``tinynet evaluate`` loads it) or a registered model name
    (seeded random weights)."""
    if (checkpoint is None) == (model is None):
        raise ValueError("explore takes a CHECKPOINT or --model NAME (one of them)")
    if checkpoint is not None:
        from tinynet.train import load_trained_model

        network, config = load_trained_model(checkpoint)
        return network, {
            "name": f"{Path(checkpoint)} ({config.model})",
            "channels": config.channels,
            "input_size": config.input_size,
            "mean": config.mean,
            "std": config.std,
            "classes": list(config.classes),
            "config": config,
        }
    from tinynet.models.registry import model_entry
    from tinynet.rng import manual_seed

    entry = model_entry(model)
    manual_seed(SAMPLE_SEED)
    network = entry.build().eval()
    return network, {"name": f"{model} (random weights, seed {SAMPLE_SEED})", "channels": 3,
                     "input_size": entry.input_size, "mean": None, "std": None,
                     "classes": None, "config": None}  # fmt: skip


def network_page(
    model: Module,
    image: np.ndarray,
    label: int | None = None,
    *,
    classes=None,
    title: str = "tinynet explorer",
    image_name: str = SAMPLE_NAME,
    **options,
) -> dict:
    """``page_data`` for ``model`` (run in eval mode) on ``image`` (C, H, W, normalised),
    with the cross-entropy loss against ``label`` (default: the predicted class)."""
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise ValueError(f"network_page: image must be (C, H, W); got shape {image.shape}")
    model.eval()
    x = Tensor(image[None], requires_grad=True)
    logits = model(x)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if logits.ndim != 2 or len(logits) != 1:
        raise ValueError(f"network_page: the model gives logits of shape {logits.shape}; "
                         "expected (1, classes)")  # fmt: skip
    scores = logits.data[0]
    predicted = int(np.argmax(scores))
    count = len(scores)
    if label is None:
        label = predicted
    if not isinstance(label, (int, np.integer)) or not 0 <= label < count:
        raise ValueError(f"label must be a class index in [0, {count}); got {label!r}")
    loss = F.cross_entropy(logits, np.array([label]))
    name = (lambda k: f"{k} ({classes[k]})") if classes else str
    info = {
        "image": f"{image_name}, {' x '.join(map(str, image.shape))}",
        "predicted class": name(predicted),
        "label (backward from)": name(int(label)),
        "loss": f"{loss.item():.6g}",
        # said on the page: with random weights and fresh running statistics (mean 0, var 1)
        # BatchNorm normalises nothing, and the values shrink block after block
        "mode": "eval (BatchNorm on its running statistics, no dropout)",
    }
    data = page_data(loss, model, title=title, names={"image": x}, info=info, **options)
    return data


def write_network_page(
    checkpoint=None,
    model: str | None = None,
    image=None,
    label: int | None = None,
    out=None,
    input_size: int | None = None,
) -> Path:
    """What ``tinynet explore (CHECKPOINT | --model NAME) [--image IMAGE] [--label K]
    [--input-size S] --out page.html`` does: the page of the network for the image file
    ``image``, written to ``out``; returns its path. A checkpoint's image is read and normalised
    as ``tinynet predict`` reads it (by default: its run's first test image, if at hand); with
    --model, its pixels are taken in [0, 1]; else ``fixed_sample``."""
    if out is None:
        raise ValueError("--out is needed: the .html file to write")
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out must end in .html; got {str(out)!r}")
    check_writable_folder(out.parent, "--out")  # before the forward and backward passes
    if image is not None and not Path(image).is_file():
        raise FileNotFoundError(f"--image {image}: no such file")
    network, settings = network_from(checkpoint, model)
    size = input_size or settings["input_size"]
    pixels, why_not = None, ""
    if image is not None:
        from tinynet.data import read_image

        mode = "L" if settings["channels"] == 1 else "RGB"
        pixels, image_name = read_image(image, size, mode), Path(image).name
    elif settings["config"] is not None:
        pixels, image_name = first_test_image(settings["config"], size)
        why_not = "" if pixels is not None else f" (the run's test image: {image_name})"
    if pixels is None:  # seeded noise, centred already
        pixels, image_name = fixed_sample(settings["channels"], size), SAMPLE_NAME + why_not
    elif settings["mean"] is not None:
        from tinynet.data import transforms as T

        pixels = T.Normalize(settings["mean"], settings["std"])(pixels[None])[0]
    title = f"tinynet explore: {settings['name']}"
    data = network_page(
        network, pixels, label, classes=settings["classes"], title=title, image_name=image_name
    )
    return write_page(data, out)


def write_page(data: dict, path, *, scripts: tuple[str, ...] = ()) -> Path:
    """Write ``render_html(data, scripts=scripts)`` to ``path`` atomically; returns the path."""
    path = Path(path)
    text = render_html(data, scripts=scripts)
    with atomic_write(path) as file:
        file.write(text.encode("utf-8"))
    return path
