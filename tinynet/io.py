"""``tinynet.save`` / ``tinynet.load``: state dicts and checkpoints as ``.npz`` files.

What can be saved: a dict (string keys) whose values are ndarrays, Tensors, numbers, strings,
booleans, None, lists of those, or nested dicts of the same; for example a model's
``state_dict()``, or a training checkpoint holding the model, optimiser and RNG states.

Format: a NumPy ``.npz`` archive (no pickles: loading never runs code). Each array is one entry,
named by its path of keys joined with '/'; the entry ``__tinynet__`` holds JSON with the format
version, the tree of keys, and every non-array value.

The write is atomic: the archive is written to a temporary file beside the target, flushed to
disk, then renamed over it, so a crash or Ctrl-C never leaves a half-written file under the
final name. A file saved over keeps its permissions (a 0600 checkpoint stays 0600).

The read trusts nothing in the file: before anything is allocated, each entry's size in the zip
directory must agree with its .npy header (shape x itemsize) and be one its compression can
produce from the bytes stored (as many for a stored entry, at most 1032 times as many for a
deflated one); the data is then streamed into an array of exactly that size, and the CRC checked.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import math
import os
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tinynet.tensor import Tensor

FORMAT = "tinynet-npz"
VERSION = 1
_META = "__tinynet__"
_MAX_DEPTH = 100  # nesting of the saved tree; a checkpoint is about 6 deep
# The most an entry can expand: stored entries not at all; deflate's longest match (258 bytes)
# costs at least 2 bits, so at most 258 * 8 / 2 = 1032 times.
_EXPANSION = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: 1032}
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
_CHUNK = 1 << 20


def _flatten(tree, prefix: str, arrays: dict) -> object:
    """Replace every array in ``tree`` by a reference to its entry; return the JSON skeleton."""
    if isinstance(tree, Tensor):
        tree = tree.data
    if isinstance(tree, np.ndarray):
        if tree.dtype.kind not in "biuf":
            raise TypeError(
                f"tinynet.save: array at {prefix!r} has dtype {tree.dtype}; only "
                f"numeric and boolean arrays can be saved"
            )
        arrays[prefix] = tree
        return {"__array__": prefix}
    if isinstance(tree, np.generic):
        return tree.item()
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            if not isinstance(key, str) or "/" in key or key == _META:
                raise TypeError(
                    f"tinynet.save: keys must be strings without '/'; got {key!r} "
                    f"under {prefix or 'the top level'!r}"
                )
            out[key] = _flatten(value, f"{prefix}/{key}" if prefix else key, arrays)
        return {"__dict__": out}
    if isinstance(tree, (list, tuple)):
        return [_flatten(v, f"{prefix}/{i}", arrays) for i, v in enumerate(tree)]
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(
        f"tinynet.save: cannot save a {type(tree).__name__} at {prefix!r}; save "
        f"arrays, numbers, strings, lists and dicts"
    )


def _unflatten(skeleton, arrays, depth: int = 0) -> object:
    if depth > _MAX_DEPTH:
        raise ValueError(f"the tree nests deeper than {_MAX_DEPTH} levels")
    if isinstance(skeleton, dict):
        if "__array__" in skeleton:
            return arrays[skeleton["__array__"]]
        return {k: _unflatten(v, arrays, depth + 1) for k, v in skeleton["__dict__"].items()}
    if isinstance(skeleton, list):
        return [_unflatten(v, arrays, depth + 1) for v in skeleton]
    return skeleton


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _mode_of_new(path: Path) -> int:
    """The permissions a save gives ``path``: those of the file it replaces, else the usual
    ones for the umask (0644-like; mkstemp makes 0600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside ``path`` for writing; when the block ends normally, flush
    it to disk and rename it over ``path``; if it raises (Ctrl-C included), delete it. Readers
    see the old file or the new one, never a half-written one. ``path`` keeps its permissions.

    The temporary file is named ``.NAME.PID.XXXXXXXX.tmp`` after its writer's process id and
    locked (``fcntl.lockf``) while it is written, so that the sweep of stray temporaries that
    follows each save removes only those whose writer is gone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f"{prefix}{os.getpid()}.", suffix=".tmp"
    )
    try:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX)  # a new file: no one else holds it, no wait
        except OSError as error:  # a file system without locks: the name still says who writes
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                raise
        os.chmod(temporary, _mode_of_new(path))
        with os.fdopen(handle, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
            os.replace(temporary, path)  # still locked: closing the file releases the lock
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    for stray in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        _remove_if_abandoned(stray, prefix)


def _remove_if_abandoned(stray: Path, prefix: str) -> None:
    """Remove ``stray``, a temporary file of a save, if its writer is gone (killed outright by
    SIGKILL or a power loss; the files would otherwise pile up): the process its name records
    is not running here, and no process holds its lock (a writer on another machine sharing the
    folder, or in another PID namespace). Names without a process id, from older versions,
    are judged by the lock alone."""
    recorded = stray.name[len(prefix) :].split(".")[0]
    if recorded.isascii() and recorded.isdigit() and process_running(int(recorded)):
        return
    try:
        handle = os.open(stray, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # gone already, a symlink, or unreadable: not ours to judge
        return
    try:
        fcntl.lockf(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # fails while its writer holds it
    except OSError:
        os.close(handle)
        return
    try:
        stray.unlink(missing_ok=True)
    finally:
        os.close(handle)


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (another user's included)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only the checks
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        return True
    return True


def check_writable_folder(folder, option: str = "folder") -> None:
    """Refuse at once a ``folder`` that files cannot be written into: a path through or onto a
    file, or a folder (or the nearest existing parent of one still to be made) where creating a
    file fails. Nothing is left behind: a probe file is made and removed, no folder is made."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(
            f"{option} {folder} cannot hold files: {existing} is a file, not a folder"
        )
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".tinynet-probe-")
    except OSError as error:
        raise PermissionError(
            f"{option} {folder} cannot hold files: creating one in {existing} fails "
            f"({error.strerror or error})"
        ) from error
    os.close(handle)
    os.unlink(probe)


def save(obj: dict, path) -> None:
    """Write ``obj`` (a dict, e.g. ``model.state_dict()``) to ``path`` atomically."""
    if not isinstance(obj, dict):
        raise TypeError(
            f"tinynet.save: obj must be a dict such as model.state_dict(); got {type(obj).__name__}"
        )
    arrays: dict[str, np.ndarray] = {}
    skeleton = _flatten(obj, "", arrays)
    meta = json.dumps({"format": FORMAT, "version": VERSION, "tree": skeleton})
    with atomic_write(path) as file:
        np.savez(file, **{_META: np.array(meta)}, **arrays)


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, kinds: str):
    """The array in one .npy entry, its sizes checked before anything is allocated or
    decompressed, its data streamed into an array of exactly the size its header declares."""
    name = info.filename.removesuffix(".npy")
    where, archive_size = f"tinynet.load: {path}: entry {name!r}", path.stat().st_size
    expansion = _EXPANSION.get(info.compress_type)
    if expansion is None:
        raise ValueError(
            f"{where} uses zip compression method {info.compress_type}; expected "
            f"stored or deflated, as numpy writes"
        )
    if info.compress_size > archive_size or info.file_size > expansion * info.compress_size:
        raise ValueError(
            f"{where} claims {info.file_size:,} bytes from {info.compress_size:,} "
            f"stored ones in a {archive_size:,}-byte file, more than its compression can give"
        )
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version not in _HEADER_READERS:
            raise ValueError(f"{where} is .npy format {version}; expected 1.0 or 2.0")
        shape, fortran_order, dtype = _HEADER_READERS[version](stream)
        if dtype.kind not in kinds or dtype.hasobject:
            raise ValueError(
                f"{where} has dtype {dtype}; tinynet files hold only bool, int and "
                f"float arrays"
            )
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if stream.tell() + nbytes != info.file_size:
            raise ValueError(
                f"{where} holds {info.file_size - stream.tell():,} bytes of data but "
                f"its header says {shape} {dtype}, {nbytes:,} bytes"
            )
        try:
            array = np.empty(count, dtype)
        except MemoryError as error:
            raise MemoryError(f"{where} needs {nbytes:,} bytes: not enough memory") from error
        data = array.view(np.uint8)
        for start in range(0, nbytes, _CHUNK):
            chunk = data[start : start + _CHUNK]
            if stream.readinto(chunk) != len(chunk):
                raise ValueError(f"{where} ends before its {nbytes:,} bytes: the file is truncated")
        stream.read(1)  # at the end: the zip module checks the CRC
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as file:
        if file.read(6) == b"\x93NUMPY":
            raise ValueError(
                f"tinynet.load: {path} holds a single .npy array, not an archive written by "
                f"tinynet.save"
            )
    with zipfile.ZipFile(path) as archive:
        return {
            info.filename.removesuffix(".npy"): _read_entry(
                archive, info, path, "U" if info.filename == f"{_META}.npy" else "biuf"
            )
            for info in archive.infolist()
        }


def load(path) -> dict:
    """Read a file written by ``tinynet.save``; a missing, corrupt, truncated, foreign or
    hostile file raises an error that names the file and says which it is. Memory use is that
    of the arrays the file holds (a ``MemoryError`` names the file and entry it was reading)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tinynet.load: no such file: {path}")
    try:
        arrays = _read_npz(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        if str(error).startswith("tinynet.load"):
            raise
        raise ValueError(
            f"tinynet.load: {path} is corrupt or truncated, or not an .npz "
            f"archive ({type(error).__name__}: {error})"
        ) from error
    meta = arrays.pop(_META, None)
    if meta is None:
        raise ValueError(
            f"tinynet.load: {path} is an .npz archive but was not written by "
            f"tinynet.save (it has no {_META} entry)"
        )
    try:
        meta = json.loads(str(meta))
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}")
        tree = _unflatten(meta["tree"], arrays)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise ValueError(
            f"tinynet.load: {path} has an unreadable {_META} entry ({type(error).__name__}: "
            f"{error}); expected {FORMAT!r} version {VERSION}"
        ) from error
    if not isinstance(tree, dict):
        raise ValueError(
            f"tinynet.load: {path} holds a {type(tree).__name__} at the top level; "
            f"tinynet.save writes a dict"
        )
    return tree
