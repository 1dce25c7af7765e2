"""Keep OpenBLAS (NumPy's GEMM) and numba's OpenMP threads from fighting over the cores.

After each GEMM, OpenBLAS's worker threads spin for about 2^28 cycles (~0.1 s) waiting for
more work, and libgomp's workers spin between parallel regions too. A numba kernel that runs
right after a GEMM then waits for a core that a spinning BLAS thread holds: measured on a
2-core machine, a 7 µs im2col took 8.7 ms after a GEMM. Telling both runtimes to sleep instead
of spin removes it. OpenBLAS reads its setting when NumPy loads, so this module must run
before NumPy is imported; ``tinynet/__init__.py`` imports it first.

If NumPy was imported before tinynet and OPENBLAS_THREAD_TIMEOUT was not set, OpenBLAS already
spins; then numba's kernels are switched to one thread (they no longer wait for a second core)
and a warning says how to get both cores back. Settings the user made in the environment are
always kept.
"""

import os
import sys
import warnings

_BLAS_ALREADY_LOADED = "numpy" in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")  # 2^4 cycles, OpenBLAS's minimum
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # libgomp: sleep between parallel regions


def configure_numba() -> None:
    """Called once numba is importable: fall back to serial kernels if BLAS already spins."""
    if not _BLAS_ALREADY_LOADED:
        return
    import numba

    numba.set_num_threads(1)
    warnings.warn(
        "tinynet was imported after NumPy, so OpenBLAS's threads spin after every GEMM and "
        "would stall tinynet's parallel kernels; they run on one thread instead. Import "
        "tinynet before NumPy, or set OPENBLAS_THREAD_TIMEOUT=1 in the environment, to use "
        "every core.",
        RuntimeWarning,
        stacklevel=3,
    )
