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

Under an MPI launcher (``mpiexec -n N``) each rank sizes its BLAS, OpenMP and numba pools to its
share of the machine, cores // ranks on this machine (at least 1), so N ranks on one machine do
not oversubscribe it; the launcher's environment says how many ranks run here.
"""

import os
import sys
import warnings

_BLAS_ALREADY_LOADED = "numpy" in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")  # 2^4 cycles, OpenBLAS's minimum
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # libgomp: sleep between parallel regions

# What MPI launchers tell each process they start: the ranks in all, and on this machine
# (MPICH's and Intel MPI's Hydra; Open MPI's mpirun).
_WORLD_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_LOCAL_SIZE = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
THREAD_POOLS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def launched_ranks() -> tuple[int, int]:
    """(ranks in all, ranks on this machine) as an MPI launcher set them; (1, 1) without one."""

    def first(names) -> int:
        for name in names:
            value = os.environ.get(name, "")
            if value.isdigit() and int(value) > 0:
                return int(value)
        return 0

    ranks = first(_WORLD_SIZE) or 1
    return ranks, first(_LOCAL_SIZE) or ranks


def threads_per_rank() -> int:
    """This rank's share of the machine's cores: cores // ranks on this machine, at least 1."""
    return max(1, (os.cpu_count() or 1) // launched_ranks()[1])


if launched_ranks()[0] > 1:
    for _pool in THREAD_POOLS:
        os.environ.setdefault(_pool, str(threads_per_rank()))


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
