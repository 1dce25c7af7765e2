"""Synchronous data-parallel training over MPI: ``mpiexec -n N tinynet train ...``.

Every rank holds the whole model and draws the same global batch of B samples from the same
seeded loader (so the batches do not depend on N); rank r keeps its contiguous shard of B_r
samples. The batch's mean loss splits over the shards,

    L = (1/B) Σ_i ℓ_i = Σ_r (B_r/B) L_r,        L_r = (1/B_r) Σ_{i in shard r} ℓ_i,

so each rank backpropagates (B_r/B) L_r and the SUM of the ranks' gradients is ∇L: one
Allreduce over one flat buffer (all the gradients, in buckets of at most ``BUCKET_BYTES``),
then every rank takes the same optimiser step. The batch's loss and accuracy sums travel in the
same buffer.

What makes N ranks compute what one process computes:
- the loader's augmentations are drawn for the global batch before it is sharded;
- each Dropout layer draws its mask for the global batch and keeps its shard's rows
  (``ShardedDraws``), so the random stream stays the same on every rank and for every N;
- BatchNorm, with ``sync_batchnorm``, normalises with the global batch's statistics: the sums
  Σx and Σx² (forward) and Σg, Σg·x̂ (backward) of each channel are allreduced
  (``tinynet.ops.norm.BatchNormFunction``). Without it (the default, as PyTorch's DDP) each rank
  normalises with its own shard's statistics, and the running statistics are averaged over the
  ranks with the gradients.

Without mpiexec, ``world()`` is ``ProcessGroup()``, one process alone, every collective the
identity, and mpi4py is never imported.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from tinynet import nn
from tinynet._threads import launched_ranks
from tinynet.rng import default_generator

BUCKET_BYTES = 25 * 2**20  # one Allreduce call per 25 MiB of the flat buffer (PyTorch DDP's)


class ProcessGroup:
    """The ranks that train together. This class is one process alone (rank 0 of 1), what runs
    without mpiexec: every collective returns its input as it is."""

    rank, size = 0, 1

    def allreduce(self, array: np.ndarray) -> np.ndarray:
        """Sum the contiguous ``array`` over the ranks, in place; returns it."""
        return array

    def shard(self, count: int) -> slice:
        """This rank's contiguous part of ``count`` items (the parts' sizes differ by <= 1)."""
        return slice(count * self.rank // self.size, count * (self.rank + 1) // self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class MPIGroup(ProcessGroup):
    """The ranks of an MPI communicator (``mpi4py``'s ``COMM_WORLD`` under mpiexec)."""

    def __init__(self, comm, bucket_bytes: int = BUCKET_BYTES):
        from mpi4py import MPI

        self.comm, self._sum, self._in_place = comm, MPI.SUM, MPI.IN_PLACE
        self.rank, self.size, self.bucket_bytes = comm.Get_rank(), comm.Get_size(), bucket_bytes

    def allreduce(self, array: np.ndarray) -> np.ndarray:
        if not array.flags.c_contiguous:  # reshape would copy, and the sum would be lost
            raise ValueError(f"allreduce: array must be C-contiguous; got strides {array.strides}")
        flat = array.reshape(-1)
        step = max(1, self.bucket_bytes // flat.itemsize)
        for start in range(0, flat.size, step):
            self.comm.Allreduce(self._in_place, flat[start : start + step], op=self._sum)
        return array


_world: ProcessGroup | None = None


def world() -> ProcessGroup:
    """The ranks this process was launched with: all of them under ``mpiexec -n N`` (N > 1),
    else one process alone. mpi4py is imported only in the first case."""
    global _world
    if _world is None:
        ranks, _ = launched_ranks()
        _world = ProcessGroup() if ranks <= 1 else _mpi_world(ranks)
    return _world


def _mpi_world(ranks: int) -> MPIGroup:
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            f"tinynet was launched by mpiexec with {ranks} ranks but mpi4py cannot be imported "
            f"({error}); install the extra: pip install 'tinynet[mpi]'"
        ) from error
    group = MPIGroup(MPI.COMM_WORLD)
    previous = sys.excepthook

    def stop_all(kind, error, traceback):  # as `python -m mpi4py`: an uncaught error ends all
        if not issubclass(kind, Exception):  # KeyboardInterrupt, SystemExit: Python's report
            previous(kind, error, traceback)
        print(rank_named(f"{kind.__name__}: {error}"), file=sys.stderr)
        leave_if_parallel(1)

    sys.excepthook = stop_all
    return group


def rank_named(message: str) -> str:
    """``message`` naming the rank it happened on; as it is for one process alone."""
    group = _world or ProcessGroup()
    return message if group.size == 1 else f"rank {group.rank} of {group.size}: {message}"


def leave_if_parallel(code: int) -> None:
    """If this process is one of several ranks, end it at once with exit ``code``, without
    MPI_Finalize: the launcher (MPICH's Hydra, Open MPI's mpirun) then ends every other rank,
    wherever it waits. A normal exit would wait in MPI_Finalize for ranks that wait for this one
    in a collective. One process alone: returns."""
    if _world is not None and _world.size > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _Discard:
    """A text stream that drops what is written: the progress output of ranks other than 0."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def output_stream(group: ProcessGroup):
    """Where progress goes on this rank: stderr (None, the default) on rank 0, nowhere else."""
    return None if group.rank == 0 else _Discard()


class DatasetShard:
    """The samples ``rows`` (a slice) of ``dataset``, numbered from 0: one rank's part of a
    sharded evaluation."""

    def __init__(self, dataset, rows: slice):
        self.dataset, self.indices = dataset, np.arange(len(dataset))[rows]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]


def sync_batchnorm(model: nn.Module, group: ProcessGroup) -> int:
    """Make every BatchNorm2d of ``model`` normalise with the statistics of the whole batch
    across ``group``'s ranks (PyTorch's SyncBatchNorm); returns how many there are."""
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for layer in layers:
        layer.process_group = group if group.size > 1 else None
    return len(layers)


class ShardedDraws:
    """A generator for Dropout that draws for the whole batch and returns this rank's rows, so
    the masks, and the stream after them, are those of one process with the global batch.
    ``generator`` None: tinynet's default generator, looked up at each draw as Dropout does."""

    def __init__(self, rows: slice, batch_size: int, generator=None):
        self.rows, self.batch_size, self.generator = rows, batch_size, generator

    def random(self, shape, dtype=np.float64):
        generator = self.generator or default_generator()
        return generator.random((self.batch_size, *shape[1:]), dtype=dtype)[self.rows]


class DataParallel:
    """One training step's exchanges for ``model`` across ``group``:

        images, labels = parallel.shard(images, labels)  # this rank's rows of the batch
        loss = ...                                       # the mean over this rank's rows
        parallel.backward(loss)                          # the gradient of (B_r/B) L_r
        loss_sum, hits = parallel.allreduce_gradients(loss.item() * B_r, hits)

    For one process alone each call is what a single process does: the arrays and numbers as
    they are, the loss's own backward.
    average_buffers: average the float buffers (BatchNorm's running statistics) over the ranks
    with the gradients, for per-rank BatchNorm; with synchronised BatchNorm they agree already.
    """

    def __init__(self, group: ProcessGroup, model: nn.Module, average_buffers: bool = True):
        self.group = group
        self.parameters = list(model.parameters())
        floats = [buffer for _, buffer in model.named_buffers() if buffer.dtype.kind == "f"]
        self.buffers = floats if average_buffers else []
        self.dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        self.generators = [layer.generator for layer in self.dropouts]  # their own, or None
        self.batch_size, self.rows = 0, slice(None)

    def shard(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """This rank's rows of the global batch's ``arrays``; Dropout draws for the batch."""
        if self.group.size == 1:
            return arrays
        self.batch_size = len(arrays[0])
        self.rows = self.group.shard(self.batch_size)
        for layer, generator in zip(self.dropouts, self.generators):
            layer.generator = ShardedDraws(self.rows, self.batch_size, generator)
        return tuple(array[self.rows] for array in arrays)

    def backward(self, loss) -> None:
        """Backpropagate this rank's share, (B_r/B) L_r, of the global batch's mean loss."""
        if self.group.size == 1:
            loss.backward()
            return
        shard_size = self.rows.stop - self.rows.start
        (loss * (shard_size / self.batch_size)).backward()

    def allreduce_gradients(self, *totals: float) -> tuple[float, ...]:
        """Sum every parameter's gradient over the ranks, with ``totals`` (numbers summed
        alongside, e.g. the step's loss sum), in one flat buffer; returns the summed totals.
        A parameter that has a gradient on no rank keeps none; the float buffers are averaged.

        The buffer: [gradients | buffers | one has-a-gradient flag per parameter | totals]."""
        if self.group.size == 1:
            return totals
        count = len(self.parameters)
        arrays = [p.grad for p in self.parameters] + self.buffers
        offsets = np.cumsum([0] + [p.size for p in self.parameters] + [b.size for b in self.buffers])
        dtype = np.result_type(*(p.dtype for p in self.parameters))
        flat = np.zeros(offsets[-1] + count + len(totals), dtype=dtype)
        for array, start, stop in zip(arrays, offsets[:-1], offsets[1:]):
            if array is not None:
                flat[start:stop] = np.ravel(array)
        has_grad, summed = flat[offsets[-1] : offsets[-1] + count], flat[offsets[-1] + count :]
        has_grad[:] = [grad is not None for grad in arrays[:count]]
        summed[:] = totals
        self.group.allreduce(flat)
        for index, parameter in enumerate(self.parameters):
            if has_grad[index]:
                grad = flat[offsets[index] : offsets[index + 1]].reshape(parameter.shape)
                parameter.grad = grad.astype(parameter.dtype, copy=False)
        for buffer, start, stop in zip(self.buffers, offsets[count:-1], offsets[count + 1 :]):
            buffer[...] = flat[start:stop].reshape(buffer.shape) / self.group.size
        return tuple(float(total) for total in summed)
