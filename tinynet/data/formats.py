"""Readers of the files the standard datasets ship as, each checking everything it reads.

IDX (MNIST, Fashion-MNIST): a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 size per dimension, then the values, big-endian, row-major.
Files may be gzip-compressed (recognised by their first bytes, whatever their name).

CIFAR-10's python version: pickles of dicts with bytes keys, b'data' a (N, 3072) uint8 array
(1024 red, 1024 green, 1024 blue values a row, each plane row-major) and b'labels' a list of N
ints; read with the allow-list unpickler, so a hostile file cannot run code.

Every problem raises ``DatasetError``, one line that names the file and what was wrong, running
out of memory included. A header is checked against the bytes that follow before anything is
allocated for them, so a hostile header cannot make a reader ask for more memory than a valid
file with that header needs.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tinynet.safe_pickle import describe, load_with_arrays

IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20  # bytes decompressed or copied at a time


class DatasetError(ValueError):
    """A data file is missing a piece, malformed or inconsistent; the message names the file."""


@contextmanager
def memory_named(source):
    """Inside the block, running out of memory (NumPy's "Unable to allocate ..." included)
    raises ``DatasetError`` naming ``source``, the file or folder being read."""
    try:
        yield
    except MemoryError as error:
        raise DatasetError(f"{source}: not enough memory to read it ({error})") from error


def read_idx(path) -> np.ndarray:
    """The array in the IDX file ``path`` (gzip or not), in native byte order.

    The header is checked before any value is read: the product of its dimensions (in Python
    ints, which cannot wrap) times the item size must be the number of bytes that follow. The
    values are read a chunk at a time, up to one byte past what the header declares, so memory
    follows what a valid file with that header needs, whatever the file (or a gzip bomb) holds.
    """
    path = Path(path)
    with open(path, "rb") as file:
        compressed = file.read(2) == _GZIP_MAGIC
    try:
        with memory_named(path), (gzip.open if compressed else open)(path, "rb") as file:
            return _parse_idx(path, file)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DatasetError(f"{path}: not a readable gzip file ({error})") from error


def _parse_idx(path: Path, file) -> np.ndarray:
    """The IDX array in the open binary stream ``file`` (read from ``path``), checked."""
    magic = file.read(4)
    if len(magic) < 4:
        raise DatasetError(f"{path}: {len(magic)} bytes is too short for the IDX magic number")
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES:
        codes = ", ".join(f"0x{code:02X}" for code in IDX_TYPES)
        raise DatasetError(
            f"{path}: wrong magic number 0x{magic.hex().upper()}; an IDX file starts with "
            f"0x0000, a type code ({codes}) and the number of dimensions"
        )
    dtype, ndim = IDX_TYPES[magic[2]], magic[3]
    sizes = file.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DatasetError(
            f"{path}: truncated header: {ndim} dimensions need {4 + 4 * ndim} bytes, the file "
            f"has {4 + len(sizes)}"
        )
    shape = struct.unpack(f">{ndim}I", sizes)
    expected = math.prod(shape) * dtype.itemsize
    data = read_at_most(file, expected + 1)
    if len(data) != expected:
        problem, held = (
            ("truncated data", f"{len(data)} bytes")
            if len(data) < expected
            else ("extra data", f"more than {expected} bytes")
        )
        raise DatasetError(
            f"{path}: {problem}: the header describes a {'x'.join(map(str, shape))} "
            f"{dtype.name} array ({expected} bytes), the file holds {held} after it"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_at_most(file, limit: int) -> bytearray:
    """Up to ``limit`` bytes from the binary stream ``file``, read a chunk at a time, so memory
    follows what the stream holds, never what was asked for."""
    data = bytearray()
    while len(data) < limit:
        chunk = file.read(min(CHUNK, limit - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def check_labels(labels: np.ndarray, num_classes: int, source) -> np.ndarray:
    """``labels`` as int64, or an error naming ``source`` and the first label outside
    [0, num_classes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DatasetError(
            f"{source}: labels must be a 1-D list of integers; got {labels.dtype} with shape "
            f"{labels.shape}"
        )
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DatasetError(
            f"{source}: label {labels[bad[0]]} at index {bad[0]} is outside 0..{num_classes - 1} "
            f"({bad.size} such labels)"
        )
    return labels


def read_idx_split(images_path, labels_path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """An IDX image file and its label file: float32 (N, 1, H, W) in [0, 1], int64 (N,)."""
    images = read_idx(images_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DatasetError(
            f"{images_path}: expected 3-D unsigned-byte images (N, rows, columns); got a "
            f"{images.ndim}-D {images.dtype} array"
        )
    labels = read_idx(labels_path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(
            f"{labels_path}: expected a 1-D unsigned-byte label array; got a {labels.ndim}-D "
            f"{labels.dtype} array"
        )
    if len(labels) != len(images):
        raise DatasetError(
            f"{labels_path}: {len(labels)} labels, but {images_path} holds {len(images)} images"
        )
    labels = check_labels(labels, num_classes, labels_path)
    with memory_named(images_path):
        return to_unit_float(images[:, None]), labels


def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1]."""
    return pixels.astype(np.float32) / np.float32(255.0)


# --------------------------------------------------------------------- CIFAR
def unpickle(path) -> object:
    """The object pickled in ``path``, which may name NumPy arrays and nothing else (each array
    a read-only view of bytes the file holds, so it takes no more memory than the file)."""
    try:
        with open(path, "rb") as file:
            return load_with_arrays(file, encoding="bytes")
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ArithmeticError,
        RecursionError,
    ) as error:
        raise DatasetError(f"{path}: not a readable CIFAR pickle ({error})") from error


def read_cifar_batch(path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 python batch: float32 (N, 3, 32, 32) images in [0, 1], int64 (N,) labels."""
    batch = unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = describe(list(batch)) if isinstance(batch, dict) else type(batch).__name__
        raise DatasetError(f"{path}: expected a dict with keys b'data' and b'labels'; got {keys}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(
            f"{path}: b'data' must be a (N, 3072) uint8 array; got "
            f"{getattr(data, 'dtype', type(data).__name__)} with shape "
            f"{getattr(data, 'shape', '?')}"
        )
    if data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: b'data' rows must hold 3072 values (3 x 32 x 32); got {data.shape[1]}"
        )
    labels = batch[b"labels"]
    # Checked before NumPy sees it: a list nesting one list twice, 30 levels deep, is a
    # 2**30-element array to np.asarray.
    if not (isinstance(labels, list) and all(type(label) is int for label in labels)):
        raise DatasetError(f"{path}: b'labels' must be a list of ints; got {describe(labels)}")
    labels = check_labels(np.asarray(labels), num_classes, path)
    if len(labels) != len(data):
        raise DatasetError(f"{path}: {len(labels)} labels for {len(data)} images")
    return to_unit_float(data.reshape(-1, 3, 32, 32)), labels


def read_cifar_names(path) -> tuple[str, ...]:
    """The class names in CIFAR-10's ``batches.meta`` (b'label_names', a list of bytes)."""
    meta = unpickle(path)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DatasetError(f"{path}: expected a dict whose b'label_names' is a list of names")
    return tuple(n.decode() if isinstance(n, bytes) else n for n in names)


def extract_members(archive, folder, names, max_size: int) -> Path:
    """Copy the regular files ``folder/NAME`` (for each of ``names``) out of the tar archive
    into ``archive``'s directory, as a new folder ``folder``; return its path.

    Safe by construction: only the listed names are read, each must be a regular file (no
    links, devices or directories) of at most ``max_size`` bytes, checked on its tar header
    before any of it is copied, and the output paths are built from ``names``, never from the
    archive, so nothing can land outside the folder. The files are written to a temporary
    folder that is renamed into place once complete, so a failure leaves nothing behind.
    """
    archive = Path(archive)
    target = archive.parent / folder
    wanted = {f"{folder}/{name}": name for name in names}
    staging = Path(tempfile.mkdtemp(dir=archive.parent, prefix=f".{folder}.", suffix=".part"))
    try:
        found = set()
        with tarfile.open(archive, "r:*") as tar:
            while len(found) < len(wanted) and (member := tar.next()) is not None:
                tar.members.clear()  # tarfile keeps every header it reads: millions, in a bomb
                name = member.name.removeprefix("./")
                if name not in wanted or name in found:
                    continue
                if not member.isfile():
                    raise DatasetError(f"{archive}: {member.name} is not a regular file")
                if not 0 <= member.size <= max_size:
                    raise DatasetError(
                        f"{archive}: {member.name} is {member.size} bytes, more than the "
                        f"{max_size} a genuine one can be; refusing to extract it"
                    )
                source = tar.extractfile(member)
                with source, open(staging / wanted[name], "wb") as out:
                    shutil.copyfileobj(source, out)
                found.add(name)
        missing = sorted(set(wanted) - found)
        if missing:
            raise DatasetError(f"{archive}: the archive lacks {', '.join(missing)}")
        try:
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(staging)  # another process extracted it meanwhile
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DatasetError(f"{archive}: not a readable tar archive ({error})") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
