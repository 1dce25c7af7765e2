"""DataLoader: seeded, resumable batches sliced from in-memory arrays.

Each batch is one fancy-index, ``dataset[indices]``, never a Python loop over samples. Every
random choice derives from the loader's seed and the position in training, nothing else:

    the order of epoch e       default_rng(SeedSequence(seed, spawn_key=(e, 0))).permutation(n)
    the transform's generator  default_rng(SeedSequence(seed, spawn_key=(e, 1, b))) for batch b

so the loader's whole state is three integers (seed, epoch, next batch). ``state_dict()`` saves
them and ``load_state_dict()`` restores them; a run resumed from a checkpoint taken after any
batch sees exactly the batches, augmentations included, that the uninterrupted run would have.

Epochs: each ``iter(loader)`` runs one epoch and counts it, as PyTorch's loader draws a fresh
order for each ``iter()``. An iteration abandoned part-way (``break``) still counts as an epoch:
the next ``iter()`` starts the one after. After ``load_state_dict()`` of a state saved in the
middle of an epoch, the next ``iter()`` finishes that epoch from the saved batch on.

A training loop that resumes:

    loader.load_state_dict(checkpoint["loader"])         # only when resuming
    while loader.epoch < epochs:
        for images, labels in loader:
            ...                                          # one optimisation step
            checkpoint["loader"] = loader.state_dict()   # with the model's and optimiser's
"""

from __future__ import annotations

import numbers
import time
from typing import Callable, Iterator

import numpy as np

from tinynet.data.dataset import Dataset
from tinynet.rng import default_generator

# A transform takes a float32 (N, C, H, W) batch and a generator and returns a batch.
Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]

_ORDER, _TRANSFORM, _IMAGE = 0, 1, 2  # the spawn-key tags of the three random streams
_STATE_KEYS = ("seed", "epoch", "batch", "num_samples", "batch_size", "shuffle", "drop_last")


class DataLoader:
    """Yields ``(images, labels)``: float32 (B, C, H, W) and int64 (B,) NumPy arrays.

    dataset:    a Dataset whose ``dataset[indices]`` (a 1-D int64 array) returns
                ``(images, labels)`` for those samples, e.g. a TensorDataset
    batch_size: samples per batch; the last batch of an epoch may be smaller
    shuffle:    visit the samples in a new seeded random order each epoch
    drop_last:  leave out the last batch of an epoch when it is smaller than batch_size
    seed:       the seed of every random draw (order and transform); default: drawn once from
                ``generator``, or from tinynet's default generator (``tinynet.manual_seed``)
    generator:  an ``np.random.Generator`` to draw the seed from (once, here); not with seed
    transform:  ``transform(images, rng) -> images``, applied to each whole batch (see
                ``tinynet.data.transforms``); ``rng`` is the batch's own generator

    ``len(loader)`` is the number of batches in an epoch; ``loader.data_wait`` the seconds the
    epoch under way (or the last) has spent making its batches, i.e. its consumer waiting.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        generator: np.random.Generator | None = None,
        transform: Transform | None = None,
    ):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"DataLoader: dataset must define __len__ and __getitem__ (a Dataset such as "
                f"TensorDataset); got {type(dataset).__name__}"
            )
        if (
            not isinstance(batch_size, numbers.Integral)
            or isinstance(batch_size, bool)
            or batch_size < 1
        ):
            raise ValueError(f"DataLoader: batch_size must be an int >= 1; got {batch_size!r}")
        if seed is not None and generator is not None:
            raise ValueError("DataLoader: pass seed or generator, not both")
        if generator is not None and not isinstance(generator, np.random.Generator):
            raise TypeError(
                f"DataLoader: generator must be an np.random.Generator; got "
                f"{type(generator).__name__}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(
                f"DataLoader: transform must be callable as transform(images, rng); got "
                f"{type(transform).__name__}"
            )
        if seed is None:
            seed = int((generator or default_generator()).integers(2**63))
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = _check_seed(seed)
        self.transform = transform
        self._next_epoch = 0  # the epoch the next iter() starts
        self._resume_batch = 0  # where the next iter() starts in it (set by load_state_dict)
        self._live: object | None = None  # the iteration whose position state_dict reports
        self._position = (0, 0)  # (epoch, next batch) of that iteration
        self.data_wait = 0.0  # seconds the epoch under way (or the last) waited for its batches

    @property
    def epoch(self) -> int:
        """The epoch under way (counted from 0), or the next one to start between epochs."""
        return self.state_dict()["epoch"]

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # ------------------------------------------------------------- randomness
    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of ``epoch`` in visiting order (int64), before batching."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return self._rng(epoch, _ORDER).permutation(n).astype(np.int64, copy=False)

    def batch_generator(self, epoch: int, batch: int) -> np.random.Generator:
        """The generator handed to ``transform`` for batch ``batch`` of ``epoch``."""
        return self._rng(epoch, _TRANSFORM, batch)

    def image_generator(self, epoch: int, index: int) -> np.random.Generator:
        """The generator of sample ``index``'s own augmentation in ``epoch`` (the streaming
        loader's per-image augmentation: the same whichever process makes the image)."""
        return image_generator(self.seed, epoch, index)

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    # --------------------------------------------------------------- iterating
    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self._epoch_batches()

    def _epoch_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # A generator body runs at the first next(), so an iter() never advanced claims nothing.
        epoch, start = self._next_epoch, self._resume_batch
        self._next_epoch, self._resume_batch = epoch + 1, 0
        token = self._live = object()
        self._position = (epoch, start)
        batches = self._batches(epoch, start)
        self.data_wait = 0.0
        try:
            for b in range(start, len(self)):
                asked = time.perf_counter()  # the consumer waits from here to the yield
                images, labels = next(batches)
                if self.transform is not None:
                    images = self._transformed(images, epoch, b)
                self.data_wait += time.perf_counter() - asked
                if self._live is token:
                    self._position = (epoch, b + 1)
                yield images, labels
        finally:
            batches.close()
            if self._live is token:
                self._live = None

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(images, labels) of batches ``start``, ``start + 1``, ... of ``epoch``, before the
        transform: sliced from the dataset here (a subclass may make them elsewhere)."""
        order = self.order(epoch)
        for b in range(start, len(self)):
            yield self._load(order[b * self.batch_size : (b + 1) * self.batch_size])

    def _load(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = self.dataset[indices]
        if not isinstance(batch, tuple) or len(batch) != 2:
            raise TypeError(
                f"DataLoader: dataset[indices] must return (images, labels); "
                f"{type(self.dataset).__name__} returned {type(batch).__name__}"
                + (f" of length {len(batch)}" if isinstance(batch, tuple) else "")
            )
        images = np.asarray(batch[0]).astype(np.float32, copy=False)
        labels = np.asarray(batch[1]).astype(np.int64, copy=False)
        return images, labels

    def _transformed(self, images: np.ndarray, epoch: int, b: int) -> np.ndarray:
        out = self.transform(images, self.batch_generator(epoch, b))
        if not isinstance(out, np.ndarray) or out.ndim != 4 or len(out) != len(images):
            raise TypeError(
                f"DataLoader: transform must return a (N, C, H, W) array with N = "
                f"{len(images)}; got {getattr(out, 'shape', type(out).__name__)}"
            )
        return np.ascontiguousarray(out, dtype=np.float32)  # a view (a flip, a crop) is copied

    # -------------------------------------------------------------- resuming
    def state_dict(self) -> dict:
        """Where the loader is: ``seed``, ``epoch`` and ``batch`` (the next batch it yields),
        plus the settings that must match for the batches to be the same (``num_samples``,
        ``batch_size``, ``shuffle``, ``drop_last``). Ints and bools only: ``tinynet.save``
        stores it as it is.

        Taken during an epoch, after the loader has yielded batch b, it points at batch b + 1
        of that epoch; taken between epochs, at batch 0 of the next.
        """
        epoch, batch = self._next_epoch, self._resume_batch
        if self._live is not None and self._position[1] < len(self):
            epoch, batch = self._position
        return {
            "seed": self.seed,
            "epoch": epoch,
            "batch": batch,
            "num_samples": len(self.dataset),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``: the next ``iter()`` yields the batch it pointed at, then
        the rest of that epoch. The dataset size and the batching settings must match."""
        if not isinstance(state, dict):
            raise TypeError(
                f"DataLoader.load_state_dict: expected a dict from state_dict(); got "
                f"{type(state).__name__}"
            )
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise KeyError(f"DataLoader.load_state_dict: the state lacks {', '.join(missing)}")
        current = self.state_dict()
        for key in ("num_samples", "batch_size", "shuffle", "drop_last"):
            if _plain(state[key]) != current[key]:
                raise ValueError(
                    f"DataLoader.load_state_dict: the state was saved with {key}="
                    f"{_plain(state[key])!r} but this loader has {key}={current[key]!r}; the "
                    f"batches would differ"
                )
        seed = _check_seed(_plain(state["seed"]))
        epoch, batch = int(_plain(state["epoch"])), int(_plain(state["batch"]))
        if epoch < 0 or not 0 <= batch <= len(self):
            raise ValueError(
                f"DataLoader.load_state_dict: epoch must be >= 0 and batch in [0, {len(self)}]; "
                f"got epoch={epoch}, batch={batch}"
            )
        if batch == len(self):  # saved just after the last batch: the epoch is over
            epoch, batch = epoch + 1, 0
        self.seed, self._next_epoch, self._resume_batch = seed, epoch, batch
        self._live = None

    def __repr__(self) -> str:
        return (
            f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, seed={self.seed}, epoch={self.epoch})"
        )


def image_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``'s augmentation in ``epoch`` of a loader seeded ``seed``
    (``DataLoader.image_generator``), for a worker process that has the seed but not the loader."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_IMAGE, epoch, index)))


def _plain(value):
    """A 0-d array (as tinynet.load may return) becomes its Python scalar."""
    return value.item() if isinstance(value, (np.ndarray, np.generic)) else value


def _check_seed(seed) -> int:
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"DataLoader: seed must be a non-negative int; got {seed!r}")
    return int(seed)
