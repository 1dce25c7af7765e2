"""The decoded images of an image folder in one memory-mapped uint8 file, so that epochs after
the first skip JPEG decoding (``tinynet train --cache``).

    cache = ImageCache.open(dataset, folder, side, augment, build)

What is stored: every image with its shorter side scaled to ``side`` (Pillow's bilinear filter)
and the centred ``side`` x ``side`` square cut, uint8 (N, C, side, side), as a .npy file that
``np.load(mmap_mode="r")`` maps: the pages are the operating system's file cache, shared by the
workers, not the process's memory. The side is the one the augmentation starts from:

    crop-flip, crop,  the network's input size: the cached square is exactly the image the
    none              files give (``ImageFiles.square``), so a run's batches are the same with
                      and without the cache
    paper             256/224 of the input size (256 for 224, ImageNet's usual resize): the
                      random-resized crop then samples the centred square at that size
                      instead of the full-resolution photograph (less of a wide image's sides,
                      a little less detail in the smallest crops); that is the price of not
                      decoding

The file is named by a digest of the folder's listing (every path, size and modification time,
the mode) and the side, written under a temporary name and renamed when complete (atomic), and
reused while the listing matches; a changed folder gets a new file and the stale one is removed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from tinynet.data.formats import DatasetError


def cache_side(image_size: int, augment: str) -> int:
    """The side of the cached squares for ``augment`` (see the module docstring)."""
    return round(image_size * 256 / 224) if augment == "paper" else image_size


class ImageCache:
    """A memory-mapped (N, C, side, side) uint8 array of a dataset's decoded squares."""

    def __init__(self, path: Path, array: np.ndarray, augment: str):
        self.path, self.array, self.augment = path, array, augment

    def square(self, index: int) -> np.ndarray:
        """Image ``index``'s cached square, uint8 (C, side, side)."""
        return np.asarray(self.array[index])

    @classmethod
    def open(cls, dataset, folder, augment: str, build) -> ImageCache:
        """The cache of ``dataset`` (an ``ImageFiles``) in ``folder`` for ``augment``: reused if
        a file for the current listing is there, else made by ``build(out, side)``, which fills
        the uint8 (N, C, side, side) array ``out``; stale caches of the same folder go."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        side = cache_side(dataset.image_size, augment)
        source = hashlib.sha256(f"{dataset.root.resolve()}\0{side}".encode()).hexdigest()[:12]
        path = folder / f"images-{source}-{dataset.listing()[:16]}.npy"
        shape = (len(dataset), dataset.channels, side, side)
        if not path.exists():
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
            try:
                out = np.lib.format.open_memmap(partial, "w+", np.uint8, shape)
                build(out, side)
                out.flush()
                del out
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
            for stale in folder.glob(f"images-{source}-*.npy"):
                if stale != path:
                    stale.unlink(missing_ok=True)
        array = np.load(path, mmap_mode="r")
        if array.shape != shape or array.dtype != np.uint8:
            raise DatasetError(
                f"{path}: a damaged image cache (holds {array.dtype}{list(array.shape)}, "
                f"expected uint8{list(shape)}); delete it and it is made again"
            )
        return cls(path, array, augment)
