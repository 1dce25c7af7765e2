"""Reading ``.safetensors`` files (the format timm and the Hugging Face hub publish weights in),
with the ``safetensors`` package's NumPy API (the optional ``safetensors`` extra).

A safetensors file is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the bytes: no pickle, nothing to execute. The package checks
the header against the file (every byte range inside it, the ranges covering the data exactly)
before it reads a tensor, so a file can make it allocate no more than the file holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinynet.torch_pth import CheckpointError

EXTRA = "pip install 'tinynet[safetensors]'"


def read_safetensors(path) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file as NumPy arrays, by name (contiguous copies with
    the stored shape and dtype).

    Raises FileNotFoundError for a missing file, ImportError naming the extra when the
    ``safetensors`` package is not installed, and CheckpointError (a ValueError) naming the file
    and the problem for anything but a regular file, a malformed file, one with no tensors, or
    dtypes NumPy has no type for (bfloat16, float8); a MemoryError names the file too.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"read_safetensors: no such file: {path}")
    if not path.is_file():  # a folder, a FIFO, a device
        raise CheckpointError(f"{path} is not a .safetensors file: it is not a regular file")
    try:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
    except ImportError as error:
        raise ImportError(
            f"reading {path} needs the safetensors package, which is not installed: {EXTRA}"
        ) from error
    try:
        tensors = load_file(path)
    except SafetensorError as error:
        raise CheckpointError(f"{path} is not a valid .safetensors file: {error}") from None
    except TypeError as error:  # NumPy has no bfloat16 or float8: "data type ... not understood"
        raise _foreign_dtype_error(path, error) from None
    except OSError as error:
        raise CheckpointError(f"{path} is truncated or unreadable ({error})") from error
    except MemoryError as error:
        raise MemoryError(f"{path}: not enough memory for its tensors") from error
    if not tensors:
        raise CheckpointError(f"{path}: the file holds no tensors")
    foreign = sorted({str(v.dtype) for v in tensors.values() if v.dtype.isbuiltin != 1})
    if foreign:  # bfloat16 and float8 read once ml_dtypes is imported (by onnx, say)
        raise _foreign_dtype_error(path, ", ".join(foreign))
    return {key: np.array(value, order="C") for key, value in tensors.items()}


def _foreign_dtype_error(path, detail) -> CheckpointError:
    return CheckpointError(
        f"{path} holds tensors of a dtype NumPy cannot hold ({detail}); save them as float32 "
        f"or float16 in PyTorch first"
    )
