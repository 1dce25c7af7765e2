"""Initializers stored beside an ONNX model (ONNX's external data; PyTorch's ``dynamo=True``
exporter writes the weights to ``model.onnx.data`` by default), read only from the model's own
folder.

An external tensor names its file (``location``, relative to the model's folder) and the bytes
that hold it (``offset``, ``length``). A model comes from anywhere, so the name is not trusted:
it is read only when it is a relative path without '..', its real path (symlinks resolved) lies
inside the model's real folder, it is a regular file, and its bytes [offset, offset + length)
lie inside the file and are exactly the tensor's size. Each file's bytes are read once at most
(the lengths read from a file add up to its size at most), so many tensors naming the same bytes
cannot multiply them in memory. onnx's own ``load_external_data`` is not used: it follows any
path it is given.
"""

from __future__ import annotations

import os
import stat
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np
from onnx import TensorProto


class ExternalDataError(ValueError):
    """An external tensor that is not read; the message says why."""


class ExternalData:
    """Reads the external tensors of the model in ``folder`` (None: a model without a file,
    whose external tensors are all refused)."""

    def __init__(self, folder):
        self.folder = None if folder is None else os.path.realpath(folder)
        self._read: dict[str, int] = {}  # real path -> bytes read from it

    def read(self, tensor: TensorProto, dtype: np.dtype, count: int) -> np.ndarray:
        """The ``count`` values of type ``dtype`` (little-endian in the file) of ``tensor``, in
        its shape."""
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        if self.folder is None:
            raise ExternalDataError(f"its data is in the external file {location!r}, and a "
                                    "model not read from a file has no folder to find it in")
        path = self._inside(location)
        offset = _byte_count(entries.get("offset", "0"), "offset")
        size = count * dtype.itemsize
        length = _byte_count(entries["length"], "length") if "length" in entries else size
        if length != size:
            raise ExternalDataError(f"its external data is {length} bytes; its shape "
                                    f"{list(tensor.dims)} needs {size}")  # fmt: skip
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            raise ExternalDataError(f"cannot open its external data file {location!r} "
                                    f"({error.strerror})") from None  # fmt: skip
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):  # a folder, a FIFO (opened without waiting), a device
            os.close(descriptor)
            raise ExternalDataError(f"its external data {location!r} is not a regular file")
        with open(descriptor, "rb") as file:
            if offset + length > info.st_size:
                raise ExternalDataError(f"its external data, bytes {offset} to {offset + length}"
                                        f" of {location!r}, ends past the file's "
                                        f"{info.st_size} bytes")  # fmt: skip
            read = self._read.get(path, 0) + length
            if read > info.st_size:
                raise ExternalDataError(f"the external tensors read {read} bytes from "
                                        f"{location!r}, which holds {info.st_size}: tensors "
                                        "share bytes")  # fmt: skip
            self._read[path] = read
            file.seek(offset)
            values = np.fromfile(file, dtype=dtype.newbyteorder("<"), count=count)
        if values.size != count:
            raise ExternalDataError(f"{location!r} ended after {values.size} of {count} values")
        return values.astype(dtype, copy=False).reshape(tuple(tensor.dims))

    def _inside(self, location: str) -> str:
        """The real path of ``location`` if it names a file inside the model's folder."""
        parts = PurePosixPath(location).parts
        if (
            not location
            or "\0" in location
            or "\\" in location
            or PurePosixPath(location).is_absolute()
            or PureWindowsPath(location).drive
            or ".." in parts
        ):
            raise ExternalDataError(f"its external data file {location!r} is not a relative "
                                    "name inside the model's folder (without '..')")
        path = os.path.realpath(os.path.join(self.folder, *parts))
        if os.path.commonpath([path, self.folder]) != self.folder:
            raise ExternalDataError(f"its external data file {location!r} leads outside the "
                                    "model's folder (through a symlink)")
        return path


def _byte_count(text: str, key: str) -> int:
    """An offset or length: a decimal count of bytes (at most 2^62)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > 1 << 62:
        raise ExternalDataError(f"its external data's {key} {text!r} is not a byte count")
    return int(text)
