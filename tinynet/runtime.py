"""The runtime policy: how a run uses the machine's cores and memory, applied by one explicit call.

    import tinynet
    tinynet.runtime.configure()   # once, before the work starts; a second call does nothing

``import tinynet`` changes nothing in the process it is imported into: no environment variable,
no thread pool, no allocator setting. A library user (someone who imports tinynet beside PyTorch
to compare with it, say) gets NumPy's, OpenBLAS's and numba's defaults, and tinynet computes the
same numbers either way. ``tinynet train``, ``evaluate`` and the other commands, the ``Trainer``
and the benchmarks call ``configure()``, which applies, for the rest of the process:

- Threads (``tinynet/_threads.py``): idle OpenBLAS and OpenMP threads sleep at once instead of
  spinning for ~0.1 s after each GEMM (a numba kernel right after a GEMM otherwise waits for a
  core a spinning BLAS thread holds); every pool is sized to the cores this process is given
  (``TINYNET_NUM_THREADS``, the affinity mask, the cgroup's quota, the MPI ranks on the
  machine); runs of the same user on one machine share its cores while they train
  (``_threads.share_cores``); and a run's data workers (``tinynet.data.streaming``) take their
  cores out of its share, one thread each (``_threads.reserve_for_workers``).
- Memory (``tinynet/_malloc.py``): glibc keeps freed blocks for the next step's arrays instead of
  unmapping them, so a training step does not fault every page of its arrays in again.

What each costs and saves, measured both ways, is in benchmarks/RESULTS.md. Settings the user
made in the environment (``OPENBLAS_THREAD_TIMEOUT``, ``OMP_WAIT_POLICY``, the pool sizes,
malloc's variables, ``TINYNET_NUM_THREADS``, ``TINYNET_KEEP_FREED_MEMORY=0``) are kept.
"""

from __future__ import annotations

from tinynet import _malloc, _threads

_configured = False


def configure() -> None:
    """Apply the runtime policy above to this process; calling it again does nothing."""
    global _configured
    if _configured:
        return
    _configured = True
    _threads.configure()
    _malloc.keep_freed_memory()


def is_configured() -> bool:
    """True once ``configure()`` has run in this process."""
    return _configured
