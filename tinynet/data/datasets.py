"""The datasets tinynet trains on, each as ``DataSplits(train, test, classes)``.

Every split is a TensorDataset of float32 (N, C, H, W) images in [0, 1] and int64 labels.

    digits()                  scikit-learn's 1,797 real 8x8 handwritten digits, bundled with it:
                              no network, no files (needs the ``train`` extra)
    mnist(data_dir)           the IDX files of MNIST / Fashion-MNIST in data_dir
    fashion_mnist(data_dir)
    cifar10(data_dir)         CIFAR-10's python version: the extracted folder or the .tar.gz
    image_folder(root, size)  class sub-folders of PNG/JPEG images (see ``tinynet.data.folder``)
    load_dataset(name, ...)   any of them by name

Downloading is opt-in (``download=True``): each file is fetched from the first working mirror
in ``MIRRORS`` (or the ``mirrors`` argument) and kept only if its SHA-256 matches ``SHA256``.
Files already in data_dir are used as they are, whatever their origin, and checked by parsing.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tinynet.data.dataset import DataSplits, TensorDataset, seeded_split
from tinynet.data.download import Progress, fetch
from tinynet.data.folder import image_folder
from tinynet.data.formats import (
    DatasetError,
    extract_members,
    memory_named,
    read_cifar_batch,
    read_cifar_names,
    read_idx_split,
)
from tinynet.data.image_files import image_files
from tinynet.data.transforms import resize

INSTALL_HINT = "pip install 'tinynet[train]'"

# Base URLs, tried in order; a file's URL is the base + "/" + its name.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist",
        "http://yann.lecun.com/exdb/mnist",
    ),
    "fashion_mnist": (
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    ),
    "cifar10": ("https://www.cs.toronto.edu/~kriz",),
}

# Published SHA-256 digests of the distributed files. Sources: tensorflow/datasets,
# tensorflow_datasets/url_checksums/{mnist.txt, fashion_mnist.txt, cifar10.csv}; the CIFAR-10
# digest is also the file_hash in keras' keras/datasets/cifar10.py.
SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
        ),
    },
    "cifar10": {
        "cifar-10-python.tar.gz": (
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
        ),
    },
}

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DIGIT_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FILES = (*CIFAR10_TRAIN, "test_batch", "batches.meta")
# Each batch of the real archive is 31,035,704 bytes or less (batches.meta is 158): a member
# over 64 MiB, twice that, is not CIFAR-10 and is refused before it is extracted.
CIFAR10_MAX_MEMBER = 64 << 20


def default_data_dir(name: str) -> Path:
    """Where ``load_dataset`` keeps ``name``'s files when no data_dir is given:
    ``$TINYNET_DATA/<name>``, by default ``~/.cache/tinynet/<name>``."""
    root = os.environ.get("TINYNET_DATA") or Path.home() / ".cache" / "tinynet"
    return Path(root).expanduser() / name


# ---------------------------------------------------------------------- digits
def digits(image_size: int = 32, seed: int = 0, test_fraction: float = 0.2) -> DataSplits:
    """scikit-learn's 1,797 handwritten digits (8x8, 1 channel), resized to ``image_size``.

    Pixel values 0..16 become [0, 1]; ``transforms.resize`` (bilinear) enlarges them. The
    split (``seeded_split``): a permutation of all 1,797 by ``np.random.default_rng(seed)``,
    whose last ``round(1797 * test_fraction)`` samples are the test set (359 at 0.2, leaving
    1,438 to train). Needs scikit-learn (the ``train`` extra); reads no network.
    """
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool):
        raise TypeError(f"digits: image_size must be an int; got {image_size!r}")
    if image_size < 1:
        raise ValueError(f"digits: image_size must be >= 1; got {image_size}")
    pixels, labels = _load_digits()
    images = (pixels.reshape(-1, 1, 8, 8) / np.float32(16.0)).astype(np.float32)
    images = resize(images, (image_size, image_size))
    return seeded_split(images, labels, DIGIT_CLASSES, seed, test_fraction, "digits")


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 64) pixel values 0..16 and (1797,) labels, as ``sklearn.datasets.load_digits``.

    Importing scikit-learn takes over a second (it loads SciPy), more than building the whole
    dataset, so this reads the CSV that load_digits reads (``sklearn/datasets/data/
    digits.csv.gz``, 64 pixel columns then the label) found without importing the package,
    and calls load_digits itself only if that file is not where scikit-learn keeps it.
    """
    missing = ImportError(
        f"digits() reads the handwritten digits bundled with scikit-learn, which is not "
        f"installed: {INSTALL_HINT}"
    )
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):  # ValueError: sys.modules["sklearn"] is None
        spec = None
    if spec is None or spec.origin is None:
        raise missing
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        table = np.loadtxt(csv, delimiter=",", dtype=np.float32)
        if table.shape == (1797, 65):
            return table[:, :64], table[:, 64].astype(np.int64)
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise missing from error
    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


# ------------------------------------------------------------ MNIST, Fashion-MNIST
def mnist(
    data_dir,
    download: bool = False,
    image_size: int | None = None,
    mirrors: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> DataSplits:
    """MNIST: 60,000 training and 10,000 test digits, 28x28, 1 channel.

    data_dir holds the four IDX files, ``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``
    (or the same names without .gz, uncompressed). download=True fetches the missing ones.
    image_size: resize to image_size x image_size (bilinear); None keeps 28.
    mirrors: base URLs to download from instead of ``MIRRORS['mnist']``.
    """
    return _idx_dataset("mnist", DIGIT_CLASSES, data_dir, download, image_size, mirrors, progress)


def fashion_mnist(
    data_dir,
    download: bool = False,
    image_size: int | None = None,
    mirrors: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> DataSplits:
    """Fashion-MNIST: 60,000 training and 10,000 test clothing images, 28x28, 1 channel, in
    MNIST's four IDX files and names (see ``mnist`` for the arguments)."""
    return _idx_dataset(
        "fashion_mnist", FASHION_CLASSES, data_dir, download, image_size, mirrors, progress
    )


def _idx_dataset(name, classes, data_dir, download, image_size, mirrors, progress) -> DataSplits:
    data_dir = _check_dir(data_dir, name)
    splits = []
    for split in ("train", "test"):
        images_file, labels_file = (
            _locate(name, data_dir, filename, download, mirrors, progress)
            for filename in IDX_FILES[split]
        )
        images, labels = read_idx_split(images_file, labels_file, len(classes))
        splits.append(TensorDataset(_resized(images, image_size, name), labels))
    return DataSplits(splits[0], splits[1], classes)


def _locate(name, data_dir: Path, filename, download, mirrors, progress) -> Path:
    """data_dir/filename (or the uncompressed file without .gz); fetched if allowed."""
    for candidate in (data_dir / filename, data_dir / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    if not download:
        raise FileNotFoundError(
            f"{name}: {filename} is not in {data_dir}; pass download=True (tinynet train "
            f"--download) to fetch it, or put the file there"
        )
    return fetch(
        filename,
        data_dir,
        mirrors if mirrors is not None else MIRRORS[name],
        SHA256[name][filename],
        progress=progress,
    )


def _check_dir(data_dir, name) -> Path:
    if data_dir is None or not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"{name}: data_dir must be a path; got {data_dir!r}")
    data_dir = Path(data_dir).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise NotADirectoryError(f"{name}: data_dir {data_dir} is a file, not a directory")
    return data_dir


def _resized(images: np.ndarray, image_size, name) -> np.ndarray:
    if image_size is None:
        return images
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool):
        raise TypeError(f"{name}: image_size must be an int or None; got {image_size!r}")
    if image_size < 1:
        raise ValueError(f"{name}: image_size must be >= 1; got {image_size}")
    return resize(images, (image_size, image_size))


# -------------------------------------------------------------------- CIFAR-10
def cifar10(
    data_dir,
    download: bool = False,
    image_size: int | None = None,
    mirrors: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> DataSplits:
    """CIFAR-10: 50,000 training and 10,000 test colour images, 32x32, 3 channels, 10 classes.

    data_dir holds the python version: the folder ``cifar-10-batches-py`` (data_batch_1..5,
    test_batch, batches.meta), or the archive ``cifar-10-python.tar.gz``, whose batches are
    then extracted beside it (only those files, safely; see ``formats.extract_members``).
    data_dir may also be the batches folder itself. download=True fetches the archive when
    neither is there. The pickles are read with the allow-list unpickler: they cannot run code.
    image_size and mirrors as for ``mnist``.
    """
    data_dir = _check_dir(data_dir, "cifar10")
    folder = _cifar_folder(data_dir, download, mirrors, progress)
    parts = [_read_cifar_batch(folder / name) for name in CIFAR10_TRAIN]
    with memory_named(folder):
        train_images = np.concatenate([images for images, _ in parts])
    train_labels = np.concatenate([labels for _, labels in parts])
    test_images, test_labels = _read_cifar_batch(folder / "test_batch")
    meta = folder / "batches.meta"
    classes = read_cifar_names(meta) if meta.is_file() else CIFAR10_CLASSES
    if len(classes) != 10:
        raise DatasetError(f"{meta}: expected 10 class names; got {len(classes)}")
    return DataSplits(
        TensorDataset(_resized(train_images, image_size, "cifar10"), train_labels),
        TensorDataset(_resized(test_images, image_size, "cifar10"), test_labels),
        classes,
    )


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``read_cifar_batch``, with running out of memory named as an error of ``path``."""
    with memory_named(path):
        return read_cifar_batch(path)


def _cifar_folder(data_dir: Path, download, mirrors, progress) -> Path:
    """The folder holding the batches: found, extracted from the archive, or downloaded."""
    for folder in (data_dir / CIFAR10_FOLDER, data_dir):
        if (folder / CIFAR10_TRAIN[0]).is_file():
            missing = [
                name for name in (*CIFAR10_TRAIN, "test_batch") if not (folder / name).is_file()
            ]
            if missing:
                raise FileNotFoundError(f"cifar10: {folder} lacks {', '.join(missing)}")
            return folder
    if (data_dir / CIFAR10_FOLDER).exists():
        raise FileNotFoundError(
            f"cifar10: {data_dir / CIFAR10_FOLDER} lacks {CIFAR10_TRAIN[0]}; remove that folder "
            f"to extract or download the batches again"
        )
    archive = data_dir / CIFAR10_ARCHIVE
    if not archive.is_file():
        if not download:
            raise FileNotFoundError(
                f"cifar10: neither {data_dir / CIFAR10_FOLDER} nor {archive} exists; pass "
                f"download=True to fetch the archive, or put it there"
            )
        fetch(
            CIFAR10_ARCHIVE,
            data_dir,
            mirrors if mirrors is not None else MIRRORS["cifar10"],
            SHA256["cifar10"][CIFAR10_ARCHIVE],
            progress=progress,
        )
    return extract_members(archive, CIFAR10_FOLDER, CIFAR10_FILES, CIFAR10_MAX_MEMBER)


# -------------------------------------------------------------------- by name
BUILDERS = {
    "digits": digits,
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "image_folder": image_folder,
}
ALIASES = {"fashion-mnist": "fashion_mnist", "cifar-10": "cifar10", "folder": "image_folder"}


def load_dataset(
    name: str,
    data_dir=None,
    download: bool = False,
    image_size: int | None = None,
    stream: bool = False,
    **options,
) -> DataSplits:
    """The dataset called ``name``: one of ``BUILDERS`` (digits, mnist, fashion_mnist,
    cifar10, image_folder) or an alias in ``ALIASES``.

    data_dir:   where its files are (or go); default ``default_data_dir(name)``. For
                image_folder it is the root folder of class sub-folders, and required;
                digits ignores it
    download:   fetch missing files (mnist, fashion_mnist, cifar10; the others ignore it)
    image_size: the side of the square images; None keeps each dataset's own (32 for digits,
                28 for the MNISTs, 32 for CIFAR-10); required for image_folder
    stream:     image_folder only: the splits as lists of files decoded when read
                (``tinynet.data.image_files``), not decoded into memory now
    options:    passed on, e.g. seed and test_fraction (digits, image_folder), mirrors and
                progress (the downloadable ones), mode (image_folder)

    A training or test split without a single sample raises ``DatasetError`` naming the
    dataset, its folder and the split, before anything trains on it.
    """
    key = ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in BUILDERS:
        raise ValueError(
            f"load_dataset: unknown dataset {name!r}; known: {', '.join(sorted(BUILDERS))}"
        )
    if key == "digits":  # bundled with scikit-learn: no data_dir, nothing to download
        source = "scikit-learn's bundled digits"
        data = digits(image_size=32 if image_size is None else image_size, **options)
    elif key == "image_folder":
        if data_dir is None or image_size is None:
            raise ValueError(
                "load_dataset: image_folder needs data_dir (the folder of class sub-folders) "
                "and image_size"
            )
        read = image_files if stream else image_folder
        source, data = data_dir, read(data_dir, image_size, **options)
    else:
        source = default_data_dir(key) if data_dir is None else data_dir
        data = BUILDERS[key](source, download=download, image_size=image_size, **options)
    check_splits(data, key, source)
    return data


def check_splits(data: DataSplits, name: str, source: str) -> None:
    """A one-line DatasetError naming ``name`` and ``source`` if the train or test split of
    ``data`` has no samples."""
    for split, dataset in (("train", data.train), ("test", data.test)):
        if len(dataset) == 0:
            raise DatasetError(
                f"{name}: the {split} split in {source} has no samples; training and "
                f"evaluating need at least one in each split"
            )
