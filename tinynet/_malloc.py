"""Freed arrays stay in the process for the next step's arrays to reuse (glibc's malloc).

Every training step and every forward allocates and frees the same large arrays: activations,
gradients, im2col chunks. By default glibc serves a block above its mmap threshold (128 KiB,
raised as blocks are freed up to 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, and
gives the top of its heap back to the OS above 128 KiB of free space. So the next step's arrays
fault every page in again, and the kernel zeroes each one first: ~400,000 page faults in five
training steps of GoogLeNet at batch 32, and about a tenth of the time of each step and of an
evaluation forward (benchmarks/RESULTS.md, issue 15).

``keep_freed_memory()`` raises both thresholds with ``mallopt``, so blocks up to 2 GiB come from
the heap and freed ones are kept for the next allocation. The peak memory stays the same (the
next step reuses the blocks instead of mapping new ones); the process keeps its peak until it
exits, as PyTorch's caching allocators do. It changes nothing where the C library is not glibc
(macOS, Windows, musl), if the user set malloc's environment (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``), or with ``TINYNET_KEEP_FREED_MEMORY=0``.
"""

import ctypes
import os
import platform
import sys

ENVIRONMENT_VARIABLE = "TINYNET_KEEP_FREED_MEMORY"
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_LARGEST = 2**31 - 1  # mallopt takes an int


def is_glibc() -> bool:
    """True where the C library is glibc (Linux), whose malloc these thresholds belong to."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds unless the module docstring's cases say not to;
    True if they were raised."""
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "1").strip()
    if setting not in ("0", "1"):
        raise ValueError(f"{ENVIRONMENT_VARIABLE} must be 0 or 1; got {setting!r}")
    if setting == "0" or any(name in os.environ for name in _USER_SETTINGS) or not is_glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _LARGEST) and mallopt(_M_TRIM_THRESHOLD, _LARGEST))
