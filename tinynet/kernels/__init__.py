"""numba kernels: the hot loops of the ops, with no autograd in them.

Every kernel is ``@njit(cache=True)`` so it compiles once per machine, not once per process; the
compiled code is cached in a per-user folder, not in the package (``tinynet/kernels/cache.py``).
"""

from tinynet.kernels import cache

cache.install()  # before any kernel module is imported: numba picks the locator at decoration
