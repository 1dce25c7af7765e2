"""Writers of small dataset files in the exact formats tinynet.data reads (and of hostile ones
that only look like them), and markers for the optional `train` extra: shared by the dataset,
hostile-data, training, CLI and example tests."""

import gzip
import importlib.util
import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinynet.data import datasets as D


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# The optional `train` extra: tests that need it skip cleanly (and say why) without it.
needs_sklearn = pytest.mark.skipif(not installed("sklearn"), reason="digits needs scikit-learn")
needs_pillow = pytest.mark.skipif(not installed("PIL"), reason="image_folder needs Pillow")


def idx_header(shape, code: int = 0x08) -> bytes:
    """An IDX header: magic (0, 0, type code, ndim), then one big-endian uint32 per dimension."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file: its header, then the values big-endian."""
    return idx_header(array.shape, code) + array.astype(array.dtype.newbyteorder(">")).tobytes()


def gzip_then_zeros(prefix: bytes, zeros: int, block: int = 1 << 24) -> bytes:
    """A gzip file decompressing to ``prefix`` then ``zeros`` zero bytes: one member for the
    prefix, then copies of one compressed block of zeros (gzip readers join members), so a file
    of a few hundred KB holds gigabytes and takes no time to build."""
    whole, rest = divmod(zeros, block)
    zero_member = gzip.compress(bytes(block))
    return gzip.compress(prefix) + zero_member * whole + gzip.compress(bytes(rest))


def png_file(width: int, height: int, rows: bytes, color_type=0, bit_depth=8, palette=b"") -> bytes:
    """A PNG declaring ``width`` x ``height`` whose IDAT holds ``rows`` (each row a filter byte
    0, then its packed values), compressed; ``palette`` (RGB triples) for color type 3."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    plte = chunk(b"PLTE", palette) if palette else b""
    signature = b"\x89PNG\r\n\x1a\n"
    return (signature + chunk(b"IHDR", header) + plte + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))  # fmt: skip


def png_bytes(width: int, height: int) -> bytes:
    """A grayscale PNG whose header declares ``width`` x ``height``, with one row of pixels:
    enough for Pillow to read the size (and refuse a bomb) without this file being large. With
    ``height`` 1 it is a whole image, of zeros."""
    return png_file(width, height, bytes(width + 1))  # filter byte 0, then a row of zeros


def png_image(values: np.ndarray, color_type: int, bit_depth: int = 8, palette=b"") -> bytes:
    """A whole PNG of ``values``, (height, width) or (height, width, samples) unsigned ints
    stored at ``bit_depth`` bits (big-endian at 16; packed, most significant first, below 8)."""
    values = np.asarray(values)
    height, width = values.shape[:2]
    samples = values.reshape(height, -1)
    if bit_depth == 16:
        packed = samples.astype(">u2").view(np.uint8).reshape(height, -1)
    else:
        bits = np.unpackbits(samples.astype(np.uint8)[..., None], axis=-1)[..., 8 - bit_depth :]
        packed = np.packbits(bits.reshape(height, -1), axis=1)
    rows = np.hstack([np.zeros((height, 1), np.uint8), packed])  # filter byte 0: none
    return png_file(width, height, rows.tobytes(), color_type, bit_depth, palette)


def write_tar(path: Path, members) -> None:
    """An uncompressed tar of ``members``, (TarInfo, bytes or None) pairs. None leaves the
    member's ``size`` bytes a hole (a sparse file reading as zeros), so a member of gigabytes
    costs no disk and no time."""
    with open(path, "wb") as out:
        for info, data in members:
            out.write(info.tobuf(tarfile.GNU_FORMAT))
            padded = -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if data is None:
                out.seek(padded, io.SEEK_CUR)
            else:
                out.write(data.ljust(padded, b"\0"))
        out.write(bytes(2 * tarfile.BLOCKSIZE))  # the end-of-archive marker


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


def cifar_batches(n=4, seed=0) -> dict:
    """CIFAR-10's python files as dicts with bytes keys, as the real ones unpickle."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batches[name] = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(n)],
        }
    batches["batches.meta"] = {
        b"label_names": [name.encode() for name in D.CIFAR10_CLASSES],
        b"num_vis": 3072,
    }
    return batches


class Python2Pickler(pickle._Pickler):
    """Protocol 2 with bytes and str written as Python 2 ``str`` opcodes (BINSTRING), as the
    real CIFAR-10 files were; Python 3's own protocol 2 wraps bytes in ``_codecs.encode``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin-1")
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_python2_str


def pickled(batch, python2=True) -> bytes:
    """``batch`` pickled as Python 2 and NumPy 1 wrote CIFAR-10, or by a plain
    ``pickle.dumps``."""
    if not python2:
        return pickle.dumps(batch)
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(batch)
    # GLOBAL names a module by a line of text: NumPy 1 called it numpy.core.multiarray.
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar_folder(folder: Path, batches: dict, python2=True) -> None:
    """The batches as the files of CIFAR-10's extracted folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickled(batch, python2))


def cifar_members(batches: dict) -> list:
    """The (TarInfo, bytes) members ``cifar-10-batches-py/NAME`` of CIFAR-10's archive."""
    members = []
    for name, batch in batches.items():
        data = pickled(batch)
        info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
        info.size = len(data)
        members.append((info, data))
    return members


def cifar_archive_bytes(batches: dict, extra=()) -> bytes:
    """cifar-10-python.tar.gz holding the batches, then the ``extra`` (TarInfo, bytes or None)
    members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in [*cifar_members(batches), *extra]:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def leftovers(folder: Path) -> list[str]:
    """The names in ``folder``, sorted (none if it does not exist)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def snapshot(folder: Path) -> dict:
    """Every path under ``folder`` (hidden ones included) with its kind, bytes and modification
    time: the same before and after means nothing was written, added or removed."""
    return {
        str(path.relative_to(folder)): (
            path.is_dir(),
            path.read_bytes() if path.is_file() else None,  # never read a FIFO: it may block
            path.stat().st_mtime_ns,
        )
        for path in folder.rglob("*")
    }
