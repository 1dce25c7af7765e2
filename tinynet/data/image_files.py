"""An image folder as a list of files, decoded when a batch asks for them (the streaming path).

    train, test, classes = image_files("photos/", image_size=224)
    images, labels = test[np.array([0, 5])]      # decoded now: float32 (2, 3, 224, 224)

The folder is listed as ``tinynet.data.folder.image_folder`` lists it (same classes, splits,
seeded test fraction, formats and checks), but nothing is decoded up front: memory does not
grow with the number of images. ``dataset[indices]`` gives the evaluation view (the shorter
side scaled to ``image_size``, the centred square, exactly ``image_folder``'s pixels);
``dataset.pixels(index, augment, rng)`` gives one image as the training augmentation of
``tinynet.data.augment`` makes it, which is what the streaming loader's workers call.

A file that disappears, or a folder that does, between the listing and a read, is an error that
names it (``check_present`` says how many are gone before an epoch starts). An image that cannot
be decoded is a ``DatasetError`` naming the file; with ``skip_bad_images`` set,
``dataset[indices]`` leaves it out (its batch is shorter) and notes it in ``skipped``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from tinynet.data import augment as A
from tinynet.data.dataset import Dataset, DataSplits, split_order
from tinynet.data.folder import (
    MODES,
    _decode,
    _pillow,
    _scaled,
    _target_size,
    decoded,
    full_image,
    list_image_folder,
)
from tinynet.data.formats import DatasetError, to_unit_float


class ImageFiles(Dataset):
    """The images ``files`` (paths) with int64 ``labels``, decoded on demand at ``image_size``
    (an int: the side of the square) in ``mode`` ("RGB" or "L")."""

    def __init__(self, root, files, labels, image_size: int, mode: str = "RGB"):
        self.root = Path(root)
        self.files = [Path(f) for f in files]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.image_size = int(image_size)
        self.mode = mode
        self.channels = MODES[mode]
        self.cache = None  # an ImageCache of the decoded squares (streaming.attach_cache)
        self.skip_bad_images = False  # whether dataset[indices] leaves out undecodable images
        self.skipped: list[str] = []  # the messages of those it left out

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of an image this dataset gives."""
        return self.channels, self.image_size, self.image_size

    def __getitem__(self, index):
        indices = np.atleast_1d(np.asarray(index, dtype=np.int64))
        pixels, kept = [], []
        for i in indices:
            try:
                pixels.append(self.pixels(int(i), "none"))
            except DatasetError as error:
                if not self.skip_bad_images or np.ndim(index) == 0:
                    raise
                self.skipped.append(str(error))
                continue
            kept.append(i)
        shape = (0, *self.image_shape)
        images = to_unit_float(np.stack(pixels) if pixels else np.empty(shape, np.uint8))
        labels = self.labels[np.asarray(kept, dtype=np.int64)]
        return (images[0], labels[0]) if np.ndim(index) == 0 else (images, labels)

    def pixels(self, index: int, augment: str = "none", rng=None) -> np.ndarray:
        """Image ``index`` as uint8 (C, size, size) through the ``augment`` recipe of
        ``tinynet.data.augment``, its random draws from ``rng``. With a cache, its square
        stands in for the file (``tinynet.data.image_cache`` says what changes), except for the
        evaluation view when the cache holds the paper recipe's larger squares."""
        cache = self.cache
        if cache is not None and (
            augment == cache.augment or "paper" not in (augment, cache.augment)
        ):
            square = cache.square(index)
            if augment == "paper":
                from PIL import Image

                return A.paper(Image.fromarray(_hwc(square)), self.image_size, rng)
            return A.from_square(square, augment, rng)
        path = self.files[index]
        if augment == "paper":
            return A.paper(
                full_image(path, self.mode, _pillow("image_files")), self.image_size, rng
            )
        return A.from_square(self.square(index, self.image_size), augment, rng)

    def resized(self, image_size: int) -> ImageFiles:
        """The same files at another ``image_size``, without a cache."""
        return ImageFiles(self.root, self.files, self.labels, image_size, self.mode)

    def square(self, index: int, side: int) -> np.ndarray:
        """Image ``index`` from its file with the shorter side scaled to ``side`` and the
        centred square cut (``image_folder``'s pixels), as uint8 (C, side, side)."""
        pixels = _decode(self.files[index], side, self.mode, _pillow("image_files"))
        return A.channels_first(pixels)

    def scaled(self, index: int, side: int) -> np.ndarray:
        """Image ``index`` from its file with the shorter side scaled to ``side``, its aspect
        ratio kept (Pillow's bilinear filter), as uint8 (C, H, W): a multi-crop scale."""
        Image = _pillow("image_files")
        pixels = decoded(
            self.files[index], Image, lambda image: _scaled(image, side, self.mode, Image)
        )
        return A.channels_first(pixels)

    def listing(self) -> str:
        """A digest of every file's path, size and modification time: what a cache of the
        decoded images was made from."""
        digest = hashlib.sha256(f"{self.mode}\n".encode())
        for path in self.files:
            status = _stat(path, self.root)
            digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def check_present(self) -> None:
        """A ``DatasetError`` if the folder or any listed file is gone (checked before each
        epoch: a folder that vanishes or loses files is named, not met as a decoding error)."""
        if not self.root.is_dir():
            raise DatasetError(
                f"image folder {self.root} is gone: it held {len(self)} images when the run "
                f"listed it"
            )
        gone = [path for path in self.files if not os.path.isfile(path)]
        if gone:
            raise DatasetError(
                f"image folder {self.root} lost {len(gone)} of the {len(self)} files listed when "
                f"the run started, e.g. {gone[0]}; restore them or start a new run"
            )

    def __repr__(self) -> str:
        return f"ImageFiles({self.root}, {len(self)} images, {self.image_shape})"


def _stat(path: Path, root: Path):
    try:
        return os.stat(path)
    except OSError as error:
        raise DatasetError(f"image folder {root}: cannot read {path} ({error.strerror})") from None


def _hwc(square: np.ndarray) -> np.ndarray:
    return square[0] if square.shape[0] == 1 else square.transpose(1, 2, 0)


def image_files(
    root, image_size, mode: str = "RGB", test_fraction: float = 0.2, seed: int = 0
) -> DataSplits:
    """The folder ``root`` as ``image_folder`` reads it, but as lists of files (``ImageFiles``)
    decoded when asked for. image_size: an int (the side of the square)."""
    _pillow("image_files")
    if mode not in MODES:
        raise ValueError(f"image_files: mode must be one of {sorted(MODES)}; got {mode!r}")
    size = _target_size(image_size)
    if not isinstance(size, int):
        raise ValueError(
            f"image_files: image_size must be an int (the side of the square); got {image_size!r}"
        )
    classes, (train_root, files, labels), test = list_image_folder(root)
    if test is not None:
        return DataSplits(
            ImageFiles(train_root, files, labels, size, mode),
            ImageFiles(*test, size, mode),
            classes,
        )
    train, held = split_order(len(files), seed, test_fraction, "image_files")
    return DataSplits(
        ImageFiles(train_root, [files[i] for i in train], labels[train], size, mode),
        ImageFiles(train_root, [files[i] for i in held], labels[held], size, mode),
        classes,
    )
