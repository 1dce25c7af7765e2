"""StreamingLoader: a DataLoader over image files, decoded and augmented per image by worker
processes into shared-memory batches while the training step runs.

    train, test, classes = image_files("photos/", 224)
    loader = StreamingLoader(train, 64, shuffle=True, seed=0, augment="paper", workers=2,
                             transform=T.Normalize(mean, std))
    for images, labels in loader:        # float32 (B, 3, 224, 224) in [0, 1], then transform
        ...
    loader.close()                       # ends the workers (also at exit)

What the DataLoader promises holds: the seeded order, ``state_dict``/``load_state_dict`` for an
exact resume (mid-epoch too), and the same batches whatever ``workers`` is: image ``i`` of epoch
``e`` is augmented with ``loader.image_generator(e, i)``, whichever process makes it. With
``workers=0`` the main process makes each batch when it is asked for; with N workers, batch b
goes to worker ``b % N`` and up to ``prefetch`` batches are made ahead (the bound on memory:
``prefetch`` shared-memory batches, whatever the number of images).

A bad image (truncated, undecodable, gone) stops the epoch with a ``DatasetError`` naming the
file; with ``skip_bad_images`` it is left out of its batch (which is one image shorter) and
listed in ``loader.skipped`` (the files, in the order met). Before each epoch the folder is
checked to still hold every listed file (``ImageFiles.check_present``).
"""

from __future__ import annotations

import weakref

import numpy as np

from tinynet.data.augment import AUGMENTATIONS
from tinynet.data.formats import DatasetError, to_unit_float
from tinynet.data.loader import DataLoader, image_generator
from tinynet.data.workers import WorkerPool


class StreamingLoader(DataLoader):
    """A DataLoader over an ``ImageFiles`` dataset (see the module docstring).

    augment:  "paper", "crop-flip", "crop" or "none" (``tinynet.data.augment``)
    workers:  worker processes (0: the main process decodes)
    prefetch: batches made ahead (default 2 per worker)
    skip_bad_images: leave an undecodable image out of its batch instead of stopping
    The other arguments are the DataLoader's; ``transform`` sees float32 batches in [0, 1].
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, seed: int | None = None, generator=None,
                 transform=None, augment: str = "none", workers: int = 0,
                 prefetch: int | None = None, skip_bad_images: bool = False):  # fmt: skip
        super().__init__(dataset, batch_size, shuffle, drop_last, seed, generator, transform)
        if not hasattr(dataset, "pixels"):
            raise TypeError(
                f"StreamingLoader: dataset must be an ImageFiles (tinynet.data.image_files); got "
                f"{type(dataset).__name__}"
            )
        if augment not in AUGMENTATIONS:
            raise ValueError(
                f"StreamingLoader: augment must be one of {list(AUGMENTATIONS)}; got {augment!r}"
            )
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise ValueError(f"StreamingLoader: workers must be an int >= 0; got {workers!r}")
        self.augment, self.workers = augment, workers
        self.prefetch = max(1, prefetch if prefetch is not None else 2 * workers)
        self.skip_bad_images = bool(skip_bad_images)
        self.skipped: list[str] = []
        self._pool: WorkerPool | None = None

    def _batches(self, epoch: int, start: int):
        self.dataset.check_present()
        order, count = self.order(epoch), len(self)
        tasks = [
            (self.seed, epoch, order[b * self.batch_size : (b + 1) * self.batch_size],
             self.augment, self.skip_bad_images)
            for b in range(start, count)
        ]  # fmt: skip
        if self.workers == 0:
            for task in tasks:
                out = np.empty((len(task[2]), *self.dataset.image_shape), np.uint8)
                yield self._delivered(out, task, *fill_batch(self.dataset, out, task))
            return
        pool = self._started_pool()
        slots, waiting, ready = list(range(self.prefetch)), {}, {}
        sent = 0
        try:
            for b in range(len(tasks)):
                while sent < len(tasks) and slots:
                    slot = slots.pop(0)
                    pool.submit((start + sent) % self.workers, slot, tasks[sent])
                    waiting[slot], sent = sent, sent + 1
                while b not in ready:
                    slot, kept, bad = pool.next_done()
                    ready[waiting.pop(slot)] = (slot, kept, bad)
                slot, kept, bad = ready.pop(b)
                batch = self._delivered(pool.batch(slot, len(kept)), tasks[b], kept, bad)
                slots.append(slot)
                yield batch
        except GeneratorExit:  # the epoch was left early: let the batches under way land
            while waiting and self._pool is pool:  # (unless close() has ended the workers)
                waiting.pop(pool.next_done()[0])
            raise
        except BaseException:  # an error or Ctrl-C: end the workers now
            self.close()
            raise

    def _delivered(self, pixels, task, kept, bad):
        """float32 images (in [0, 1]) and labels of a made batch; ``bad`` noted."""
        self.skipped += bad
        indices = task[2][kept]
        if len(indices) == 0:
            raise DatasetError(
                f"every image of a batch was unreadable and skipped: {', '.join(bad)}"
            )
        return to_unit_float(pixels[: len(indices)]), self.dataset.labels[indices]

    def _started_pool(self) -> WorkerPool:
        if self._pool is None:
            shape = (self.batch_size, *self.dataset.image_shape)
            self._pool = WorkerPool(self.dataset, fill_batch, self.workers, self.prefetch, shape)
            weakref.finalize(self, WorkerPool.close, self._pool)
        return self._pool

    def close(self) -> None:
        """End the workers and free their shared memory (a later epoch starts them again)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()


def fill_batch(dataset, out: np.ndarray, task) -> tuple[np.ndarray, list[str]]:
    """Decode and augment ``task``'s images into ``out`` (uint8, packed from position 0): the
    positions in the batch that were kept, and the bad images' messages (with skipping on; a
    bad image raises otherwise). Runs in a worker or in the main process alike."""
    seed, epoch, indices, augment, skip = task
    kept, bad = [], []
    for position, index in enumerate(indices):
        try:
            out[len(kept)] = dataset.pixels(
                int(index), augment, image_generator(seed, epoch, index)
            )
        except DatasetError as error:
            if not skip:
                raise
            bad.append(str(error))
            continue
        kept.append(position)
    return np.asarray(kept, dtype=np.int64), bad


def attach_cache(dataset, folder, augment: str, workers: int = 0, batch_size: int = 64):
    """Give ``dataset`` (an ``ImageFiles``) its ``ImageCache`` in ``folder`` for ``augment``,
    made now (by ``workers`` processes, as the batches are) unless one for the current listing
    is there. Returns the cache."""
    from tinynet.data.image_cache import ImageCache

    def build(out, side):
        squares = StreamingLoader(dataset.resized(side), batch_size, seed=0, workers=workers)
        try:
            start = 0
            for images, _ in squares:
                out[start : start + len(images)] = np.rint(images * 255.0).astype(np.uint8)
                start += len(images)
        finally:
            squares.close()

    dataset.cache = ImageCache.open(dataset, folder, augment, build)
    return dataset.cache
