"""Reading PyTorch ``.pth`` checkpoints without PyTorch, and converting them to tinynet's format.

What ``torch.save`` writes (the zip format, the default since PyTorch 1.6)
--------------------------------------------------------------------------
A ``.pth`` file is an ordinary, uncompressed zip archive. Every entry sits under one folder
(``archive/`` or the file's stem, e.g. ``googlenet/``):

    googlenet/data.pkl         the object that was saved (usually the state dict), as a pickle
    googlenet/data/0, /1, ...  the raw bytes of each *storage*: one flat buffer of numbers
    googlenet/byteorder        b"little" or b"big": the byte order of those buffers
    googlenet/version, .format_version, .storage_alignment, .data/serialization_id  bookkeeping

A tensor is a *view* of a storage: a dtype, an offset into the buffer, a shape and strides (how
many elements to step per index of each dimension). Several tensors may share one storage (a
tensor and its transpose, slices of one buffer), so the pickle does not hold the numbers at all.
It names a rebuild function and its arguments, for example

    torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
                                    requires_grad, backward_hooks[, metadata])

where ``storage`` is a *persistent id*, a tuple the pickle hands to the loader instead of an
object: ``('storage', torch.FloatStorage, '0', 'cpu', numel)`` means "the numel float32 values in
``data/0``". The storage type fixes the dtype (``FloatStorage`` float32, ``LongStorage`` int64,
``BFloat16Storage`` bfloat16, ...). Newer dtypes (uint16/32/64, float8) are written with
``_rebuild_tensor_v3``, an untyped (byte) storage and the dtype as an extra argument.
``_rebuild_parameter`` wraps a tensor into an ``nn.Parameter``, ``collections.OrderedDict``
holds the state dict, and ``metadata`` may set a tensor's conjugate or negative bit.

Why no ``import torch``
-----------------------
Every one of those rebuild steps is simple array work: read the bytes, view them with the
storage's dtype, apply offset, shape and strides. So this module unpickles ``data.pkl`` with
``tinynet.safe_pickle.RestrictedUnpickler``, mapping each name torch's pickle may refer to onto a
small stand-in below (``_rebuild_tensor_v2`` builds a NumPy array, ``torch.FloatStorage`` is a
``_StorageType`` carrying float32). Any other name is refused, so loading never runs code a
checkpoint names: a whole pickled model, which would need torch's (and your) classes, is
rejected with the advice to save its ``state_dict()`` instead.

The legacy format (``torch.save(..., _use_new_zipfile_serialization=False)`` and every PyTorch
before 1.6) is a stream of several pickles, not a zip; it is detected and refused with the advice
to load it in a current PyTorch and save it again.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tinynet import io
from tinynet.safe_pickle import RestrictedUnpickler


class CheckpointError(ValueError):
    """A file that is not a PyTorch checkpoint tinynet can read; the message names the file."""


# ----------------------------------------------------------------------------- dtypes
class _DType(NamedTuple):
    """Stands in for a ``torch.dtype`` (``torch.float32``, ...)."""

    name: str


class _StorageType(NamedTuple):
    """Stands in for ``torch.FloatStorage`` & co., and ``UntypedStorage`` (dtype 'uint8')."""

    name: str
    dtype: str


# torch dtype name -> NumPy dtype with the same bytes; bfloat16 is read as its 16 bits, widened
# to float32 afterwards (exact: a bfloat16 is the upper half of a float32).
_NUMPY = {
    "float64": "f8",
    "float32": "f4",
    "float16": "f2",
    "bfloat16": "u2",
    "int64": "i8",
    "int32": "i4",
    "int16": "i2",
    "int8": "i1",
    "uint64": "u8",
    "uint32": "u4",
    "uint16": "u2",
    "uint8": "u1",
    "bool": "?",
    "complex128": "c16",
    "complex64": "c8",
}
# dtypes a checkpoint may name that NumPy cannot represent: refused when a tensor uses them.
_NO_NUMPY = (
    "float8_e5m2 float8_e4m3fn float8_e5m2fnuz float8_e4m3fnuz float8_e8m0fnu float4_e2m1fn_x2 "
    "complex32 bits8 bits16 bits1x8 bits2x4 bits4x2"
).split()

# What torch.save writes for each dtype that has a "typed" storage class.
_STORAGE_TYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
}

# ----------------------------------------------------------------------------- rebuilding


class _Storage(NamedTuple):
    """One ``data/<key>`` buffer: its raw bytes and the dtype of its elements."""

    key: str
    raw: np.ndarray  # uint8, as read from the archive
    dtype: str  # a torch dtype name
    byteorder: str  # '<' or '>'


def _as_array(storage, offset, size, stride, dtype: str | None = None) -> np.ndarray:
    """The view (offset, size, stride) of ``storage`` as a contiguous NumPy array; ``dtype``
    overrides the storage's (``_rebuild_tensor_v3`` views an untyped byte storage)."""
    if not isinstance(storage, _Storage):
        raise TypeError(f"a tensor's storage must be a persistent storage id; got {storage!r}")
    dtype = dtype or storage.dtype
    if dtype in _NO_NUMPY:
        raise TypeError(
            f"a tensor of dtype torch.{dtype}, which NumPy cannot hold; convert it in PyTorch "
            f"first (e.g. tensor.float())"
        )
    numpy_dtype = np.dtype(storage.byteorder + _NUMPY[dtype])
    size, stride = tuple(size), tuple(stride)
    numbers = (offset, *size, *stride)
    if not all(isinstance(n, int) and n >= 0 for n in numbers) or len(size) != len(stride):
        raise ValueError(f"a tensor with offset {offset}, size {size} and stride {stride}")
    if len(storage.raw) % numpy_dtype.itemsize:
        raise ValueError(
            f"storage data/{storage.key} holds {len(storage.raw)} bytes, not a whole number of "
            f"torch.{dtype} values"
        )
    elements = storage.raw.view(numpy_dtype)
    if 0 in size:
        array = np.empty(size, numpy_dtype)
    else:
        # The last element the view touches must lie inside the storage (as torch checks):
        # as_strided itself would read past the end of the buffer without a word.
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= len(elements):
            raise ValueError(
                f"a tensor of size {size}, stride {stride} at offset {offset} reaches element "
                f"{last} of storage data/{storage.key}, which has {len(elements)}"
            )
        itemsize = numpy_dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            elements[offset:], size, tuple(s * itemsize for s in stride), writeable=False
        )
        array = np.array(view, order="C")  # a contiguous copy: the tensor's own values
    array = array.astype(numpy_dtype.newbyteorder("="), copy=False)
    if dtype == "bfloat16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _apply_metadata(array: np.ndarray, metadata) -> np.ndarray:
    """torch's lazy conjugate and negative bits: the storage holds the values before them."""
    if not isinstance(metadata, (dict, type(None))):
        raise TypeError(f"tensor metadata must be a dict; got {metadata!r}")
    for name, value in (metadata or {}).items():
        if name not in ("conj", "neg"):
            raise ValueError(f"unknown tensor metadata {name!r}")
        if value:
            array = np.conj(array) if name == "conj" else -array
    return array


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    return _apply_metadata(_as_array(storage, offset, size, stride), metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    if not isinstance(dtype, _DType):
        raise TypeError(f"_rebuild_tensor_v3 needs a torch dtype; got {dtype!r}")
    return _apply_metadata(_as_array(storage, offset, size, stride, dtype.name), metadata)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    return data  # an nn.Parameter is its tensor, plus requires_grad


def _rebuild_from_type_v2(func, new_type, args, state):
    # A tensor with Python attributes (or a Parameter subclass): rebuild the tensor, drop the rest.
    if func not in _REBUILD_FUNCTIONS:
        raise TypeError(f"_rebuild_from_type_v2 with rebuild function {func!r}")
    return func(*args)


_REBUILD_FUNCTIONS = (_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)


class _TensorType(NamedTuple):
    """Stands in for ``torch.Tensor`` / ``nn.Parameter``, named by ``_rebuild_from_type_v2``."""

    name: str


def _encode(text: str, encoding: str) -> bytes:
    # Protocol-2 pickles write bytes objects as _codecs.encode(text, 'latin1').
    if encoding not in ("latin1", "latin-1"):
        raise ValueError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Every (module, name) a state-dict checkpoint may name, each mapped to its stand-in."""
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Tensor"): _TensorType("Tensor"),
        ("torch.nn.parameter", "Parameter"): _TensorType("Parameter"),
        ("torch", "Size"): tuple,
        ("torch", "device"): lambda *args: ":".join(str(a) for a in args),
        ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", "uint8"),
        ("torch", "UntypedStorage"): _StorageType("UntypedStorage", "uint8"),
        ("_codecs", "encode"): _encode,
        ("builtins", "set"): set,
        ("__builtin__", "set"): set,
        ("builtins", "complex"): complex,
        ("__builtin__", "complex"): complex,
    }
    for name, dtype in _STORAGE_TYPES.items():
        # 'torch.cuda' storages: checkpoints of CUDA tensors saved by PyTorch before 2.0.
        for module in ("torch", "torch.cuda"):
            allowed[(module, name)] = _StorageType(name, dtype)
    for name in (*_NUMPY, *_NO_NUMPY):
        allowed[("torch", name)] = _DType(name)
    return allowed


_ALLOWED = _allowed_globals()


class _Refused(Exception):
    """Raised inside the unpickler when the pickle names something outside the allow-list."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _TorchUnpickler(RestrictedUnpickler):
    """Unpickles ``data.pkl``: globals through the allow-list, storages from the archive."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(file, _ALLOWED)
        self.archive, self.prefix, self.byteorder = archive, prefix, byteorder
        self.names = set(archive.namelist())
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except pickle.UnpicklingError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise ValueError(f"an unknown persistent id {pid!r} (expected a storage)")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"storage {key!r} has type {storage_type!r}, not a torch storage")
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        if key not in self.storages:  # tensors that share a storage share one read
            name = f"{self.prefix}data/{key}"
            if name not in self.names:
                raise ValueError(
                    f"storage {name} is missing from the archive (incomplete or altered)"
                )
            raw = np.frombuffer(self.archive.read(name), np.uint8)
            expected = numel * np.dtype(_NUMPY[storage_type.dtype]).itemsize
            if len(raw) != expected:
                raise ValueError(
                    f"storage {name} holds {len(raw)} bytes; the pickle expects {numel} "
                    f"torch.{storage_type.dtype} values ({expected} bytes)"
                )
            self.storages[key] = _Storage(key, raw, storage_type.dtype, self.byteorder)
        return self.storages[key]


# ----------------------------------------------------------------------------- the archive
# The first bytes of a legacy checkpoint: pickle protocol 2, then the long 0x1950a86a20f9469cfc6c.
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _not_a_zip(path: Path) -> CheckpointError:
    """The error for a file zipfile cannot open, saying what the file looks like instead."""
    with open(path, "rb") as file:
        head = file.read(512)
    resave = (
        "load it in PyTorch and save it again with a current version: "
        "torch.save(torch.load(old_path), new_path)"
    )
    if not head:
        return CheckpointError(f"{path} is empty, not a PyTorch checkpoint")
    if head.startswith(b"PK\x03\x04"):
        return CheckpointError(
            f"{path} is truncated or corrupt: it starts as a zip archive (as torch.save writes) "
            f"but its end, the archive's table of contents, is missing or damaged. Was the "
            f"download or the save cut short? Fetch or save it again"
        )
    if _LEGACY_MAGIC in head[:16]:
        return CheckpointError(
            f"{path} is a PyTorch checkpoint in the legacy format (PyTorch before 1.6, or "
            f"_use_new_zipfile_serialization=False), which tinynet does not read; {resave}"
        )
    if head[257:262] == b"ustar":
        return CheckpointError(
            f"{path} is a tar archive: a PyTorch checkpoint in the pre-0.4 legacy format, "
            f"which tinynet does not read; {resave}"
        )
    if head[:1] == b"\x80":
        return CheckpointError(
            f"{path} is a bare pickle, not a zip archive written by torch.save (PyTorch >= 1.6); "
            f"if it came from an old PyTorch, {resave}"
        )
    return CheckpointError(
        f"{path} is not a PyTorch checkpoint: torch.save writes a zip archive, and this file "
        f"is not one (it starts with {head[:8]!r})"
    )


def _record_prefix(path: Path, archive: zipfile.ZipFile) -> str:
    """The folder every entry sits in (torch takes it from the first entry, as here)."""
    names = archive.namelist()
    prefix = names[0].split("/")[0] + "/" if names and "/" in names[0] else ""
    if prefix + "constants.pkl" in names:
        raise CheckpointError(
            f"{path} is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; "
            f"load it with torch.jit.load and save its weights with "
            f"torch.save(model.state_dict(), path)"
        )
    if names and all(name.endswith(".npy") for name in names):
        raise CheckpointError(
            f"{path} is a NumPy .npz archive, not a PyTorch checkpoint (if tinynet.io.save "
            f"wrote it, read it with tinynet.io.load)"
        )
    if not prefix or prefix + "data.pkl" not in names:
        raise CheckpointError(
            f"{path} is a zip archive but not a PyTorch checkpoint: it has no <folder>/data.pkl "
            f"entry (its first entries: {', '.join(names[:4]) or 'none'})"
        )
    return prefix


def _unpickle(path: Path, archive: zipfile.ZipFile):
    """The object torch.save saved, with every tensor rebuilt as a NumPy array."""
    prefix = _record_prefix(path, archive)
    byteorder = "little"
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace")
        if byteorder not in ("little", "big"):
            raise CheckpointError(
                f"{path}: unknown byte order {byteorder!r} in its byteorder entry"
            )
    with archive.open(prefix + "data.pkl") as file:
        unpickler = _TorchUnpickler(file, archive, prefix, "<" if byteorder == "little" else ">")
        try:
            return unpickler.load()
        except _Refused as refused:
            raise CheckpointError(
                f"{path}: its pickle names {refused.name}, which is not part of a plain state "
                f"dict. tinynet rebuilds only tensors, numbers, strings, lists and dicts, and "
                f"never runs code a checkpoint names. If the file holds a whole pickled model "
                f"(torch.save(model, path)), save its weights in PyTorch instead: "
                f"torch.save(model.state_dict(), path). Quantized and sparse tensors are not "
                f"supported either"
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, LookupError) as error:
            raise CheckpointError(f"{path}: cannot rebuild its contents: {error}") from error


# ----------------------------------------------------------------------------- the state dict
# Keys under which training scripts commonly store the model's state dict, tried in order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def _find_state_dict(path: Path, obj, log: Callable[[str], None]) -> dict:
    if not isinstance(obj, dict):
        what = "a single tensor" if isinstance(obj, np.ndarray) else f"a {type(obj).__name__}"
        raise CheckpointError(f"{path} holds {what}, not a state dict (a dict of tensors by name)")
    if not any(isinstance(value, np.ndarray) for value in obj.values()):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                others = [str(k) for k in obj if k != key]
                log(
                    f"{path}: using the state dict under the key {key!r}"
                    + (f" (also in the file, not converted: {', '.join(others)})" if others else "")
                )
                return _find_state_dict(path, obj[key], log)
        raise CheckpointError(
            f"{path} holds a dict without tensors, and none of the keys "
            f"{', '.join(WRAPPER_KEYS)} holds a state dict; its keys are: "
            f"{', '.join(map(str, obj)) or 'none'}"
        )
    return obj


def read_torch_checkpoint(path, log: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch ``.pth`` checkpoint (zip format) as NumPy arrays, by name.

    Each array is a contiguous copy with the tensor's shape and dtype, exactly as ``torch.load``
    would give it (views, offsets and shared storages resolved); bfloat16 becomes float32, which
    holds every bfloat16 value exactly. Accepts a state dict, or a training checkpoint holding
    one under 'state_dict', 'model_state_dict' or 'model'; a 'module.' prefix on every key
    (``nn.DataParallel``) is removed. Entries that are not tensors are skipped.

    log: called with one line for each such decision (which key was used, the prefix removed,
    entries skipped), e.g. ``log=print``; by default they are not reported.

    Raises FileNotFoundError for a missing file, CheckpointError (a ValueError) naming the file
    and the problem for anything else (legacy format, truncated file, a pickled model, ...).
    """
    log = log or (lambda message: None)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_torch_checkpoint: no such file: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            obj = _unpickle(path, archive)
    except zipfile.BadZipFile as error:
        if not zipfile.is_zipfile(path):
            raise _not_a_zip(path) from None
        raise CheckpointError(f"{path} is corrupt ({error}); fetch or save it again") from error
    except (EOFError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise CheckpointError(f"{path} is truncated or unreadable ({error})") from error
    state = _find_state_dict(path, obj, log)

    tensors = {
        key: value
        for key, value in state.items()
        if isinstance(key, str) and isinstance(value, np.ndarray)
    }
    skipped = [
        f"{key!r} ({type(value).__name__})" for key, value in state.items() if key not in tensors
    ]
    if skipped:
        log(f"{path}: skipped entries that are not tensors named by strings: {', '.join(skipped)}")
    if not tensors:
        raise CheckpointError(f"{path}: its state dict has no tensors named by strings")
    if tensors and all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module.") :]: value for key, value in tensors.items()}
        log(f"{path}: removed the 'module.' prefix (nn.DataParallel) from every key")
    return tensors


def convert_torch_checkpoint(src, dst, log: Callable[[str], None] | None = None) -> dict:
    """Read the PyTorch checkpoint ``src`` and write its state dict to ``dst`` with
    ``tinynet.io.save`` (load it back with ``tinynet.io.load``); returns the state dict.

    Nothing is written when reading fails, and ``dst`` appears whole or not at all.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"convert_torch_checkpoint: {dst} is the source file; choose another path")
    state = read_torch_checkpoint(src, log)
    complex_keys = [key for key, value in state.items() if value.dtype.kind == "c"]
    if complex_keys:
        raise CheckpointError(
            f"{src}: tinynet's format holds real and boolean arrays only; these tensors are "
            f"complex: {', '.join(complex_keys)}"
        )
    io.save(state, dst)
    return state
