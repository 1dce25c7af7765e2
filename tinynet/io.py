"""``tinynet.save`` / ``tinynet.load``: state dicts and checkpoints as ``.npz`` files.

What can be saved: a dict (string keys) whose values are ndarrays, Tensors, numbers, strings,
booleans, None, lists of those, or nested dicts of the same; for example a model's
``state_dict()``, or a training checkpoint holding the model, optimiser and RNG states.

Format: a NumPy ``.npz`` archive (no pickles: loading never runs code). Each array is one entry,
named by its path of keys joined with '/'; the entry ``__tinynet__`` holds JSON with the format
version, the tree of keys, and every non-array value.

The write is atomic: the archive is written to a temporary file beside the target, flushed to
disk, then renamed over it, so a crash or Ctrl-C never leaves a half-written file under the
final name.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tinynet.tensor import Tensor

FORMAT = "tinynet-npz"
VERSION = 1
_META = "__tinynet__"


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


def _unflatten(skeleton, arrays) -> object:
    if isinstance(skeleton, dict):
        if "__array__" in skeleton:
            return arrays[skeleton["__array__"]]
        return {k: _unflatten(v, arrays) for k, v in skeleton["__dict__"].items()}
    if isinstance(skeleton, list):
        return [_unflatten(v, arrays) for v in skeleton]
    return skeleton


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside ``path`` for writing; when the block ends normally, flush
    it to disk and rename it over ``path``; if it raises (Ctrl-C included), delete it. Readers
    see the old file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; a saved file is 0644-like
        with os.fdopen(handle, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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


def load(path) -> dict:
    """Read a file written by ``tinynet.save``; a missing, corrupt, truncated or foreign file
    raises an error that names the file and says which it is."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tinynet.load: no such file: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(
                f"tinynet.load: {path} holds a single .npy array, not an archive "
                f"written by tinynet.save"
            )
        with archive:
            meta = archive[_META] if _META in archive.files else None
            arrays = {name: archive[name] for name in archive.files if name != _META}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        if str(error).startswith("tinynet.load"):
            raise
        raise ValueError(
            f"tinynet.load: {path} is corrupt or truncated, or not an .npz "
            f"archive ({type(error).__name__}: {error})"
        ) from error
    if meta is None:
        raise ValueError(
            f"tinynet.load: {path} is an .npz archive but was not written by "
            f"tinynet.save (it has no {_META} entry)"
        )
    try:
        meta = json.loads(str(meta))
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}")
        return _unflatten(meta["tree"], arrays)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"tinynet.load: {path} has an unreadable {_META} entry ({error}); "
            f"expected {FORMAT!r} version {VERSION}"
        ) from error
