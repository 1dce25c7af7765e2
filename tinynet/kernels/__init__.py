"""numba kernels: the hot loops of the ops, with no autograd in them.

Every kernel is ``@njit(cache=True)`` so it compiles once per machine, not once per process; the
compiled code is cached in a per-user folder, not in the package (``tinynet/kernels/cache.py``).
Where an op has several kernels (or a NumPy fallback), one plain-Python function next to them
picks by shape, dtype and memory layout, so the op calls a single name.
"""

import numpy as np

from tinynet.kernels import cache

cache.install()  # before any kernel module is imported: numba picks the locator at decoration

# The dtypes the kernels are compiled and tested for.
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
