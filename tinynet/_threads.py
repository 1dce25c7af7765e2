"""Who uses the cores: one policy for OpenBLAS (NumPy's GEMM), libgomp and numba's kernels,
whatever the import order, applied by :func:`configure` (which ``tinynet.runtime.configure()``
calls; importing this module changes nothing).

1. Idle threads sleep at once. After each GEMM, OpenBLAS's worker threads spin for about 2^28
   cycles (~0.1 s) waiting for more work, and libgomp's workers spin between parallel regions.
   A numba kernel that runs right after a GEMM then waits for a core that a spinning BLAS thread
   holds: measured on a 2-core machine, a 7 µs im2col took 8.7 ms after a GEMM. So tinynet sets
   OPENBLAS_THREAD_TIMEOUT=1 (2^4 cycles, OpenBLAS's minimum) and OMP_WAIT_POLICY=PASSIVE.
   OpenBLAS reads its timeout when its thread pool starts, which NumPy's import did, so tinynet
   has each loaded OpenBLAS re-read its environment and stops the pool (``openblas_read_env``
   and ``blas_thread_shutdown_``, the two calls OpenBLAS's own fork handler makes); the next
   GEMM starts it again with the short timeout. threadpoolctl finds the loaded libraries.
2. The pools are sized to the cores this process is given: ``TINYNET_NUM_THREADS`` if set, else
   the CPUs of its affinity mask (``taskset``), capped by its cgroup's CPU quota (a container's
   ``--cpus``); under an MPI launcher (``mpiexec -n N``), that divided among the ranks on this
   machine.
3. Runs share the machine. Oversubscribed, OpenBLAS's threads wait on each other inside every
   GEMM: two 2-thread trainings on 2 cores got 83 images/s together against 206 for one alone.
   While a run trains or evaluates (:func:`share_cores`), it is listed in a folder of the user's
   (one file per process) and, as runs start and end, takes an equal share of the cores:
   ``cores // runs``, at least 1. ``TINYNET_NUM_THREADS`` opts out.
4. A run's data workers (``tinynet.data.streaming``) come out of its share: while they run
   (:func:`reserve_for_workers`), the training step's pools are that many threads smaller (at
   least 1), and each worker's own BLAS pool is one thread (:func:`configure_worker`). A run
   starts ``default_workers()`` of them unless told.

Settings the user made in the environment are always kept.
"""

import math
import os
import stat
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from tinynet.io import process_running

ENVIRONMENT_VARIABLE = "TINYNET_NUM_THREADS"
# What MPI launchers tell each process they start: the ranks in all, and on this machine
# (MPICH's and Intel MPI's Hydra; Open MPI's mpirun).
_WORLD_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_LOCAL_SIZE = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
THREAD_POOLS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
REBALANCE_SECONDS = 1.0  # how often a sharing run counts the others


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


def requested_threads() -> int | None:
    """``TINYNET_NUM_THREADS`` as a positive int; None if unset; a ValueError if malformed."""
    value = os.environ.get(ENVIRONMENT_VARIABLE)
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"{ENVIRONMENT_VARIABLE} must be a positive integer; got {value!r}")
    return int(value)


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPUs this process's cgroup may use: quota / period of cgroup v2's ``cpu.max`` or v1's
    ``cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us``; None without a quota or a cgroup file."""
    files = (("cpu.max",), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us"))
    for names in files:
        try:
            quota, period = " ".join(Path(root, name).read_text() for name in names).split()
            return None if quota in ("max", "-1") else int(quota) / int(period)
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return None


def machine_cores() -> int:
    """The cores this process may run on: its affinity mask, capped by its cgroup's quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores or 1, math.ceil(limit))
    return max(1, cores or 1)


def threads_per_rank() -> int:
    """This process's threads (rule 2): ``TINYNET_NUM_THREADS``, else its cores // the MPI
    ranks on this machine, at least 1."""
    return requested_threads() or max(1, machine_cores() // launched_ranks()[1])


OWN_THREADS: int | None = None  # this process's threads, read by configure()
RESERVED = 0  # the cores this process's data workers hold (rule 4)


def default_workers() -> int:
    """The data workers a run starts unless told (rule 4): a quarter of its threads, so the
    training step keeps most of the cores; none below 4, where the main process decodes
    between steps rather than take a core from the arithmetic."""
    return threads_per_rank() // 4


@contextmanager
def reserve_for_workers(workers: int):
    """Within the block, ``workers`` data-worker processes hold that many of this process's
    cores: its pools shrink by as many (at least 1 thread left), then grow back."""
    global RESERVED
    previous, RESERVED = RESERVED, workers
    if _pools is not None:
        _pools.resize(_pools.requested or OWN_THREADS)
    try:
        yield
    finally:
        RESERVED = previous
        if _pools is not None:
            _pools.resize(_pools.requested or OWN_THREADS)


def configure_worker() -> None:
    """Rule 4 in a data worker (a forked child): its BLAS and OpenMP pools at one thread, now
    and for any library it loads later. Its parent's run keeps the cores it counted."""
    for pool in THREAD_POOLS:
        os.environ[pool] = "1"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without it, the pools NumPy loaded keep their size; a worker does no GEMM
        return
    threadpool_limits(limits=1)


class _Pools:
    """The thread pools of this process: numba's and every loaded BLAS (through threadpoolctl)."""

    def __init__(self):
        from threadpoolctl import ThreadpoolController

        self.controller = ThreadpoolController()
        self.threads = None
        self.requested = None  # the size asked for, before the data workers' cores come off it

    def restart_spinning_openblas(self) -> bool:
        """Rule 1 for OpenBLAS loaded before tinynet: False if one could not be restarted."""
        import ctypes

        restarted = True
        for library in self.controller.select(internal_api="openblas").lib_controllers:
            if getattr(library, "threading_layer", None) != "pthreads":
                continue  # OpenMP builds: their threads are libgomp's
            handle = ctypes.CDLL(library.filepath)
            if not hasattr(handle, "openblas_read_env") or not hasattr(
                handle, "blas_thread_shutdown_"
            ):
                restarted = False
                continue
            handle.openblas_read_env()
            handle.blas_thread_shutdown_()  # the next GEMM starts the pool with the new timeout
        return restarted

    def resize(self, threads: int) -> None:
        """numba's kernels and every BLAS use ``threads`` threads from now on, less the cores
        this process's data workers hold (rule 4), at least 1."""
        import numba

        self.requested = threads
        threads = max(1, threads - RESERVED)
        if threads == self.threads:
            return
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        self.controller.limit(limits=threads, user_api="blas")
        self.threads = threads


_pools: _Pools | None = None


def configure() -> None:
    """Apply rules 1 and 2 to this process (its environment, for libraries loaded later, and the
    pools loaded by now: NumPy's BLAS, numba's). Settings the user made are kept: a
    ``OPENBLAS_THREAD_TIMEOUT`` of the user's is left to OpenBLAS, and pool sizes set in the
    environment stay."""
    global _pools, OWN_THREADS
    OWN_THREADS = threads_per_rank()  # read once: the environment, affinity and cgroup
    blas_spins = "OPENBLAS_THREAD_TIMEOUT" not in os.environ
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # libgomp reads it when it first starts
    if OWN_THREADS < (os.cpu_count() or 1):
        for pool in THREAD_POOLS:  # libraries loaded from now on start at this size
            if pool == "NUMBA_NUM_THREADS" and "numba" in sys.modules:
                # numba read it at import and sizes its pool by set_num_threads (resize); a new
                # value in the environment would make its next compilation refuse to run.
                continue
            os.environ.setdefault(pool, str(OWN_THREADS))
    _pools = _Pools()
    if blas_spins and not _pools.restart_spinning_openblas():
        _pools.resize(1)
        warnings.warn(
            "tinynet could not tell NumPy's OpenBLAS to stop spinning after each GEMM; tinynet's "
            "kernels run on one thread so as not to wait for it. Set OPENBLAS_THREAD_TIMEOUT=1 "
            "before starting Python to use every core.",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    if OWN_THREADS < (os.cpu_count() or 1):
        _pools.resize(OWN_THREADS)


def _runs_folder():
    """The folder listing this user's runs: ``running`` in tinynet's kernel cache root, made if
    missing; None if the root or the folder may not be used (the checks, and the one warning, of
    ``tinynet/kernels/cache.py``: another user who could write there could fake or hide runs)."""
    from tinynet.kernels import cache

    root = cache.private_root()
    if root is None:
        return None
    folder = root / "running"
    return folder if cache.private(folder, "to list its runs") else None


def _listed_pid(entry) -> int | None:
    """The process ``entry`` lists if it is a run's entry: a regular file of this user's named by
    a process id (ASCII digits, no leading zero); None for anything else, which is left alone."""
    name = entry.name
    if not (name.isascii() and name.isdigit()) or name != str(int(name)):
        return None
    try:
        status = entry.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode) or status.st_uid != os.geteuid():
        return None
    return int(name) if 0 < int(name) < 2**31 else None


def count_runs(folder) -> int:
    """The processes listed in ``folder`` that are still running; the entries of ended ones (a
    run that was killed) are removed. Anything else in the folder is skipped and left as it is;
    a folder deleted meanwhile lists none."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    alive = 0
    for entry in entries:
        pid = _listed_pid(entry)
        if pid is None:
            continue
        if process_running(pid):
            alive += 1
        else:
            entry.unlink(missing_ok=True)
    return alive


class CoreShare:
    """This process's place among the user's runs on this machine (rule 3)."""

    def __init__(self, folder):
        self.folder = folder
        self.entry = folder / str(os.getpid())
        self.checked = -math.inf

    def enlist(self) -> bool:
        """Add this process to the runs; False if its entry's name is taken by something that is
        not its own (a killed run's entry of the same pid is)."""
        try:
            os.close(os.open(self.entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return _listed_pid(self.entry) == os.getpid()
        except OSError:
            return False
        return True

    def rebalance(self) -> int:
        """Resize the pools to this run's share (counting the others at most once a second);
        returns the threads it now uses."""
        now = time.monotonic()
        if now - self.checked >= REBALANCE_SECONDS:
            self.checked = now
            runs = max(count_runs(self.folder), launched_ranks()[1], 1)
            _pools.resize(max(1, machine_cores() // runs))
        return _pools.threads


@contextmanager
def share_cores():
    """Within the block, this process is one of the user's runs sharing the machine's cores
    (rule 3): yields a :class:`CoreShare` whose ``rebalance()`` the run calls as it goes (each
    step); on leaving, the pools return to this process's own size. Does nothing (yields None)
    when ``TINYNET_NUM_THREADS`` is set, on systems without POSIX process ids, or when no
    private folder can be written."""
    folder = _runs_folder() if requested_threads() is None and hasattr(os, "getuid") else None
    share = None if folder is None or _pools is None else CoreShare(folder)
    if share is None or not share.enlist():
        yield None
        return
    try:
        share.rebalance()
        yield share
    finally:
        share.entry.unlink(missing_ok=True)
        _pools.resize(OWN_THREADS)
