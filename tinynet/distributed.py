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
- BatchNorm, with ``convert_sync_batchnorm``, normalises with the global batch's statistics: the
  sums Σx and Σx² (forward) and Σg, Σg·x̂ (backward) of each channel are allreduced
  (``SyncBatchNormFunction``, on BatchNorm's own kernels). Without it (the default, as PyTorch's
  DDP) each rank normalises with its own shard's statistics, and the running statistics are
  averaged over the ranks with the gradients.

Without mpiexec, ``world()`` is ``ProcessGroup()``, one process alone, every collective the
identity, and mpi4py is never imported.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from tinynet import functional as F
from tinynet import nn, reference
from tinynet._threads import launched_ranks
from tinynet.function import Function
from tinynet.kernels.batchnorm import batch_norm_backward
from tinynet.ops import norm
from tinynet.rng import default_generator
from tinynet.tensor import Tensor, as_array, as_tensor

BUCKET_BYTES = 25 * 2**20  # one Allreduce call per 25 MiB of the flat buffer (PyTorch DDP's)
POLLED_BYTES = 2**16  # an allreduce this small is one non-blocking call, polled (_wait)
SPIN_SECONDS, LONGEST_NAP = 1e-3, 0.02  # how a rank waits for late ones (_wait)


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
        if flat.nbytes <= POLLED_BYTES:  # BatchNorm's sums, the evaluation's totals
            _wait(self.comm.Iallreduce(self._in_place, flat, op=self._sum))
            return array
        _wait(self.comm.Ibarrier())  # then every rank is there: the transfer does not wait
        step = max(1, self.bucket_bytes // flat.itemsize)
        for start in range(0, flat.size, step):
            self.comm.Allreduce(self._in_place, flat[start : start + step], op=self._sum)
        return array


def _wait(request) -> None:
    """Wait for an MPI request (a collective) without spinning a core for long.

    MPICH's blocking calls poll without sleeping, so a rank waiting for a late or stuck one
    (rank 0 writing a checkpoint, a rank stopped in a debugger) would burn a whole core. This
    polls for ``SPIN_SECONDS`` (ranks in step arrive together), then naps a tenth of the time
    waited so far, at most ``LONGEST_NAP``, between looks: a long wait grows by at most a tenth
    and costs next to no CPU. Large transfers are not polled so (each look moves one piece of
    them): ``allreduce`` polls a barrier, then sends them with every rank there."""
    start = time.perf_counter()
    while not request.Test():
        waited = time.perf_counter() - start
        if waited > SPIN_SECONDS:
            time.sleep(min(LONGEST_NAP, waited / 10))


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


class AllReduceFunction(Function):
    """y = Σ_r x_r: the sum of ``x`` over ``group``'s ranks, on every rank.

    Backward: x_r reaches every rank's loss L_r' through that rank's y, so with L = Σ_r' L_r'
    (whose parameter gradients ``DataParallel`` adds up), dL/dx_r = Σ_r' dL_r'/dy: the output's
    gradient, allreduced. Every rank applies it at the same point (it is a collective).
    """

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return group.allreduce(np.array(x, order="C"))  # a copy: x stays this rank's

    @staticmethod
    def backward(ctx, grad):
        return ctx.group.allreduce(np.array(grad, order="C"))


class SyncBatchNormFunction(Function):
    """Batch normalisation of one part of a batch split over ``group``'s ranks, with the whole
    batch's statistics, as PyTorch's SyncBatchNorm; training only. The math is
    ``tinynet.ops.norm.BatchNormFunction``'s, with a channel's m values those of every rank, on
    the same kernels (``tinynet.kernels.batchnorm``):

    Forward: each channel's Σx, Σx² and count are allreduced (in float64), so
        μ = Σx / m,        v = Σx² / m - μ²,
    and the running statistics move towards μ and v·m/(m - 1) as BatchNormFunction's.
    Backward: dL/dx_j = (γ/σ) (g_j - mean(g) - x̂_j mean(g x̂)) takes its means over the whole
    batch: this rank's Σg and Σg x̂ are allreduced with the count. dL/dγ = Σ g x̂ and dL/dβ = Σ g
    stay this rank's own sums: the gradient allreduce (``DataParallel``) adds them up.
    Reference twin: ``sync_batch_norm_twin``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, group):
        rows = norm.batch_norm_rows(x)  # (C, m) of this rank
        channels, wide = rows.shape[0], rows.astype(np.float64, copy=False)
        sums = np.concatenate([wide.sum(axis=1), (wide * wide).sum(axis=1), [wide.shape[1]]])
        group.allreduce(sums)  # Σx, Σx², m over every rank's rows
        m = sums[-1]
        mean = sums[:channels] / m
        var = np.maximum(sums[channels:-1] / m - mean * mean, 0.0)
        mean, var = mean.astype(rows.dtype), var.astype(rows.dtype)
        norm.update_running_statistics(running_mean, running_var, mean, var, m, momentum)
        # y = γ x̂ + β = x·a + b, a = γ/σ, b = β - μ a
        y, invstd, scale = norm.normalize_rows(rows, mean, var, weight, bias, eps)
        ctx.save_for_backward(rows, mean, invstd, scale)
        ctx.shape, ctx.dtype, ctx.group = x.shape, x.dtype, group
        return norm.batch_norm_output(y, x.shape, x.dtype)

    @staticmethod
    def backward(ctx, grad):
        rows, mean, invstd, scale = ctx.saved_tensors
        g = norm.batch_norm_rows(grad, rows.dtype)
        # this rank's Σg (dL/dβ) and Σg x̂ (dL/dγ); the kernel's dL/dx would take local means
        sum_g, sum_g_x_hat = np.empty_like(mean), np.empty_like(mean)
        no_dx = np.empty((0, 0), rows.dtype)
        batch_norm_backward(rows, g, mean, invstd, scale, True, no_dx, sum_g, sum_g_x_hat)
        dx = None
        if ctx.needs_input_grad[0]:
            # dL/dx = a (g - Σg/m - x̂ Σg x̂/m), the sums and m over every rank
            channels = rows.shape[0]
            sums = np.concatenate([sum_g, sum_g_x_hat, [rows.shape[1]]]).astype(np.float64)
            ctx.group.allreduce(sums)
            m = sums[-1]
            mean_g, mean_g_x_hat = sums[:channels, None] / m, sums[channels:-1, None] / m
            x_hat = (rows - mean[:, None]) * invstd[:, None]
            dx = scale[:, None] * (g - mean_g - x_hat * mean_g_x_hat)
        return norm.batch_norm_grads(ctx, dx, sum_g, sum_g_x_hat)


def sync_batch_norm_twin(x, running_mean, running_var, weight, bias, momentum, eps, group):
    """The composed twin of ``SyncBatchNormFunction``: μ = Σx / m and v = Σ(x - μ)² / m, each
    sum over every rank (``AllReduceFunction``), then ``tinynet.reference.batch_norm``
    normalising with them, so autograd differentiates through both sums on every rank."""
    axes = (0,) + tuple(range(2, x.ndim))
    m = float(group.allreduce(np.array([x.size // x.shape[1]], np.float64))[0])
    mean = AllReduceFunction.apply(F.sum(x, axes), group=group) / m
    centred = x - F.reshape(mean, (1, -1) + (1,) * (x.ndim - 2))
    var = AllReduceFunction.apply(F.sum(centred * centred, axes), group=group) / m
    norm.update_running_statistics(running_mean, running_var, mean.data, var.data, m, momentum)
    return reference.batch_norm(x, mean, var, weight, bias, training=False, eps=eps)


def sync_batch_norm(
    input,  # noqa: A002
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    group: ProcessGroup,
) -> Tensor:
    """``tinynet.functional.batch_norm`` of one part of a batch split over ``group``'s ranks:
    training normalises with the whole batch's statistics (``SyncBatchNormFunction``), and every
    rank must call it at the same point (it runs collectives). Evaluation, or a group of one
    process, is ``F.batch_norm`` itself. Inside ``tinynet.use_reference()`` it runs its
    composed twin, ``sync_batch_norm_twin``, as every fused op does."""
    if not training or group.size == 1:
        return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    x = as_tensor(input)
    norm.check_batch_norm_args(x, running_mean, running_var, weight, bias, training, momentum, eps)
    running = dict(
        running_mean=as_array(running_mean),
        running_var=as_array(running_var),
        momentum=float(momentum),
        eps=float(eps),
        group=group,
    )
    if reference.is_reference_enabled():
        return sync_batch_norm_twin(x, weight=weight, bias=bias, **running)
    return SyncBatchNormFunction.apply(x, weight, bias, **running)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training normalises with the statistics of the whole batch split
    over ``process_group``'s ranks (``sync_batch_norm``), as PyTorch's SyncBatchNorm; in eval
    mode it is BatchNorm2d. Every rank runs it at the same point of its forward (it runs
    collectives). The state and its names are BatchNorm2d's, so a checkpoint loads into either.

    process_group: the ranks; None: ``world()``, the ranks this process was launched with.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: ProcessGroup | None = None,
        dtype=np.float32,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)
        self.process_group = process_group

    def forward(self, x):
        arguments = self._batch_norm_arguments(x)
        if not self.training:  # batch statistics (no running ones) of this rank's part, as PyTorch
            return F.batch_norm(x, **arguments)
        group = world() if self.process_group is None else self.process_group
        return sync_batch_norm(x, **arguments, group=group)


def convert_sync_batchnorm(module: nn.Module, group: ProcessGroup | None = None) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a ``SyncBatchNorm2d`` over ``group`` (None:
    ``world()``) under the same name, holding the same parameters and buffers (an optimiser made
    before keeps training them) in the same mode, as PyTorch's
    ``SyncBatchNorm.convert_sync_batchnorm``. Returns ``module``, or its replacement if it is a
    BatchNorm2d itself."""
    if isinstance(module, SyncBatchNorm2d) or not isinstance(module, nn.BatchNorm2d):
        for name, child in list(module.named_children()):
            # in place: assigning the attribute would move the child to the end of the order
            module._modules[name] = convert_sync_batchnorm(child, group)
        return module
    synced = SyncBatchNorm2d(
        module.num_features, module.eps, module.momentum, module.affine,
        module.track_running_stats, group,
    )  # fmt: skip
    for name, value in [*module._parameters.items(), *module._buffers.items()]:
        setattr(synced, name, value)
    return synced.train(module.training)


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
        sizes = [p.size for p in self.parameters] + [b.size for b in self.buffers]
        offsets = np.cumsum([0] + sizes)
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
