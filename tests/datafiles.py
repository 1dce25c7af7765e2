"""Writers of small dataset files in the exact formats tinynet.data reads, and markers for the
optional `train` extra: shared by the dataset, training, CLI and example tests."""

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# The optional `train` extra: tests that need it skip cleanly (and say why) without it.
needs_sklearn = pytest.mark.skipif(not installed("sklearn"), reason="digits needs scikit-learn")
needs_pillow = pytest.mark.skipif(not installed("PIL"), reason="image_folder needs Pillow")


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file: magic (0, 0, type code, ndim), big-endian sizes, big-endian values."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(folder: Path, n_train=5, n_test=3, gz=True, seed=0) -> dict:
    """The four MNIST files with random 28x28 images; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays
