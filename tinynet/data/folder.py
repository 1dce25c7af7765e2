"""image_folder: a directory of class sub-folders of PNG/JPEG images, read with Pillow.

    root/cat/001.jpg, root/cat/002.png, root/dog/xyz.jpeg, ...

Classes are the sub-folder names, sorted; label k is the k-th. Files whose names end in .png,
.jpg or .jpeg (any case) are read; hidden files and other files are skipped. If root instead
holds ``train`` and ``test`` (or ``val``) folders, each laid out as above, those are the splits.

Every image is converted to RGB (3 channels) by default, or to grayscale with mode="L" (1
channel); one mode for all, so a folder mixing grayscale and colour images still stacks. Then it
is resized with Pillow's bilinear filter, which smooths when shrinking (photographs are usually
much larger than the network's input): an int image_size scales the shorter side to it and
crops the centred square; a (height, width) pair resizes to exactly that. Decoding is the one
per-image loop; the pixels go straight into one preallocated uint8 array.

Every class folder of the training split needs at least one image. An image Pillow cannot
decode, or one larger than Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, whose
warning is taken as the refusal it announces), raises ``DatasetError`` naming the file.
"""

from __future__ import annotations

import numbers
import struct
import warnings
from pathlib import Path

import numpy as np

from tinynet.data.dataset import DataSplits, TensorDataset, seeded_split
from tinynet.data.formats import DatasetError, memory_named, to_unit_float
from tinynet.data.transforms import center_offsets, resized_shape

EXTENSIONS = (".png", ".jpg", ".jpeg")
MODES = {"RGB": 3, "L": 1}
INSTALL_HINT = "pip install 'tinynet[train]'"


def image_folder(
    root,
    image_size,
    mode: str = "RGB",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DataSplits:
    """The images under ``root`` as float32 (N, C, H, W) in [0, 1] with int64 labels.

    image_size:    int (shorter side, then the centred square) or (height, width)
    mode:          "RGB" (3 channels) or "L" (grayscale, 1 channel)
    test_fraction, seed: without train/test folders, all images are permuted by
                   ``np.random.default_rng(seed)`` and the last ``round(N * test_fraction)``
                   are the test set, as ``digits`` does
    """
    Image = _pillow("image_folder")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise NotADirectoryError(f"image_folder: root {root} is not a directory")
    if mode not in MODES:
        raise ValueError(f"image_folder: mode must be one of {sorted(MODES)}; got {mode!r}")
    size = _target_size(image_size)
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        classes = _class_folders(root / "train")
        train = _read_split(root / "train", classes, size, mode, Image, every_class=True)
        test = _read_split(test_dir, classes, size, mode, Image, every_class=False)
        return DataSplits(TensorDataset(*train), TensorDataset(*test), classes)
    classes = _class_folders(root)
    images, labels = _read_split(root, classes, size, mode, Image, every_class=True)
    return seeded_split(images, labels, classes, seed, test_fraction, "image_folder")


def read_image(path, image_size, mode: str = "RGB") -> np.ndarray:
    """One image file as float32 (C, H, W) in [0, 1], decoded and resized exactly as
    ``image_folder`` does (e.g. to classify it with a network trained on such folders)."""
    if mode not in MODES:
        raise ValueError(f"read_image: mode must be one of {sorted(MODES)}; got {mode!r}")
    pixels = _decode(Path(path), _target_size(image_size), mode, _pillow("read_image"))
    pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    return to_unit_float(pixels.transpose(2, 0, 1))


def _pillow(caller: str):
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            f"{caller} reads images with Pillow, which is not installed: {INSTALL_HINT}"
        ) from error
    return Image


def _target_size(image_size):
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        if image_size < 1:
            raise ValueError(f"image_folder: image_size must be >= 1; got {image_size}")
        return int(image_size)
    if (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(s, numbers.Integral) and s >= 1 for s in image_size)
    ):
        return tuple(int(s) for s in image_size)
    raise ValueError(
        f"image_folder: image_size must be an int or a (height, width) pair of ints >= 1; got "
        f"{image_size!r}"
    )


def _class_folders(root: Path) -> tuple[str, ...]:
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != "."))
    if not classes:
        raise DatasetError(f"image_folder: {root} has no class sub-folders")
    return classes


def _read_split(
    root: Path, classes, size, mode, Image, every_class: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The images of ``root``'s class folders; ``every_class``: each must hold one (a
    training split does; a test split may lack a class, or hold an empty folder for it)."""
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        found = sorted(
            p
            for p in (folder.iterdir() if folder.is_dir() else ())
            if p.is_file() and p.name[0] != "." and p.suffix.lower() in EXTENSIONS
        )
        if every_class and not found:
            raise DatasetError(
                f"image_folder: class folder {folder} holds no {'/'.join(EXTENSIONS)} images; "
                f"every class needs at least one to train on"
            )
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetError(
            f"image_folder: no {'/'.join(EXTENSIONS)} files in the class folders of {root}"
        )
    extra = sorted(
        p.name for p in root.iterdir() if p.is_dir() and p.name[0] != "." and p.name not in classes
    )
    if extra:
        raise DatasetError(
            f"image_folder: {root} has class folders {extra} that the training split lacks"
        )
    height, width = (size, size) if isinstance(size, int) else size
    with memory_named(root):
        pixels = np.empty((len(files), height, width, MODES[mode]), dtype=np.uint8)
        for i, path in enumerate(files):
            pixels[i] = _decode(path, size, mode, Image).reshape(height, width, -1)
        return to_unit_float(pixels.transpose(0, 3, 1, 2)), np.asarray(labels, dtype=np.int64)


def _decode(path: Path, size, mode, Image) -> np.ndarray:
    """One image, converted to ``mode`` and brought to ``size``, as uint8 (H, W[, C])."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, not warn
            with Image.open(path) as image:
                image = image.convert(mode)
                if isinstance(size, int):
                    height, width = resized_shape(image.height, image.width, size)
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                    top, left = center_offsets(height, width, size, size)
                    image = image.crop((left, top, left + size, top + size))
                else:
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                return np.asarray(image, dtype=np.uint8)
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        struct.error,
        MemoryError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:  # what Pillow raises on a broken, hostile or oversized file
        reason = str(error) or type(error).__name__
        raise DatasetError(f"{path}: cannot decode this image ({reason})") from error
