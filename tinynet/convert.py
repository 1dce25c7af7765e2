"""``tinynet convert``: a PyTorch ``.pth`` state dict or a ``.safetensors`` file (timm's
weights) to tinynet's ``.npz``, without torch.

``tinynet.torch_pth`` reads ``.pth`` checkpoints (both of torch.save's formats, and every check
a hostile file meets), ``tinynet.safetensors_file`` reads ``.safetensors`` files (with the
optional ``safetensors`` package); this module writes what it read with ``tinynet.io.save``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tinynet import io
from tinynet.safetensors_file import read_safetensors
from tinynet.torch_pth import CheckpointError, read_torch_checkpoint

__all__ = [
    "CheckpointError",
    "convert_torch_checkpoint",
    "read_safetensors",
    "read_torch_checkpoint",
]


def convert_torch_checkpoint(src, dst, log: Callable[[str], None] | None = None) -> dict:
    """Read the PyTorch checkpoint ``src`` (a ``.safetensors`` file if its name ends so, in any
    case, else a ``.pth``) and write its state dict to ``dst`` with ``tinynet.io.save`` (load it
    back with ``tinynet.io.load``); returns the state dict.

    Nothing is written when reading fails, and ``dst`` appears whole or not at all.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"convert_torch_checkpoint: {dst} is the source file; choose another path")
    if src.suffix.lower() == ".safetensors":
        state = read_safetensors(src)
    else:
        state = read_torch_checkpoint(src, log)
    complex_keys = [key for key, value in state.items() if value.dtype.kind == "c"]
    if complex_keys:
        raise CheckpointError(
            f"{src}: tinynet's format holds real and boolean arrays only; these tensors are "
            f"complex: {', '.join(complex_keys)}"
        )
    io.save(state, dst)
    return state
