"""Reading PyTorch ``.pth`` checkpoints without PyTorch (``tinynet.convert`` writes them as .npz).

What ``torch.save`` writes
--------------------------
``torch.save(obj, path)`` pickles ``obj`` (usually a state dict: parameter names -> tensors), but
keeps the numbers out of the pickle. A tensor is a *view* of a *storage*, one flat buffer of
numbers: a dtype, an offset into the buffer, a shape and strides (how many elements to step per
index of each dimension). Several tensors may share one storage (a tensor and its transpose,
slices of one buffer), so the pickle does not hold the numbers. It names a rebuild function and
its arguments, for example

    torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
                                    requires_grad, backward_hooks[, metadata])

where ``storage`` is a *persistent id*, a tuple the pickle hands to the loader instead of an
object: ``('storage', torch.FloatStorage, '0', 'cpu', numel)`` means "the numel float32 values
stored under the key '0'". The storage type fixes the dtype (``FloatStorage`` float32,
``LongStorage`` int64, ``BFloat16Storage`` bfloat16, ...). Newer dtypes (uint16/32/64, float8)
are written with ``_rebuild_tensor_v3``, an untyped (byte) storage and the dtype as an extra
argument. ``_rebuild_parameter`` wraps a tensor into an ``nn.Parameter``,
``collections.OrderedDict`` holds the state dict, and ``metadata`` may set a tensor's conjugate
or negative bit.

Where the storages' bytes are depends on the *container*. ``torch.save`` has written two.

The zip format (the default since PyTorch 1.6)
----------------------------------------------
An ordinary, uncompressed zip archive. Every entry sits under one folder (``archive/`` or the
file's stem, e.g. ``googlenet/``):

    googlenet/data.pkl         the saved object, as a pickle
    googlenet/data/0, /1, ...  the raw bytes of each storage, one entry per key
    googlenet/byteorder        b"little" or b"big": the byte order of those bytes
    googlenet/version, .format_version, .storage_alignment, .data/serialization_id  bookkeeping

The legacy format (PyTorch 0.2 to 1.5, and ``_use_new_zipfile_serialization=False`` since)
-------------------------------------------------------------------------------------------
One stream of four pickles, then the storages' bytes:

    1. the magic number 0x1950a86a20f9469cfc6c   (this is a legacy torch checkpoint)
    2. the protocol version 1001                  (the only one there has been)
    3. sys_info: {'protocol_version': 1001, 'little_endian': True,
                  'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
    4. the saved object, as above, with a sixth entry in each persistent id:
       ('storage', torch.FloatStorage, '94340678914112', 'cpu', numel, view)
    5. the list of storage keys, in the order their bytes follow; then for each key
       numel as 8 bytes little-endian, and its numel values (numel * itemsize bytes,
       little-endian whatever machine wrote them)

A key is the storage's memory address at save time. ``view`` is None, except in files from
PyTorch before 0.4, which could save a *storage view*: ``(view_key, offset, size)``, the
``size`` elements of the storage from ``offset`` on, with tensors placed relative to that
window. Those files also pickle tensors with the older ``_rebuild_tensor(storage, offset, size,
stride)``. The type sizes are always 2, 4 and 4 (PyTorch took them from ``struct``'s standard
sizes, the same on every machine); the format itself uses fixed widths, so they change nothing.

Because the bytes come after the pickle, nothing can be built while unpickling. So both formats
go the same three steps: unpickle the object, with every storage a ``_Storage`` record and every
tensor a ``_Tensor`` record; let the container read each storage's bytes (zip: its entry;
legacy: the stream after the pickles); then turn every record into an array.

A file of a few hundred bytes may declare anything, so each step checks what it is told against
what is stored before it allocates: a storage's byte count against its zip entry's declared size
(and the entry is read as a stream, never past that size, even if deflated) or against the bytes
left in a legacy file; a tensor's size and strides against its storage, which its copy may not
outgrow (a stride-0 view of one stored value as a billion is refused); and, in
``tinynet.safe_pickle``, the pickle's own lengths against the stream. The memory a read takes is
then bounded by what a valid file with the same declared content holds.

Not read, each refused with a message that says so: the tar format of PyTorch's first releases
(0.1.x, before the magic number), TorchScript archives (``torch.jit.save``), legacy files whose
sys_info says big-endian (PyTorch's byte order for the storage counts changed over the versions,
and no such file is at hand to check against) or shows other type sizes.

Why no ``import torch``
-----------------------
Every rebuild step is simple array work: read the bytes, view them with the storage's dtype,
apply offset, shape and strides. So this module unpickles with
``tinynet.safe_pickle.RestrictedUnpickler``, mapping each name torch's pickle may refer to onto a
small stand-in below (``_rebuild_tensor_v2`` records a ``_Tensor``, ``torch.FloatStorage`` is a
``_StorageType`` carrying float32). Any other name is refused, so loading never runs code a
checkpoint names: a whole pickled model, which would need torch's (and your) classes, is
rejected with the advice to save its ``state_dict()`` instead. Every object a pickle can reach is
immutable (the records are NamedTuples, the storages' bytes are kept apart from them), so no file
can change what a later one reads.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tinynet.safe_pickle import Name, RestrictedUnpickler, describe, rebuild


class CheckpointError(ValueError):
    """A file that is not a PyTorch checkpoint tinynet can read; the message names the file."""


_RESAVE = (
    "load it in PyTorch and save it again with a current version: "
    "torch.save(torch.load(old_path), new_path)"
)
_CUT_SHORT = "Was the download or the save cut short? Fetch or save it again"


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


# ----------------------------------------------------------------------------- storages, tensors
class _Storage(NamedTuple):
    """One storage: ``numel`` values of ``dtype``, named by ``key``. The pickle names it; the
    container reads its bytes afterwards, into a dict by key kept apart from the pickle (which
    may hold no object it could change). A storage *view* (legacy files before PyTorch 0.4) has
    no bytes of its own: it is the window of ``numel`` elements of the storage named ``root``
    that starts at element ``start``."""

    key: str
    dtype: str
    numel: int
    root: str | None = None
    start: int = 0

    @property
    def itemsize(self) -> int:
        return np.dtype(_NUMPY[self.dtype]).itemsize

    def data(self, contents: dict[str, np.ndarray]) -> np.ndarray:
        """The storage's bytes (uint8), from ``contents``, the container's bytes by key."""
        if self.root is None:
            return contents[self.key]
        window = slice(self.start * self.itemsize, (self.start + self.numel) * self.itemsize)
        return contents[self.root][window]


class _Tensor(NamedTuple):
    """A tensor as the pickle describes it: a view of a storage, built by ``_array`` once the
    storage holds its bytes. ``dtype`` is the storage's, or ``_rebuild_tensor_v3``'s."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple
    dtype: str
    metadata: dict | None


def _tensor(storage, offset, size, stride, dtype: str | None = None, metadata=None) -> _Tensor:
    """The record of one tensor, its arguments checked."""
    if not isinstance(storage, _Storage):
        raise TypeError(
            f"a tensor's storage must be a persistent storage id; got {describe(storage)}"
        )
    dtype = dtype or storage.dtype
    if dtype in _NO_NUMPY:
        raise TypeError(
            f"a tensor of dtype torch.{dtype}, which NumPy cannot hold; convert it in PyTorch "
            f"first (e.g. tensor.float())"
        )
    size, stride = tuple(size), tuple(stride)
    numbers = (offset, *size, *stride)
    if not all(isinstance(n, int) and n >= 0 for n in numbers) or len(size) != len(stride):
        raise ValueError(
            f"a tensor with offset {describe(offset)}, size {describe(size)} and stride "
            f"{describe(stride)}"
        )
    if not isinstance(metadata, (dict, type(None))):
        raise TypeError(f"tensor metadata must be a dict; got {describe(metadata)}")
    return _Tensor(storage, offset, size, stride, dtype, metadata)


def _stored_array(tensor: _Tensor, contents: dict[str, np.ndarray], byteorder: str) -> np.ndarray:
    """The tensor as a contiguous NumPy array: its own copy of the values it views, in the
    storage's bytes (``contents``, by key) of byte order ``byteorder`` ('<' or '>')."""
    storage, offset, size, stride, dtype, metadata = tensor
    raw = storage.data(contents)
    numpy_dtype = np.dtype(byteorder + _NUMPY[dtype])
    if len(raw) % numpy_dtype.itemsize:
        raise ValueError(
            f"storage {storage.key} holds {len(raw)} bytes, not a whole number of "
            f"torch.{dtype} values"
        )
    elements = raw.view(numpy_dtype)
    count = math.prod(size)
    if count == 0:
        array = np.empty(size, numpy_dtype)
    else:
        # The last element the view touches must lie inside the storage (as torch checks):
        # as_strided itself would read past the end of the buffer without a word.
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= len(elements):
            raise ValueError(
                f"a tensor of size {size}, stride {stride} at offset {offset} reaches element "
                f"{last} of storage {storage.key}, which has {len(elements)}"
            )
        # A view with stride 0 (or overlapping strides) repeats stored values: its copy could
        # take any amount of memory for a file of a few hundred bytes. The copy may hold no
        # more values than the storage does.
        if count > len(elements):
            raise ValueError(
                f"a tensor of size {size}, stride {stride} repeats the values of storage "
                f"{storage.key}: {count} elements from the {len(elements)} stored; tinynet "
                f"reads no view larger than its storage (save tensor.contiguous() instead)"
            )
        itemsize = numpy_dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            elements[offset:], size, tuple(s * itemsize for s in stride), writeable=False
        )
        array = np.array(view, order="C")  # a contiguous copy: the tensor's own values
    array = array.astype(numpy_dtype.newbyteorder("="), copy=False)
    if dtype == "bfloat16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    # torch's lazy conjugate and negative bits: the storage holds the values before them.
    for name, value in (metadata or {}).items():
        if name not in ("conj", "neg"):
            raise ValueError(f"unknown tensor metadata {describe(name)}")
        if value:
            array = np.conj(array) if name == "conj" else -array
    return array


# ----------------------------------------------------------------------------- the allow-list
def _rebuild_tensor(storage, offset, size, stride):
    # PyTorch 0.2 and 0.3 (legacy files): no requires_grad, hooks or metadata yet.
    return _tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    return _tensor(storage, offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    if not isinstance(dtype, _DType):
        raise TypeError(f"_rebuild_tensor_v3 needs a torch dtype; got {describe(dtype)}")
    return _tensor(storage, offset, size, stride, dtype.name, metadata)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    return data  # an nn.Parameter is its tensor, plus requires_grad


def _rebuild_from_type_v2(func, new_type, args, state):
    # A tensor with Python attributes (or a Parameter subclass): rebuild the tensor, drop the rest.
    tensor = func(*args) if callable(func) and isinstance(args, tuple) else None
    if not isinstance(tensor, _Tensor):
        raise TypeError(f"_rebuild_from_type_v2 that rebuilds no tensor (with {describe(func)})")
    return tensor


def _encode(text: str, encoding: str) -> bytes:
    # Protocol-2 pickles write bytes objects as _codecs.encode(text, 'latin1').
    if not (isinstance(text, str) and encoding in ("latin1", "latin-1")):
        raise ValueError(f"_codecs.encode({describe(text)}, {describe(encoding)})")
    return text.encode("latin1")


def _device(kind: str, index: int | None = None) -> str:
    # torch.device('cpu') or torch.device('cuda', 0): only where a tensor was, kept as text.
    if not (isinstance(kind, str) and (index is None or type(index) is int)):
        raise TypeError(f"torch.device({describe(kind)}, {describe(index)})")
    return kind if index is None else f"{kind}:{index}"


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Every (module, name) a state-dict checkpoint may name, each mapped to its stand-in."""
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        # Named by _rebuild_from_type_v2 as the tensor's type; the tensor is rebuilt without it.
        ("torch", "Tensor"): Name("torch.Tensor"),
        ("torch.nn.parameter", "Parameter"): Name("torch.nn.parameter.Parameter"),
        ("torch", "Size"): tuple,
        ("torch", "device"): _device,
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


def _text(value) -> str:
    """A key or tag of a checkpoint, which torch writes as str (Python 2: bytes)."""
    if not isinstance(value, (str, bytes)):
        raise ValueError(f"expected a string; got {describe(value)}")
    return value.decode("ascii") if isinstance(value, bytes) else value


class _TorchUnpickler(RestrictedUnpickler):
    """Unpickles one pickle of a checkpoint: globals through ``allowed``, each persistent id
    (a tuple of ``pid_length`` entries; None: no persistent ids) to a ``_Storage``, registered
    by key in ``storages`` for the container to read."""

    def __init__(self, file, allowed=_ALLOWED, pid_length: int | None = None):
        super().__init__(file, allowed)
        self.pid_length = pid_length
        self.storages: dict[str, _Storage] = {}
        self.views: dict[str, _Storage] = {}

    def load(self):
        try:
            return super().load()
        except (AttributeError, ArithmeticError, SystemError) as error:
            # What a corrupt opcode stream makes pickle raise (an APPEND onto a dict, a BUILD on
            # an immutable stand-in, ...); legacy files, unlike zip entries, carry no checksum.
            raise pickle.UnpicklingError(
                f"its pickle is corrupt ({type(error).__name__}: {error})"
            ) from error

    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except pickle.UnpicklingError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple) and len(pid) == self.pid_length and _text(pid[0]) == "storage"
        ):
            raise ValueError(f"an unknown persistent id {describe(pid)} (expected a storage)")
        _, storage_type, key, _location, numel, *view = pid
        key = _text(key)
        if not isinstance(storage_type, _StorageType):
            raise ValueError(
                f"storage {key} has type {describe(storage_type)}, not a torch storage"
            )
        if not (isinstance(numel, int) and numel >= 0):
            raise ValueError(f"storage {key} has {describe(numel)} elements")
        # Tensors that share a storage name it again: one _Storage, read once.
        storage = self.storages.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if (storage.dtype, storage.numel) != (storage_type.dtype, numel):
            raise ValueError(
                f"storage {key} is named both as {storage.numel} torch.{storage.dtype} values "
                f"and as {numel} torch.{storage_type.dtype} values"
            )
        if view and view[0] is not None:
            return self._view(storage, view[0])
        return storage

    def _view(self, root: _Storage, view) -> _Storage:
        if not (isinstance(view, tuple) and len(view) == 3):
            raise ValueError(
                f"storage {root.key} has view {describe(view)}, not (key, offset, size)"
            )
        key, start, numel = _text(view[0]), view[1], view[2]
        if not (isinstance(start, int) and isinstance(numel, int) and 0 <= start):
            raise ValueError(
                f"storage view {key} has offset {describe(start)} and size {describe(numel)}"
            )
        if not 0 <= numel <= root.numel - start:
            raise ValueError(
                f"storage view {key} of elements {start} to {start + numel} lies outside "
                f"storage {root.key}, which has {root.numel}"
            )
        view = self.views.setdefault(key, _Storage(key, root.dtype, numel, root.key, start))
        if (view.root, view.start, view.numel) != (root.key, start, numel):
            raise ValueError(f"storage view {key} is named as two different windows")
        return view


# ----------------------------------------------------------------------------- the zip format
def _not_a_zip(path: Path, head: bytes) -> CheckpointError:
    """The error for a file neither container reads, saying what it looks like instead."""
    if not head:
        return CheckpointError(f"{path} is empty, not a PyTorch checkpoint")
    if head.startswith(b"PK\x03\x04"):
        return CheckpointError(
            f"{path} is truncated or corrupt: it starts as a zip archive (as torch.save writes) "
            f"but its end, the archive's table of contents, is missing or damaged. {_CUT_SHORT}"
        )
    if head[257:262] == b"ustar":
        return CheckpointError(
            f"{path} is a tar archive: a PyTorch checkpoint in the tar format of PyTorch's "
            f"first releases (0.1.x), which tinynet does not read; {_RESAVE}"
        )
    if head[:1] == b"\x80":
        return CheckpointError(
            f"{path} is a bare pickle, neither a zip archive nor a legacy checkpoint as "
            f"torch.save writes them; if it came from an old PyTorch, {_RESAVE}"
        )
    return CheckpointError(
        f"{path} is not a PyTorch checkpoint: torch.save writes a zip archive or a legacy "
        f"pickle stream, and this file is neither (it starts with {head[:8]!r})"
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


def _read_zip(path: Path, file):
    """The zip container: the object from data.pkl, each storage's bytes from data/<key>;
    returns the object, the storages' bytes by key and their byte order."""
    try:
        with zipfile.ZipFile(file) as archive:
            prefix = _record_prefix(path, archive)
            names = set(archive.namelist())
            byteorder = "little"
            if prefix + "byteorder" in names:
                with archive.open(prefix + "byteorder") as entry:
                    byteorder = entry.read(len("little") + 1).decode("ascii", "replace")
                if byteorder not in ("little", "big"):
                    raise CheckpointError(
                        f"{path}: unknown byte order {byteorder!r} in its byteorder entry"
                    )
            with archive.open(prefix + "data.pkl") as pickled:
                unpickler = _TorchUnpickler(pickled, pid_length=5)
                obj = unpickler.load()
            contents = {}
            for key, storage in unpickler.storages.items():
                name = f"{prefix}data/{key}"
                if name not in names:
                    raise ValueError(
                        f"storage {name} is missing from the archive (incomplete or altered)"
                    )
                expected = storage.numel * storage.itemsize
                declared = archive.getinfo(name).file_size
                if declared != expected:
                    raise ValueError(
                        f"storage {name} holds {declared} bytes; the pickle expects "
                        f"{storage.numel} torch.{storage.dtype} values ({expected} bytes)"
                    )
                with archive.open(name) as entry:  # a stream: no further than the declared size
                    raw = entry.read(expected)
                if len(raw) != expected:
                    raise ValueError(
                        f"storage {name} ends after {len(raw)} of its {expected} bytes"
                    )
                contents[key] = np.frombuffer(raw, np.uint8)
            return obj, contents, "<" if byteorder == "little" else ">"
    except (zipfile.BadZipFile, NotImplementedError) as error:  # what zipfile says of damage
        try:
            has_end_record = zipfile.is_zipfile(file)
        except zipfile.BadZipFile:  # it has one, but one zipfile refuses
            has_end_record = True
        if not has_end_record:
            file.seek(0)
            raise _not_a_zip(path, file.read(512)) from None
        raise CheckpointError(f"{path} is corrupt ({error}); fetch or save it again") from error


# ----------------------------------------------------------------------------- the legacy format
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
# How pickle (protocol 2 or later) writes that number: LONG1 of 10 bytes. It opens the file,
# after the protocol opcode (and, from protocol 4 on, a frame header).
_LEGACY_MAGIC = b"\x8a\x0a" + _LEGACY_MAGIC_NUMBER.to_bytes(10, "little")
_LEGACY_PROTOCOL_VERSION = 1001
_LEGACY_TYPE_SIZES = {"short": 2, "int": 4, "long": 4}


def _is_legacy(head: bytes) -> bool:
    return head[:1] == b"\x80" and _LEGACY_MAGIC in head[:32]


def _legacy_pickle(path: Path, file, size: int, what: str, unpickler=None):
    """The next pickle of a legacy stream: by default one that may name no globals and no
    storages (the magic number, the version, sys_info, the storage keys)."""
    unpickler = unpickler or _TorchUnpickler(file, allowed={})
    try:
        return unpickler.load()
    except (EOFError, pickle.UnpicklingError):
        if file.tell() < size:
            raise
        raise CheckpointError(f"{path} is truncated: it ends inside {what}. {_CUT_SHORT}") from None


def _check_sys_info(path: Path, sys_info) -> None:
    if not isinstance(sys_info, dict):
        raise CheckpointError(f"{path}: its legacy sys_info is {describe(sys_info)}, not a dict")
    if sys_info.get("little_endian") is not True:
        raise CheckpointError(
            f"{path} was saved on a big-endian machine (its sys_info says little_endian="
            f"{describe(sys_info.get('little_endian'))}); tinynet reads legacy checkpoints from "
            f"little-endian machines only; {_RESAVE}"
        )
    sizes = sys_info.get("type_sizes")
    if not isinstance(sizes, dict) or any(sizes.get(k) != n for k, n in _LEGACY_TYPE_SIZES.items()):
        raise CheckpointError(
            f"{path}: its legacy sys_info gives the type sizes {describe(sizes)}, where PyTorch "
            f"always wrote {_LEGACY_TYPE_SIZES}; tinynet does not know what wrote it"
        )


def _read_legacy(path: Path, file):
    """The legacy container: four pickles, then each storage's count and bytes in key order;
    returns the object, the storages' bytes by key and their byte order."""
    size = os.fstat(file.fileno()).st_size
    magic = _legacy_pickle(path, file, size, "its magic number")
    if magic != _LEGACY_MAGIC_NUMBER:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (it opens with {describe(magic)})"
        )
    version = _legacy_pickle(path, file, size, "its protocol version")
    if version != _LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(
            f"{path} is a legacy checkpoint of protocol version {describe(version)}; tinynet reads "
            f"{_LEGACY_PROTOCOL_VERSION}, the only one PyTorch has written"
        )
    _check_sys_info(path, _legacy_pickle(path, file, size, "its sys_info"))
    unpickler = _TorchUnpickler(file, pid_length=6)
    obj = _legacy_pickle(path, file, size, "the pickled object", unpickler)
    keys = _legacy_pickle(path, file, size, "the list of storage keys")
    if not (isinstance(keys, list) and all(isinstance(key, (str, bytes)) for key in keys)):
        raise ValueError(f"the list of storage keys is {describe(keys)}")
    keys = [_text(key) for key in keys]
    if sorted(keys) != sorted(unpickler.storages):
        raise ValueError(
            f"the storages the pickle names ({', '.join(sorted(unpickler.storages)) or 'none'}) "
            f"are not those whose bytes the file lists ({', '.join(keys) or 'none'})"
        )
    contents = {}
    for key in keys:
        storage = unpickler.storages[key]
        count, nbytes = file.read(8), storage.numel * storage.itemsize
        remaining = size - file.tell()
        if len(count) < 8 or remaining < nbytes:
            raise CheckpointError(
                f"{path} is truncated: storage {key} promises {storage.numel} "
                f"torch.{storage.dtype} values ({nbytes} bytes), but only "
                f"{max(remaining, 0)} bytes remain. {_CUT_SHORT}"
            )
        if int.from_bytes(count, "little") != storage.numel:
            raise ValueError(
                f"storage {key}: the file counts {int.from_bytes(count, 'little')} values where "
                f"its pickle names {storage.numel} torch.{storage.dtype} values"
            )
        contents[key] = np.frombuffer(file.read(nbytes), np.uint8)
    return obj, contents, "<"  # always little-endian


# ----------------------------------------------------------------------------- either container
def _load(path: Path):
    """The object torch.save saved, with every tensor rebuilt as a NumPy array."""
    with open(path, "rb") as file:
        read = _read_legacy if _is_legacy(file.read(32)) else _read_zip
        file.seek(0)
        try:
            obj, contents, byteorder = read(path, file)
            return rebuild(obj, _Tensor, lambda tensor: _stored_array(tensor, contents, byteorder))
        except _Refused as refused:
            raise CheckpointError(
                f"{path}: its pickle names {refused.name}, which is not part of a plain state "
                f"dict. tinynet rebuilds only tensors, numbers, strings, lists and dicts, and "
                f"never runs code a checkpoint names. If the file holds a whole pickled model "
                f"(torch.save(model, path)), save its weights in PyTorch instead: "
                f"torch.save(model.state_dict(), path). Quantized and sparse tensors are not "
                f"supported either"
            ) from None
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            LookupError,
            ArithmeticError,
            RecursionError,
        ) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"{path}: cannot rebuild its contents: {error}") from error


# ----------------------------------------------------------------------------- the state dict
# Keys under which training scripts commonly store the model's state dict, tried in order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def _shown(key) -> str:
    """A key of the file's dicts for a message: whole if a string, else cut short."""
    return key if isinstance(key, str) else describe(key)


def _find_state_dict(path: Path, obj, log: Callable[[str], None]) -> dict:
    if not isinstance(obj, dict):
        what = "a single tensor" if isinstance(obj, np.ndarray) else f"a {type(obj).__name__}"
        raise CheckpointError(f"{path} holds {what}, not a state dict (a dict of tensors by name)")
    if not any(isinstance(value, np.ndarray) for value in obj.values()):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                others = [_shown(k) for k in obj if k != key]
                log(
                    f"{path}: using the state dict under the key {key!r}"
                    + (f" (also in the file, not converted: {', '.join(others)})" if others else "")
                )
                return _find_state_dict(path, obj[key], log)
        raise CheckpointError(
            f"{path} holds a dict without tensors, and none of the keys "
            f"{', '.join(WRAPPER_KEYS)} holds a state dict; its keys are: "
            f"{', '.join(map(_shown, obj)) or 'none'}"
        )
    return obj


def read_torch_checkpoint(path, log: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch ``.pth`` checkpoint (zip or legacy format) as NumPy arrays, by name.

    Each array is a contiguous copy with the tensor's shape and dtype, exactly as ``torch.load``
    would give it (views, offsets and shared storages resolved); bfloat16 becomes float32, which
    holds every bfloat16 value exactly. Accepts a state dict, or a training checkpoint holding
    one under 'state_dict', 'model_state_dict' or 'model'; a 'module.' prefix on every key
    (``nn.DataParallel``) is removed. Entries that are not tensors are skipped.

    log: called with one line for each such decision (which key was used, the prefix removed,
    entries skipped), e.g. ``log=print``; by default they are not reported.

    Raises FileNotFoundError for a missing file, CheckpointError (a ValueError) naming the file
    and the problem for anything else (truncated file, a pickled model, TorchScript, ...).
    """
    log = log or (lambda message: None)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_torch_checkpoint: no such file: {path}")
    try:
        obj = _load(path)
    except OSError as error:
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
        f"{describe(key)} ({type(value).__name__})"
        for key, value in state.items()
        if key not in tensors
    ]
    if skipped:
        log(f"{path}: skipped entries that are not tensors named by strings: {', '.join(skipped)}")
    if not tensors:
        raise CheckpointError(f"{path}: its state dict has no tensors named by strings")
    if tensors and all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module.") :]: value for key, value in tensors.items()}
        log(f"{path}: removed the 'module.' prefix (nn.DataParallel) from every key")
    return tensors

