"""Data-worker processes that fill shared-memory batches: the streaming loader's machinery.

    pool = WorkerPool(dataset, workers=2, slots=4, batch_shape=(64, 3, 224, 224))
    pool.submit(slot, task)          # a worker fills slot's shared memory
    slot, kept, bad = pool.next_done()
    pool.close()                     # every worker ended, every segment unlinked

Each slot is one ``multiprocessing.shared_memory`` segment holding one uint8 batch, named
``tinynet-<pid>-<n>`` (so a leak would be traceable in /dev/shm); the slots bound the prefetch:
at most ``slots`` batches are in flight or waiting. Workers are forked (they inherit the dataset
and the mapped segments, nothing is pickled but the small task tuples); each ignores Ctrl-C
(its parent ends it), runs its BLAS on one thread (``_threads.configure_worker``) and is told by
the kernel to end if its parent dies (Linux's PR_SET_PDEATHSIG), so a killed run leaves no
orphan. A worker's exception comes back as its traceback's last line and stops the run; a
worker that dies (a segfault, the OOM killer) is noticed within ``POLL_SECONDS``, never waited
on forever.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import queue
import signal
import sys
import traceback
from multiprocessing import shared_memory

import numpy as np

from tinynet.data.formats import DatasetError

POLL_SECONDS = 0.2  # how often a wait checks that the workers are alive
_segments = itertools.count()


class WorkerError(RuntimeError):
    """A data worker failed (its error) or died (its exit status)."""


class WorkerPool:
    """``workers`` processes filling ``slots`` shared-memory batches of ``batch_shape`` (uint8)
    by ``fill(dataset, out, task) -> (kept positions, bad-image messages)``."""

    def __init__(self, dataset, fill, workers: int, slots: int, batch_shape):
        self.batch_shape = tuple(batch_shape)
        self.segments, self.processes = [], []
        context = multiprocessing.get_context("fork")
        try:
            size = int(np.prod(self.batch_shape))
            for _ in range(slots):
                name = f"tinynet-{os.getpid()}-{next(_segments)}"
                self.segments.append(shared_memory.SharedMemory(name, create=True, size=size))
            self.tasks = [context.SimpleQueue() for _ in range(workers)]
            self.done = context.Queue()
            for rank in range(workers):
                process = context.Process(
                    target=_work,
                    args=(rank, dataset, fill, self, self.tasks[rank], self.done),
                    name=f"tinynet-data-{rank}",
                    daemon=True,
                )
                process.start()
                self.processes.append(process)
        except BaseException:
            self.close()
            raise

    def batch(self, slot: int, count: int) -> np.ndarray:
        """The first ``count`` images of ``slot``'s batch (a view of the shared memory)."""
        return np.ndarray(self.batch_shape, np.uint8, self.segments[slot].buf)[:count]

    def submit(self, worker: int, slot: int, task) -> None:
        """Worker ``worker`` fills ``slot`` for ``task`` (a tuple ``fill`` understands)."""
        self.tasks[worker].put((slot, task))

    def next_done(self):
        """(slot, kept, bad) of the next batch a worker finished; a ``WorkerError`` if a worker
        failed or died, a ``DatasetError`` for an image it could not read."""
        while True:
            if not self.processes:
                raise WorkerError("the data workers were ended (close()) before the batch came")
            try:
                slot, status, payload = self.done.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self._check_alive()
                continue
            if status == "ok":
                return (slot, *payload)
            if status == "dataset":
                raise DatasetError(payload)
            raise WorkerError(payload)

    def _check_alive(self) -> None:
        for rank, process in enumerate(self.processes):
            if not process.is_alive():
                code = process.exitcode
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                raise WorkerError(f"data worker {rank} died ({how}) while making a batch")

    def close(self) -> None:
        """End every worker (asked, then terminated, then killed) and unlink every segment."""
        for rank, process in enumerate(self.processes):
            if process.is_alive():
                try:
                    self.tasks[rank].put(None)
                except (OSError, ValueError):
                    pass
        for process in self.processes:
            process.join(timeout=1.0)
            if process.is_alive():
                process.terminate()
                process.join(timeout=1.0)
            if process.is_alive():
                process.kill()
                process.join()
        self.processes = []
        for segment in self.segments:
            segment.close()
            try:
                segment.unlink()
            except FileNotFoundError:
                pass
        self.segments = []

    def __del__(self):
        if getattr(self, "processes", None) or getattr(self, "segments", None):
            self.close()


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent ends (a killed run leaves no worker)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _work(rank, dataset, fill, pool, tasks, done) -> None:
    """A worker's loop: fill the slot each task names until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which ends us
    _die_with_parent()
    from tinynet import _threads

    _threads.configure_worker()
    parent = os.getppid()
    while True:
        item = tasks.get()
        if item is None or os.getppid() != parent:
            return
        slot, task = item
        try:
            kept, bad = fill(dataset, pool.batch(slot, pool.batch_shape[0]), task)
            done.put((slot, "ok", (kept, bad)))
        except DatasetError as error:
            done.put((slot, "dataset", str(error)))
        except BaseException as error:  # noqa: BLE001 - the parent reports it and stops
            where = traceback.extract_tb(error.__traceback__)[-1]
            done.put((slot, "error", f"data worker {rank} failed: {type(error).__name__}: "
                      f"{error} ({os.path.basename(where.filename)}:{where.lineno})"))  # fmt: skip
