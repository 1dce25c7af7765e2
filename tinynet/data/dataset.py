"""Dataset and TensorDataset: what a DataLoader slices its batches from.

A dataset answers ``len(dataset)`` and ``dataset[index]``. The DataLoader asks for a whole batch
at once, ``dataset[indices]`` with a 1-D int64 array, and expects ``(images, labels)`` back, so
a batch costs one fancy-index per array instead of a Python loop over samples.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Dataset:
    """Base class: subclasses define ``__len__`` and ``__getitem__``.

    ``__getitem__(index)`` must accept an int (one sample) and a 1-D integer ndarray (a batch:
    the DataLoader's only kind of request) and return a tuple of arrays, ``(images, labels)``
    for image classification, whose first axis runs over the requested samples.
    """

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


class TensorDataset(Dataset):
    """Arrays aligned on their first axis: sample ``i`` is ``(a[i] for a in arrays)``.

    ``TensorDataset(images, labels)`` with images (N, C, H, W) and labels (N,) is what every
    dataset in ``tinynet.data.datasets`` returns. Indexing with an int, a slice or an integer
    array indexes every array the same way, e.g. ``images, labels = dataset[np.array([3, 1])]``.
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset: needs at least one array; got none")
        converted = []
        for position, array in enumerate(arrays):
            array = np.asarray(getattr(array, "data", array))  # a Tensor gives its ndarray
            if array.ndim == 0:
                raise ValueError(
                    f"TensorDataset: array {position} is a scalar; each array needs a first "
                    f"axis that runs over the samples"
                )
            converted.append(array)
        lengths = [len(array) for array in converted]
        if len(set(lengths)) > 1:
            described = ", ".join(f"array {i}: {n}" for i, n in enumerate(lengths))
            raise ValueError(
                f"TensorDataset: arrays must have the same length along the first axis; got "
                f"{described}"
            )
        self.arrays: tuple[np.ndarray, ...] = tuple(converted)

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(array[index] for array in self.arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in self.arrays)
        return f"TensorDataset({shapes})"


class DataSplits(NamedTuple):
    """What every dataset function returns: ``train, test, classes = mnist(...)``.

    train, test: TensorDatasets of float32 (N, C, H, W) images in [0, 1] and int64 labels
    classes:     the class names; label ``k`` is ``classes[k]``
    """

    train: TensorDataset
    test: TensorDataset
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """How many classes there are (the model's number of outputs)."""
        return len(self.classes)

    @property
    def channels(self) -> int:
        """Channels of an image: 1 (grayscale) or 3 (RGB)."""
        return self.image_shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of an image."""
        return tuple(self.image_shape[1:])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of an image: a TensorDataset's array's, or what a dataset of image files
        (``tinynet.data.image_files``) decodes to."""
        shape = getattr(self.train, "image_shape", None)
        return tuple(shape) if shape is not None else tuple(self.train.arrays[0].shape[1:])


def seeded_split(
    images: np.ndarray, labels, classes, seed: int, test_fraction: float, name: str
) -> DataSplits:
    """All samples permuted by ``np.random.default_rng(seed)``; the last
    ``round(n * test_fraction)`` of that order are the test set, the rest the training set.
    ``name`` names the caller in errors."""
    train, test = split_order(len(images), seed, test_fraction, name)
    labels = np.asarray(labels, dtype=np.int64)
    return DataSplits(
        TensorDataset(images[train], labels[train]),
        TensorDataset(images[test], labels[test]),
        tuple(classes),
    )


def split_order(n: int, seed: int, test_fraction: float, name: str) -> tuple[np.ndarray, ...]:
    """(training indices, test indices) of ``n`` samples as ``seeded_split`` divides them."""
    if not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"{name}: test_fraction must be in (0, 1); got {test_fraction!r}")
    n_test = int(round(n * test_fraction))
    if not 0 < n_test < n:
        raise ValueError(
            f"{name}: test_fraction={test_fraction} of {n} samples leaves "
            f"{n_test} for testing and {n - n_test} for training; both need at least one"
        )
    order = np.random.default_rng(seed).permutation(n)
    return order[: n - n_test], order[n - n_test :]
