"""Reading pickles without running arbitrary code.

A pickle names the functions that rebuild its objects, and ``pickle.load`` imports and calls
whatever it names, so a malicious file runs code. PyTorch checkpoints and the CIFAR-10 batches
are pickles; tinynet reads them with ``RestrictedUnpickler``, which only resolves the names in an
explicit allow-list and refuses anything else with an error that names it.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

# What a pickled ndarray refers to (module paths of NumPy 1.x and 2.x).
NUMPY_ARRAY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the (module, name) pairs of ``allowed``."""

    def __init__(self, file, allowed: Mapping[tuple[str, str], Any], **kwargs):
        super().__init__(file, **kwargs)
        self.allowed = allowed

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: this file may only contain "
                + ", ".join(sorted(f"{m}.{n}" for m, n in self.allowed))
            ) from None
