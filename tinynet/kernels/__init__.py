"""numba kernels: the hot loops of the ops, with no autograd in them.

Every kernel is ``@njit(cache=True)`` so it compiles once per machine, not once per process; the
compiled code is cached in a folder only its user can write, never in the package
(``tinynet/kernels/cache.py``).
The loops over independent rows or planes are ``prange`` loops in ``@parallel`` kernels.
Where an op has several kernels (or a NumPy fallback), one plain-Python function next to them
picks by shape, dtype and memory layout, so the op calls a single name.
"""

import functools
import types

import numpy as np
from numba import njit

from tinynet.kernels import cache

cache.install()  # before any kernel module is imported: numba makes each cache at decoration

# The dtypes the kernels are compiled and tested for.
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# A parallel kernel whose largest array has fewer elements than this (divided by the kernel's
# cost) runs on the calling thread.
SERIAL_BELOW = 2**18


def parallel(function=None, *, cost: int = 1, **options):
    """``@njit(cache=True, parallel=True, **options)``, but small work runs on the calling thread.

    Each parallel region first wakes the worker threads, which sleep as soon as they are idle
    (``tinynet/runtime.py``): about 0.1 ms on a 2-core VM, while a ReLU over 200,000 floats
    takes 0.04 ms on one core. Eval at batch 1 spent a fifth of its time there. So the function
    is compiled twice, with threads and without (``prange`` is then ``range``), and each call
    picks by the number of elements of its largest array times ``cost``, the kernel's time per
    element in ReLUs (``SERIAL_BELOW``). Every ``prange`` iteration writes its own rows, so the
    two give the same bits.

    Both follow NumPy's error model (a float division by zero gives inf or NaN, not
    ZeroDivisionError): numba compiles a ``prange`` body so, and the serial copy, compiled with
    Python's (its default), both raised where the threaded one did not and checked every
    division, which kept its loops from vectorising: the LRN forward on 64 x 3,136 pixels took
    0.97 ms on one thread against 0.22 ms for the threaded copy run on one thread.
    """
    if function is None:
        return lambda function: parallel(function, cost=cost, **options)
    threaded = njit(cache=True, parallel=True, **options)(function)
    # A copy under its own name: numba keys its cache files by the function's qualified name
    # (and not by the compile options: the name changed with the error model, so no entry
    # compiled with Python's is loaded).
    twin = types.FunctionType(
        function.__code__, function.__globals__, function.__name__, function.__defaults__
    )
    twin.__qualname__ = f"{function.__qualname__}_serial_numpy_errors"
    serial = njit(cache=True, **{"error_model": "numpy", **options})(twin)

    @functools.wraps(function)
    def kernel(*args):
        largest = max((a.size for a in args if isinstance(a, np.ndarray)), default=0)
        return (kernel.serial if largest * kernel.cost < SERIAL_BELOW else kernel.threaded)(*args)

    kernel.threaded, kernel.serial, kernel.cost = threaded, serial, cost
    return kernel
