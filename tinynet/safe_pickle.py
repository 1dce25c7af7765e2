"""Reading pickles without running arbitrary code, changing the process, or unbounded memory.

A pickle names the functions that rebuild its objects, and ``pickle.load`` imports and calls
whatever it names, so a malicious file runs code. PyTorch checkpoints and the CIFAR-10 batches
are pickles; tinynet reads them with ``RestrictedUnpickler``, which holds three lines:

- Names: it resolves only the (module, name) pairs of an explicit allow-list, each mapped to a
  stand-in, and refuses anything else with an error that names it.
- Nothing a pickle can reach may be changed by it. BUILD sets the state (the attributes) of the
  object on the stack. On an object the pickle made (an OrderedDict's ``_metadata``, an array's
  contents) that is what BUILD is for; on a shared one it changes the process: setting the
  ``__defaults__`` of a rebuild function alters every tensor read afterwards. So every
  allow-listed value must be immutable (a Python function is handed over wrapped in a
  ``PickleFunction``, a tuple), and stand-ins return fresh or immutable objects.
- Memory bounded by the file: CPython's unpickler allocates what a length prefix (BINBYTES8,
  LONG4, FRAME) or a memo index declares before it reads any of it, so 14 bytes can demand
  gigabytes. ``load`` first walks the pickle's opcodes with ``pickletools.genops`` (building
  nothing, no read asking for more than the stream still holds) and refuses a length beyond the
  end of the stream or a memo index beyond those assigned so far.

Messages that show a value from a pickle use ``describe``, a few levels and items of it: a full
``repr`` of a list holding the same list twice, 40 levels deep, has 2**40 entries.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import reprlib
import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

_IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: a class whose attributes cannot be set


class PickleFunction(NamedTuple):
    """An allow-listed Python function as a pickle holds it: callable, and immutable (a tuple),
    where the function itself has attributes any BUILD could set."""

    name: str
    function: Callable

    def __call__(self, *args):
        return self.function(*args)

    def __setstate__(self, state):
        raise pickle.UnpicklingError(
            f"refusing to change {self.name}: a pickle may set the state of the objects it "
            f"makes, never of a function it names"
        )


class Name(NamedTuple):
    """An allow-listed name a pickle may pass as an argument but not call (``numpy.ndarray``)."""

    name: str


def _frozen(key: tuple[str, str], value):
    """``value`` as the pickle may hold it, or an error if a pickle could change it."""
    if isinstance(value, types.FunctionType):
        return PickleFunction(".".join(key), value)
    if (
        (isinstance(value, type) and value.__flags__ & _IMMUTABLE_TYPE)
        or isinstance(value, types.BuiltinFunctionType)
        or (isinstance(value, tuple) and not hasattr(value, "__dict__"))
    ):
        return value
    raise TypeError(
        f"allow-list entry {'.'.join(key)} is a {type(value).__name__}, whose attributes a "
        f"pickle could set; give it as a function, an immutable class or a NamedTuple"
    )


class _Remaining:
    """The next ``left`` bytes of ``file``, read so that no read asks for more than remain
    (``BufferedReader.read(n)`` allocates n bytes before it reads)."""

    def __init__(self, file, left: int):
        self.file, self.left = file, left

    def read(self, n: int) -> bytes:
        data = self.file.read(min(n, self.left))
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self.file.readline(self.left)
        self.left -= len(line)
        return line


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the (module, name) pairs of ``allowed``, hands each over
    immutable, and checks every length and memo index against the stream before loading."""

    def __init__(self, file, allowed: Mapping[tuple[str, str], Any], **kwargs):
        super().__init__(file, **kwargs)
        self.file = file
        self.allowed = {key: _frozen(key, value) for key, value in allowed.items()}

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: this file may only contain "
                + ", ".join(sorted(f"{m}.{n}" for m, n in self.allowed))
            ) from None

    def load(self):
        self._check_lengths()
        return super().load()

    def _check_lengths(self) -> None:
        """Walk the next pickle's opcodes, refusing what would make CPython allocate more than
        the stream holds; leaves the stream where the pickle starts (on a refusal, where the
        walk stopped: at its end, if the pickle is cut short)."""
        start = self.file.tell()
        stream = _Remaining(self.file, self.file.seek(0, io.SEEK_END) - start)
        self.file.seek(start)
        stored = 0  # memo entries so far: a pickler numbers them 0, 1, 2, ...
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name == "FRAME" and arg > stream.left:
                    raise ValueError(f"a frame of {arg} bytes where {stream.left} remain")
                if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    if arg > stored:
                        raise ValueError(f"memo index {arg} where {stored} objects are stored")
                    stored = max(stored, arg + 1)
                elif opcode.name == "MEMOIZE":
                    stored += 1
        except ValueError as error:  # genops: a length beyond the end, an unknown opcode
            raise pickle.UnpicklingError(f"its pickle is truncated or corrupt: {error}") from None
        self.file.seek(start)


class _Brief(reprlib.Repr):
    """reprlib's cut-short repr, also for what it does not know: OrderedDict, NamedTuples,
    bytes, big ints (which it would spell out in full before cutting)."""

    def __init__(self):
        super().__init__()
        self.maxlevel = 3

    def repr_instance(self, x, level):
        if isinstance(x, dict):
            return self.repr_dict(x, level)
        if isinstance(x, tuple):
            return self.repr_tuple(x, level)
        if isinstance(x, (bytes, bytearray)):
            return self.repr_str(x, level)
        return super().repr_instance(x, level)

    def repr_int(self, x, level):
        return super().repr_int(x, level) if x.bit_length() <= 64 else f"<{x.bit_length()}-bit int>"


describe = _Brief().repr


def rebuild(obj, record_type: type, build: Callable, done: dict[int, Any] | None = None):
    """``obj`` with every ``record_type`` instance replaced by ``build(record)``. Dicts and
    lists are changed in place (the pickle may share them, even in cycles), tuples rebuilt; a
    record the pickle shares (one record, reached twice) is built once."""
    done = {} if done is None else done
    if id(obj) in done:
        return done[id(obj)]
    if isinstance(obj, record_type):
        result = build(obj)
    elif isinstance(obj, dict):
        done[id(obj)] = obj
        for key, value in list(obj.items()):
            obj[key] = rebuild(value, record_type, build, done)
        return obj
    elif isinstance(obj, list):
        done[id(obj)] = obj
        obj[:] = [rebuild(value, record_type, build, done) for value in obj]
        return obj
    elif type(obj) is tuple:
        result = tuple(rebuild(value, record_type, build, done) for value in obj)
    else:
        return obj
    done[id(obj)] = result
    return result


# ----------------------------------------------------------------------------- NumPy arrays
# NumPy pickles an array as  _reconstruct(numpy.ndarray, (0,), b'b')  (an empty array), then
# BUILD with (version, shape, dtype, is_fortran, data), data the values' bytes; the dtype is
# pickled as  numpy.dtype('u1', False, True)  then BUILD with its byte order (and fields).
NDARRAY = Name("numpy.ndarray")


class PickledArray:
    """One array of a pickle: made empty by ``_reconstruct``, given its contents by BUILD."""

    __slots__ = ("array",)

    def __init__(self):
        self.array: np.ndarray | None = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError(
                f"an array's state must be (version, shape, dtype, is_fortran, data); got "
                f"{describe(state)}"
            )
        _, shape, dtype, fortran, data = state
        if not (isinstance(dtype, np.dtype) and not dtype.hasobject):
            raise pickle.UnpicklingError(f"an array of dtype {describe(dtype)}")
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise pickle.UnpicklingError(f"an array of shape {describe(shape)}")
        if not isinstance(data, bytes):  # arrays of Python objects pickle a list here
            raise pickle.UnpicklingError(f"an array whose data is {type(data).__name__}")
        # Its bytes must all be in the file: no more memory than the file holds.
        count = math.prod(shape)
        if count * dtype.itemsize != len(data):
            raise pickle.UnpicklingError(
                f"an array of shape {describe(shape)} and dtype {dtype} needs "
                f"{count * dtype.itemsize} bytes; the pickle holds {len(data)}"
            )
        self.array = np.frombuffer(data, dtype, count).reshape(shape, order="F" if fortran else "C")

    def built(self) -> np.ndarray:
        if self.array is None:
            raise pickle.UnpicklingError("an array that was never given its contents")
        return self.array


def _reconstruct(subtype, shape, dtype_code) -> PickledArray:
    if subtype is not NDARRAY or shape != (0,):
        raise pickle.UnpicklingError(
            f"NumPy pickles an array as _reconstruct(numpy.ndarray, (0,), b'b'); got "
            f"_reconstruct({describe(subtype)}, {describe(shape)}, ...)"
        )
    return PickledArray()


def _dtype(spec, align=False, copy=True) -> np.dtype:
    """numpy.dtype as a pickle calls it: always a new dtype (BUILD sets its byte order, and must
    not set that of NumPy's own), and never one of Python objects (a pointer per element,
    each to an object the file need not hold)."""
    if not isinstance(spec, (str, bytes)):
        raise pickle.UnpicklingError(f"numpy.dtype({describe(spec)})")
    dtype = np.dtype(spec.decode("ascii") if isinstance(spec, bytes) else spec, bool(align), True)
    if dtype.hasobject:
        raise pickle.UnpicklingError(
            f"refusing an array of Python objects (dtype {describe(spec)})"
        )
    return dtype


_NUMPY_ARRAY_GLOBALS: dict[tuple[str, str], Any] = {
    # NumPy 1.x and 2.x module paths.
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): _dtype,
}


def load_with_arrays(file, **kwargs) -> object:
    """The next pickle in ``file``, which may name NumPy arrays and nothing else; each array is
    a read-only view of bytes the file holds. ``kwargs`` go to ``pickle.Unpickler``."""
    obj = RestrictedUnpickler(file, _NUMPY_ARRAY_GLOBALS, **kwargs).load()
    return rebuild(obj, PickledArray, PickledArray.built)
