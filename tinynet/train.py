"""Training a GoogLeNet: the configuration, the loop, evaluation and exact resumption.

    config = TrainConfig(dataset="digits", epochs=6, out_dir="runs/digits")
    history = Trainer(config).fit()

Each epoch trains on the training split with the paper's loss (main + 0.3 x each auxiliary
head), evaluates top-1/top-5 on the test split (with the Polyak-averaged weights when EMA is
on, as the paper evaluated), and writes, each atomically, into ``out_dir``:

    checkpoint.npz   model, optimiser, schedule, EMA, data-loader and RNG states, history
    metrics.jsonl    one JSON record per epoch (and, with log_gradients, the per-layer
                     gradient records of ``tinynet.gradflow`` before each epoch's)
    curves.png       loss and accuracy per epoch (if matplotlib is installed)
    gradients.png    with log_gradients: gradient norms and update ratios per layer and step
    explore/         with explore_every: what ``tinynet explore --watch`` shows, rewritten every
                     so many steps (``tinynet.explore.snapshots``)

``Trainer.resume(out_dir)`` restores every one of those states, so a resumed run computes
exactly the losses an uninterrupted run with the same seed would have.

A run fails early and says why: ``TrainConfig`` refuses a setting out of range (a user's, or a
checkpoint's before anything is built from it), the output folder is checked before any data
is read, a resumed run's data must have the checkpoint's classes, and a NaN or infinite loss
(training or test) stops the run with the last good epoch's files left as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinynet import _threads, anomaly, distributed, io, nn, run_folder, runtime, tensorboard_log
from tinynet.data import DataLoader, DataSplits, load_dataset
from tinynet.data import transforms as T
from tinynet.data.augment import AUGMENTATIONS
from tinynet.data.datasets import ALIASES, check_splits
from tinynet.data.image_files import ImageFiles
from tinynet.data.streaming import StreamingLoader, attach_cache
from tinynet.function import no_grad
from tinynet.functional import cross_entropy
from tinynet.gradflow import GradientFlow, is_record, nonfinite
from tinynet.inference import inference
from tinynet.memory_estimate import available_memory, estimate_training_memory, memory_warning
from tinynet.metrics import topk_correct
from tinynet.models.registry import MODELS, model_entry
from tinynet.optim import (
    SGD,
    Adam,
    AdamW,
    CosineAnnealingLR,
    ExponentialMovingAverage,
    LinearWarmup,
    RMSprop,
    SequentialLR,
    StepLR,
    clip_grad_norm_,
)
from tinynet.progress import ProgressBar
from tinynet.rng import default_generator, manual_seed
from tinynet.step import StepSeams, accumulated_step

# rmsprop: the Inception-v3 paper's setting, decay 0.9 and ε = 1.0, at its learning rate 0.045.
OPTIMIZERS = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": functools.partial(RMSprop, alpha=0.9, eps=1.0),
}
SCHEDULES = ("cosine", "step", "constant")
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 0.045}
CHECKPOINT, METRICS, CURVES = "checkpoint.npz", "metrics.jsonl", "curves.png"
GRADIENTS = "gradients.png"
RUN_FILES = (CHECKPOINT, METRICS, CURVES, GRADIENTS)  # what Trainer.save writes into out_dir
CHECKPOINT_FORMAT = "tinynet-train-checkpoint"


class SettingError(ValueError):
    """A ``TrainConfig`` setting outside what is allowed; ``setting`` is its field's name."""

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting = setting


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to change."""


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in its checkpoint.

    model:        'small' (BatchNorm, small-image stem), 'paper' or 'torchvision'
    width:        channel multiplier (None: the preset's, 0.25 for 'small')
    dataset:      digits | mnist | fashion_mnist | cifar10 | image_folder
    data_dir:     where the dataset's files are (not needed for digits)
    download:     fetch missing dataset files (SHA-256 verified)
    image_size:   side of the square images fed to the network (None: the dataset's own, 32
                  for digits; needed for image_folder)
    optimizer:    sgd (momentum, Nesterov) | adam | adamw | rmsprop (decay 0.9, ε 1.0); lr None:
                  0.1 for SGD, 0.045 for RMSprop, 1e-3 otherwise
    schedule:     cosine (to 0 over the run) | step (the paper's: x0.96 every 8 epochs) |
                  constant; after warmup_epochs of linear warm-up
    ema_decay:    Polyak averaging of the weights for evaluation (None: off)
    augment:      crop-flip: random crops (4-pixel padding for 32px) and, for natural images,
                  mirroring; crop: the crops alone; none; paper (image_folder only): GoogLeNet's
                  random-resized crops, photometric distortions and interpolations
                  (tinynet.data.augment). True and
                  False (older checkpoints) mean crop-flip and none
    workers:      image_folder: processes decoding and augmenting the images while the step
                  runs (0: the main process; None: _threads.default_workers(), from the cores)
    cache:        image_folder: keep the decoded images in a memory-mapped file
                  (tinynet.data.image_cache), in cache_dir or out_dir/image-cache
    skip_bad_images: image_folder: leave an undecodable image out (counted and listed in
                  metrics.jsonl) instead of stopping the run naming it
    max_batches:  stop each epoch's training after this many optimizer steps and its evaluation
                  after this many batches (smoke runs)
    accumulate:   sum the gradients of this many batches before each optimizer step: the step
                  of one batch of accumulate x batch_size images in the memory of one batch
                  (tinynet.step.accumulated_step; BatchNorm still normalises each batch on its
                  own). The schedule, step counts, logs and checkpoints count optimizer steps.
    tensorboard:  also write TensorBoard event files into out_dir/tensorboard/ (losses,
                  accuracies, learning rate and data wait per step and epoch, histograms, the
                  first augmented batch; tinynet.tensorboard_log, the tensorboard extra)
    histogram_every: with tensorboard, every parameter's and gradient's histogram every this
                  many steps
    log_gradients: record per-layer gradient norms and update ratios every this many steps
                  (None: off)
    explore_every: every this many steps, write the loss, the layers' gradient norms and update
                  ratios and a test image's activations into out_dir/explore/ for ``tinynet
                  explore --watch`` (None: off; tinynet.explore.snapshots)
    sync_batchnorm: under mpiexec, BatchNorm normalises with the whole batch's statistics
                  across the ranks (default: each rank's own; see tinynet.distributed)
    """

    model: str = "small"
    width: float | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    epochs: int = 6
    batch_size: int = 64
    accumulate: int = 1
    tensorboard: bool = False
    histogram_every: int = 100
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    aux_weight: float = 0.3
    ema_decay: float | None = 0.999
    grad_clip: float | None = None
    augment: str = "crop-flip"
    workers: int | None = None
    cache: bool = False
    cache_dir: str | None = None
    skip_bad_images: bool = False
    seed: int = 0
    out_dir: str = "runs/digits"
    max_batches: int | None = None
    log_gradients: int | None = None
    explore_every: int | None = None
    sync_batchnorm: bool = False
    # Set from the data when the run starts, then fixed (prediction needs them):
    mean: list[float] | None = None
    std: list[float] | None = None
    classes: list[str] = field(default_factory=list)
    channels: int | None = None
    input_size: int | None = None

    def __post_init__(self):
        if isinstance(self.augment, (bool, np.bool_)):  # how checkpoints before --augment say it
            self.augment = "crop-flip" if self.augment else "none"
        self.validate()

    def validate(self) -> None:
        """Refuse a setting outside what is allowed, naming it, its value and what is allowed:
        a user's option, or one read from a checkpoint (before anything is built from it)."""
        for name, ok, expected in _RULES:
            value = getattr(self, name)
            if not ok(value, self):
                shown = repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:60]}..."
                raise SettingError(name, f"{name} must be {expected}; got {shown}")

    @classmethod
    def for_model(cls, **options) -> TrainConfig:
        """The config of ``options`` with the model's recipe (``MODELS[model].recipe``) filling
        what they leave open; an optimizer given in ``options`` drops the recipe's ``lr``
        (it was measured for the recipe's optimizer), and a recipe value that the options make
        invalid is dropped too (its 1-epoch warm-up in a run of ``epochs=1``). The ``tinynet
        train`` command's way."""
        recipe = dict(model_entry(options.get("model", cls.model)).recipe)
        if "optimizer" in options:
            recipe.pop("lr", None)
        while True:
            try:
                return cls(**{**recipe, **options})
            except SettingError as error:
                if error.setting not in recipe or error.setting in options:
                    raise
                del recipe[error.setting]

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# Bounds on what a run may ask for, so a mistyped option or a hostile checkpoint is refused
# before a network or a batch is allocated: width 4 is 16 times the paper's 6.8 million weights.
MAX_WIDTH, MAX_IMAGE_SIZE, MAX_CHANNELS, MAX_CLASSES = 4.0, 2048, 64, 100_000
MAX_EPOCHS = 1_000_000  # a million passes over even 8x8 digits is months of a CPU's time


def _int(value, low: int, high: float = math.inf) -> bool:
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    return is_int and low <= value <= high


def _real(value) -> bool:
    """A finite int or float (not a bool)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and math.isfinite(value)


def _optional(rule):
    return lambda value, config: value is None or rule(value, config)


def _per_channel(positive: bool):
    def ok(values, config) -> bool:
        return (
            isinstance(values, list)
            and len(values) == config.channels
            and all(_real(v) and (v > 0 or not positive) for v in values)
        )

    return _optional(ok)


def _class_names(names, config) -> bool:
    return (
        isinstance(names, list)
        and len(names) <= MAX_CLASSES
        and all(isinstance(n, str) for n in names)
        and len(set(names)) == len(names)
    )


def _text(value, config) -> bool:
    return isinstance(value, str)


def _flag(value, config) -> bool:
    return isinstance(value, bool)


# (field, is the value allowed?, what is allowed), checked in this order (warmup_epochs after
# epochs, mean and std after channels).
_RULES = [
    ("model", lambda v, c: isinstance(v, str) and v in MODELS, f"one of {sorted(MODELS)}"),
    ("width", _optional(lambda v, c: _real(v) and 0 < v <= MAX_WIDTH),
     f"a number in (0, {MAX_WIDTH:g}]"),
    ("dataset", _text, "a dataset name"),
    ("data_dir", _optional(_text), "a folder (str) or None"),
    ("download", _flag, "True or False"),
    ("image_size", _optional(lambda v, c: _int(v, 1, MAX_IMAGE_SIZE)),
     f"an int in [1, {MAX_IMAGE_SIZE}]"),
    ("epochs", lambda v, c: _int(v, 1, MAX_EPOCHS), f"an int in [1, {MAX_EPOCHS:,}]"),
    ("batch_size", lambda v, c: _int(v, 1), "a positive int"),
    ("accumulate", lambda v, c: _int(v, 1), "a positive int (batches per optimizer step)"),
    ("tensorboard", _flag, "True or False"),
    ("histogram_every", lambda v, c: _int(v, 1), "a positive int (steps)"),
    ("optimizer", lambda v, c: isinstance(v, str) and v in OPTIMIZERS,
     f"one of {sorted(OPTIMIZERS)}"),
    ("lr", _optional(lambda v, c: _real(v) and v > 0), "a finite number > 0"),
    ("momentum", lambda v, c: _real(v) and 0 <= v < 1, "in [0, 1)"),
    ("nesterov", _flag, "True or False"),
    ("weight_decay", lambda v, c: _real(v) and v >= 0, "a finite number >= 0"),
    ("schedule", lambda v, c: isinstance(v, str) and v in SCHEDULES, f"one of {list(SCHEDULES)}"),
    ("warmup_epochs", lambda v, c: _real(v) and 0 <= v < c.epochs, "in [0, epochs)"),
    ("label_smoothing", lambda v, c: _real(v) and 0 <= v < 1, "in [0, 1)"),
    ("aux_weight", lambda v, c: _real(v) and v >= 0, "a finite number >= 0"),
    ("ema_decay", _optional(lambda v, c: _real(v) and 0 < v < 1), "in (0, 1)"),
    ("grad_clip", _optional(lambda v, c: _real(v) and v > 0), "a finite number > 0"),
    ("augment", lambda v, c: v in AUGMENTATIONS and (v != "paper" or _streamed(c.dataset)),
     f"one of {list(AUGMENTATIONS)} (paper: with image_folder, which keeps the full images)"),
    ("workers", _optional(lambda v, c: _int(v, 0, 256) and _streamed(c.dataset)),
     "an int in [0, 256] (with image_folder: an in-memory dataset has nothing to decode) or None"),
    ("cache", lambda v, c: v is False or v is True and _streamed(c.dataset),
     "True or False (True with image_folder only: an in-memory dataset has nothing to cache)"),
    ("cache_dir", _optional(lambda v, c: _text(v, c) and _streamed(c.dataset)),
     "a folder (str) with image_folder, or None"),
    ("skip_bad_images", lambda v, c: v is False or v is True and _streamed(c.dataset),
     "True or False (True with image_folder only: the other datasets are not image files)"),
    ("seed", lambda v, c: _int(v, 0), "an int >= 0"),
    ("out_dir", _text, "a folder (str)"),
    ("max_batches", _optional(lambda v, c: _int(v, 1)), "a positive int"),
    ("log_gradients", _optional(lambda v, c: _int(v, 1)), "a positive int (steps) or None"),
    ("explore_every", _optional(lambda v, c: _int(v, 1)), "a positive int (steps) or None"),
    ("sync_batchnorm", _flag, "True or False"),
    ("channels", _optional(lambda v, c: _int(v, 1, MAX_CHANNELS)),
     f"an int in [1, {MAX_CHANNELS}]"),
    ("input_size", _optional(lambda v, c: _int(v, 1, MAX_IMAGE_SIZE)),
     f"an int in [1, {MAX_IMAGE_SIZE}]"),
    ("mean", _per_channel(positive=False), "a list of one finite number per channel"),
    ("std", _per_channel(positive=True), "a list of one finite number > 0 per channel"),
    ("classes", _class_names, f"a list of at most {MAX_CLASSES:,} distinct names (str)"),
]


def build_model(config: TrainConfig) -> nn.Module:
    """The configured network for the data's channels and classes, at the configured width."""
    options = {"in_channels": config.channels, "num_classes": len(config.classes)}
    if config.width is not None:
        options["width"] = config.width
    return model_entry(config.model).build(**options)


def build_optimizer(config: TrainConfig, params):
    """The configured optimizer of ``params``."""
    c, params = config, list(params)
    if c.optimizer == "sgd":
        return SGD(params, c.learning_rate, momentum=c.momentum, nesterov=c.nesterov,
                   weight_decay=c.weight_decay)  # fmt: skip
    return OPTIMIZERS[c.optimizer](params, c.learning_rate, weight_decay=c.weight_decay)


def load_data(config: TrainConfig) -> DataSplits:
    """The configured dataset's train and test splits (digits split by the run's seed); an
    image folder as lists of files, decoded as they are read (``tinynet.data.image_files``)."""
    options = {"seed": config.seed} if config.dataset == "digits" else {}
    if _streamed(config.dataset):
        options["stream"] = True
    return load_dataset(
        config.dataset, config.data_dir, config.download, config.image_size, **options
    )


def _streamed(dataset) -> bool:
    """Whether ``dataset`` (a name) is read as a list of files, by the streaming loader."""
    return ALIASES.get(dataset, dataset) == "image_folder"


STATISTICS_SAMPLE = 512  # training images that give BatchNorm's (and a folder's mean and std)


def statistics_sample(dataset) -> np.ndarray:
    """The sorted indices of ``STATISTICS_SAMPLE`` images of ``dataset`` (all if it has fewer)
    picked by a fixed seed. Not the first ones: an image folder with train/ and test/ lists its
    images class by class, so its first 512 may be a few classes, or one."""
    return np.sort(np.random.default_rng(0).permutation(len(dataset))[:STATISTICS_SAMPLE])


def statistics_images(dataset) -> np.ndarray:
    """The images whose per-channel mean and std normalise a run: all of an in-memory split;
    of an image folder, its ``statistics_sample`` (decoding every photograph first would cost an
    epoch)."""
    if not isinstance(dataset, ImageFiles):
        return dataset.arrays[0]
    return dataset[statistics_sample(dataset)][0]  # skip_bad_images: without undecodable ones


def _skip_bad_images(data: DataSplits, skip: bool) -> None:
    """An image folder's splits leave out undecodable images when ``skip`` (both splits)."""
    for split in (data.train, data.test):
        if isinstance(split, ImageFiles):
            split.skip_bad_images = skip


class _RunSeams(StepSeams):
    """What a Trainer's run attaches to one ``accumulated_step`` (tinynet/step.py): MPI's rows
    of each batch, its share of the backward and the gradients' sum over the ranks, the
    divergence check, gradient clipping and logging before the update; the schedule and the
    moving average after it. Leaves the step's loss and correct count, summed over its batches
    and the ranks, in ``batch_loss``, ``batch_correct``."""

    def __init__(self, trainer: Trainer, epoch: int, step: int, first_batch: int):
        self.trainer = trainer
        self.epoch, self.step = epoch, step  # step: the optimizer step's index in the epoch
        self.batch = first_batch  # the loader's index of the batch being computed, from 0
        self.global_step = (epoch - 1) * trainer.steps_per_epoch + step
        every = trainer.config.log_gradients
        self.logged = every is not None and self.global_step % every == 0
        self.flow_before = None
        self.loss_sum = self.correct = self.images = 0
        explorer = trainer.explorer
        self.explored = explorer is not None and explorer.due(self.global_step)
        self.explore_before = None

    def local_rows(self, images, labels):
        self.images += len(labels)  # the whole batch's (every rank sees it), for the explorer
        return self.trainer.parallel.shard(images, labels)  # this rank's rows of the batch

    def backward(self, loss) -> None:
        self.trainer.parallel.backward(loss)

    def after_backward(self, loss, outputs, labels) -> None:
        value = loss.item()
        if not math.isfinite(value):  # the weights have not moved: the last checkpoint stands
            where = f"epoch {self.epoch}, batch {self.batch + 1}"
            raise self.trainer._diverged(f"the loss became {value} at {where}")
        logits = getattr(outputs, "logits", outputs)  # training mode: the aux heads' too
        self.loss_sum += value * len(labels)
        self.correct += topk_correct(logits.data, labels, 1)
        self.batch += 1

    def before_update(self) -> None:
        trainer = self.trainer
        self.batch_loss, self.batch_correct = trainer.parallel.allreduce_gradients(
            self.loss_sum, self.correct
        )  # summed over the ranks, with the gradients
        if self.logged:
            self.flow_before = trainer.gradient_flow.before_step()
        if self.explored:
            self.explore_before = trainer.explorer.before_update()
        if trainer.config.grad_clip is not None:
            clip_grad_norm_(trainer.model.parameters(), trainer.config.grad_clip)
        board = trainer.board
        if board is not None and board.wants_histograms(self.global_step + 1):
            board.histograms(self.global_step + 1, trainer.model.named_parameters())

    def after_update(self) -> None:
        trainer = self.trainer
        if self.logged:
            flow = trainer.gradient_flow.after_step(self.flow_before, self.epoch, self.global_step)
            trainer._log_gradients(flow)
        if self.explored:
            trainer.explorer.after_update(
                self.explore_before, self.epoch, self.global_step, self.batch_loss / self.images,
                self.batch_correct / self.images, trainer.scheduler.get_last_lr()[0],
            )  # fmt: skip
        trainer.scheduler.step()
        if trainer.ema is not None:
            trainer.ema.update()


class Trainer:
    """Trains ``config``'s model on ``data`` (loaded from the config if not given).

    log: where one-line messages go (default: stderr); the progress bar writes to stderr.
    Under mpiexec each rank trains its shard of every batch (``tinynet.distributed``); rank 0
    alone logs and writes the files.
    """

    def __init__(self, config: TrainConfig, data: DataSplits | None = None, log=None):
        runtime.configure()  # the thread and memory policy of a run: see tinynet/runtime.py
        self.group = distributed.world()
        self.cores = None  # this run's share of the machine while fit() runs: _threads.share_cores
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        if self.group.rank != 0:
            self.log = lambda message: None
        io.check_writable_folder(config.out_dir, "out_dir")  # before minutes of loading data
        if config.tensorboard and self.group.rank == 0:
            tensorboard_log.check_available()  # its one-line error before the data is read
        self.board = None  # the run's TensorBoard writer while fit() runs (config.tensorboard)
        if data is None:
            data = load_data(config)  # checks its splits
        else:
            check_splits(data, "Trainer", "the data given")
        self.data = data
        _skip_bad_images(self.data, config.skip_bad_images)
        if config.mean is None:  # fixed at the start of a run, then kept in the checkpoint
            train_images = statistics_images(self.data.train)
            config.mean = [float(v) for v in train_images.mean(axis=(0, 2, 3))]
            config.std = [float(v) + 1e-6 for v in train_images.std(axis=(0, 2, 3))]
            config.classes = [str(c) for c in self.data.classes]
            config.channels = int(train_images.shape[1])
            config.input_size = int(train_images.shape[2])
            config.validate()
        else:
            check_data_fits(config, self.data, f"the run in {config.out_dir}")
        self.config = config
        self.out_dir = Path(config.out_dir)

        manual_seed(config.seed)
        self.model = build_model(config)
        if config.sync_batchnorm:
            self.model = distributed.convert_sync_batchnorm(self.model, self.group)
        self.parallel = distributed.DataParallel(self.group, self.model, not config.sync_batchnorm)
        self.normalize = T.Normalize(config.mean, config.std)
        self.loader = self._train_loader()
        steps = -(-len(self.loader) // config.accumulate)  # optimizer steps in an epoch
        self.steps_per_epoch = min(steps, config.max_batches or steps)
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        self.ema = (
            ExponentialMovingAverage(self.model, config.ema_decay) if config.ema_decay else None
        )
        self.history: list[dict] = []
        self.gradient_flow = GradientFlow(self.model) if config.log_gradients else None
        self.gradient_log: list[dict] = []  # tinynet.gradflow's records
        self.explorer = self._explorer() if config.explore_every and self.group.rank == 0 else None

    # ------------------------------------------------------------------ construction
    def _explorer(self):
        """What writes out_dir/explore/ for ``tinynet explore --watch``; its image is the first
        of the test split."""
        from tinynet.explore.snapshots import SnapshotWriter  # the page's side, only if asked

        c = self.config
        run = {"model": c.model, "dataset": c.dataset, "epochs": c.epochs,
               "steps_per_epoch": self.steps_per_epoch}  # fmt: skip
        image = self.data.test[0][0]  # (image, label) from any dataset, image files included
        return SnapshotWriter(self.model, image, self.normalize, self.out_dir, c.explore_every, run)

    def _train_loader(self) -> DataLoader:
        """The training split's loader: an image folder's through worker processes (with its
        cache, if asked for), an in-memory dataset's as it is."""
        c = self.config
        if not isinstance(self.data.train, ImageFiles):
            return DataLoader(self.data.train, c.batch_size, shuffle=True, drop_last=False,
                              seed=c.seed, transform=self._train_transform())  # fmt: skip
        workers = _threads.default_workers() if c.workers is None else c.workers
        if c.cache:
            folder = c.cache_dir or self.out_dir / "image-cache"
            cache = attach_cache(self.data.train, folder, c.augment, workers, c.batch_size)
            self.log(f"image cache: {cache.path}")
        return StreamingLoader(
            self.data.train, c.batch_size, shuffle=True, seed=c.seed, transform=self.normalize,
            augment=c.augment, workers=workers, skip_bad_images=c.skip_bad_images,
        )  # fmt: skip

    def _train_transform(self):
        steps = []
        if self.config.augment in ("crop-flip", "crop"):
            size = self.data.image_size[0]
            steps.append(T.RandomCrop(size, padding=max(1, size // 8)))
            natural = self.config.dataset in ("cifar10", "image_folder")  # not digits or letters
            if natural and self.config.augment == "crop-flip":
                steps.append(T.RandomHorizontalFlip())
        steps.append(self.normalize)
        return T.Compose(steps)

    def _optimizer(self, params=None):
        return build_optimizer(self.config, self.model.parameters() if params is None else params)

    def _scheduler(self):
        """Stepped once per batch; the warm-up then the chosen decay, in batches."""
        c, steps = self.config, self.steps_per_epoch
        warmup = int(round(c.warmup_epochs * steps))
        total = c.epochs * steps - warmup
        if c.schedule == "cosine":
            decay = CosineAnnealingLR(self.optimizer, T_max=max(total, 1))
        elif c.schedule == "step":
            decay = StepLR(self.optimizer, step_size=8 * steps, gamma=0.96)
        else:
            decay = StepLR(self.optimizer, step_size=max(total, 1), gamma=1.0)
        if not warmup:
            return decay
        ramp = LinearWarmup(self.optimizer, warmup, start_factor=0.1)
        return SequentialLR(self.optimizer, [ramp, decay], milestones=[warmup])

    # ------------------------------------------------------------------ the loop
    def fit(self) -> list[dict]:
        """Train until ``config.epochs``; returns the per-epoch records. Ctrl-C stops at once
        and leaves the last epoch's checkpoint as it was. The process writing ``out_dir`` (rank
        0) holds its lock meanwhile (``tinynet.run_folder``): a run that holds it already, in
        another process, is refused with ``RunFolderBusy`` before anything is written."""
        c = self.config
        self.log(
            f"training {c.model} (width {self.model.config.width}, "
            f"{sum(p.size for p in self.model.parameters()):,} parameters) on {c.dataset}: "
            f"{len(self.data.train)} train / {len(self.data.test)} test images of "
            f"{self.data.image_shape}, {len(c.classes)} classes"
        )
        self._report_memory()
        lock = run_folder.hold(self.out_dir) if self.group.rank == 0 else contextlib.nullcontext()
        workers = getattr(self.loader, "workers", 0)  # their cores come off the step's (rule 4)
        with lock, _threads.reserve_for_workers(workers), _threads.share_cores() as self.cores:
            self.board = self._tensorboard()
            try:
                return self._fit_epochs()
            finally:
                self.cores = None
                if self.board is not None:
                    self.board.close()
                    self.board = None
                if isinstance(self.loader, StreamingLoader):
                    self.loader.close()

    def _tensorboard(self):
        """With config.tensorboard, rank 0's writer of out_dir/tensorboard/. A run that starts
        afresh removes an earlier run's event files there first (with or without the option,
        as it replaces the other files); a resumed one adds its own."""
        c = self.config
        if self.group.rank != 0:
            return None
        if not self.history:
            tensorboard_log.remove_events(self.out_dir)
        if not c.tensorboard:
            return None
        return tensorboard_log.TensorBoardLog(
            self.out_dir, c.histogram_every, c.mean, c.std, fresh=not self.history
        )

    def _report_memory(self) -> None:
        """Log the estimated peak memory of a step (tinynet.memory_estimate: every rank runs the
        dry forwards, as synchronised BatchNorm needs them all) and warn when the machine has
        less available."""
        c = self.config
        estimate = estimate_training_memory(
            self.model, (c.channels, c.input_size, c.input_size),
            -(-c.batch_size // self.group.size), self._loss, self._optimizer,
        )  # fmt: skip
        self.log(str(estimate))
        warning = memory_warning(estimate, available_memory())
        if warning:
            self.log(warning)

    def _loss(self, outputs, labels):
        """The model's training loss (the paper's: main + aux_weight x each auxiliary head)."""
        c = self.config
        return model_entry(c.model).loss(outputs, labels, c.aux_weight, c.label_smoothing)

    def _fit_epochs(self) -> list[dict]:
        c = self.config
        while self.loader.epoch < c.epochs:
            epoch = self.loader.epoch + 1
            start = time.perf_counter()
            train = self.train_epoch(epoch)
            seconds = time.perf_counter() - start
            test = self.evaluate(self.data.test)
            if not math.isfinite(test["loss"]):
                raise self._diverged(f"the test loss became {test['loss']} after epoch {epoch}")
            record = {
                "epoch": epoch,
                "train_loss": train["loss"],
                "train_top1": train["top1"],
                "test_loss": test["loss"],
                "test_top1": test["top1"],
                "test_top5": test["top5"],
                "lr": self.scheduler.get_last_lr()[0],
                "seconds": seconds,
                "images_per_second": train["images"] / seconds,
                "data_wait_s": train["data_wait_s"],  # the step waiting for its batches
            }
            if self.config.skip_bad_images and isinstance(self.loader, StreamingLoader):
                bad = [*self.loader.skipped, *self.data.train.skipped, *self.data.test.skipped]
                record["skipped_images"], record["bad_images"] = len(set(bad)), sorted(set(bad))
                self.loader.skipped, self.data.train.skipped, self.data.test.skipped = [], [], []
            self.history.append(record)
            if self.board is not None:
                self.board.epoch(record)
            self.log(
                f"epoch {epoch}/{c.epochs}: train loss {train['loss']:.4f}, test loss "
                f"{test['loss']:.4f}, test top-1 {100 * test['top1']:.2f}%, top-5 "
                f"{100 * test['top5']:.2f}% ({seconds:.1f} s, "
                f"{record['images_per_second']:.0f} img/s)"
            )
            if self.group.rank == 0:
                self.save()
        return self.history

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training split: the mean loss and top-1 accuracy of the main head."""
        c = self.config
        self.model.train()
        stream = distributed.output_stream(self.group)  # stderr on rank 0, nowhere on the others
        bar = ProgressBar(self.steps_per_epoch, f"epoch {epoch}/{c.epochs}", stream=stream,
                          waited=lambda: self.loader.data_wait)  # fmt: skip
        total_loss = correct = seen = 0
        # Each optimizer step takes c.accumulate batches; the epoch's last step what is left.
        batches, group = min(len(self.loader), self.steps_per_epoch * c.accumulate), []
        waited = 0.0  # the loader's data_wait when the last step ended
        for index, batch in enumerate(self.loader):
            if index == batches:
                break
            group.append(batch)
            if len(group) < c.accumulate and index + 1 < batches:
                continue
            if self.cores is not None:
                self.cores.rebalance()
            step = index // c.accumulate
            seams = _RunSeams(self, epoch, step, first_batch=index + 1 - len(group))
            lr = self.scheduler.get_last_lr()[0]  # the step's (the schedule moves after it)
            if self.board is not None and seams.global_step == 0:
                self.board.first_batch(group[0][0])
            where = f"epoch {epoch}, step {step + 1} of {self.steps_per_epoch}"
            with anomaly.at_step(seams.global_step + 1, where):  # what detect_anomaly() names
                accumulated_step(self.model, group, self._loss, self.optimizer, seams)
            total_loss += seams.batch_loss
            correct += seams.batch_correct
            images = sum(len(labels) for _, labels in group)
            if self.board is not None:
                self.board.step(
                    seams.global_step + 1, seams.batch_loss / images, seams.batch_correct / images,
                    lr, self.loader.data_wait - waited,
                )  # fmt: skip
            waited = self.loader.data_wait
            seen, group = seen + images, []
            bar.update(images, loss=total_loss / seen, acc=correct / seen)
        bar.close(loss=total_loss / seen, acc=correct / seen)
        return {"loss": total_loss / seen, "top1": correct / seen, "images": seen,
                "data_wait_s": self.loader.data_wait}  # fmt: skip

    def _log_gradients(self, record: dict) -> None:
        problem = nonfinite(record)
        if problem:
            raise self._diverged(f"{problem} at epoch {record['epoch']}, step {record['step']}")
        self.gradient_log.append(record)

    def _diverged(self, what: str) -> TrainingError:
        """The error that stops a diverged run; the last saved epoch stays as it was."""
        return TrainingError(
            f"{what}; training diverged: lower the learning rate (--lr, now "
            f"{self.config.learning_rate}) or add warm-up (--warmup-epochs); "
            f"{self.out_dir / CHECKPOINT} keeps the last good epoch, if any"
        )

    def evaluate(self, dataset, batch_size: int = 256) -> dict:
        """Loss, top-1 and top-5 accuracy on ``dataset`` in eval mode, with the averaged weights
        if EMA is on, and BatchNorm statistics measured for them on the training split's
        ``statistics_sample``, un-augmented (``ExponentialMovingAverage.update_bn``)."""
        if self.ema is not None:
            pick, train = statistics_sample(self.data.train), self.data.train
            starts = range(0, len(pick), batch_size)[: self.config.max_batches]
            batches = (train[pick[start : start + batch_size]][0] for start in starts)
            self.ema.update_bn(self.normalize(images) for images in batches)
        averaged = self.ema.average_parameters() if self.ema else contextlib.nullcontext()
        with averaged:
            return evaluate(
                self.model, dataset, self.normalize, batch_size, self.config.max_batches,
                self.group,
            )  # fmt: skip

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "loader": self.loader.state_dict(),
            "rng": default_generator().bit_generator.state,
            "history": self.history,
            "gradients": self.gradient_log,
        }

    def save(self) -> None:
        """Checkpoint, metrics and curves (and gradients) into out_dir, each written atomically."""
        io.save(self.state_dict(), self.out_dir / CHECKPOINT)
        # Each epoch's gradient records just before its own record (a stable sort keeps steps
        # in order), so the last line is always the last epoch's.
        records = sorted(
            [*self.gradient_log, *self.history], key=lambda r: (r["epoch"], "record" not in r)
        )
        with io.atomic_write(self.out_dir / METRICS, "w") as file:
            file.writelines(json.dumps(record, allow_nan=False) + "\n" for record in records)
        try:
            from tinynet.plot import plot_gradients, plot_history

            plot_history(self.history, self.out_dir / CURVES)
            if self.gradient_log:
                plot_gradients(self.gradient_log, self.out_dir / GRADIENTS)
        except ImportError as error:
            if len(self.history) == 1:
                self.log(f"note: no {CURVES}: {error}")

    @classmethod
    def resume(cls, out_dir, epochs: int | None = None, data=None, log=None) -> Trainer:
        """The run checkpointed in ``out_dir``, ready to continue (to ``epochs`` if given)."""
        path = Path(out_dir) / CHECKPOINT
        checkpoint, config = read_checkpoint(path)
        config.out_dir = str(out_dir)
        if epochs is not None:
            config.epochs = epochs
            config.validate()
        trainer = cls(config, data=data, log=log)
        trainer.load_state_dict(checkpoint, path)
        return trainer

    def load_state_dict(self, checkpoint: dict, source="the checkpoint") -> None:
        parts = {
            "model": self.model.load_state_dict,
            "optimizer": self.optimizer.load_state_dict,
            "scheduler": self.scheduler.load_state_dict,
            "ema": self._load_ema,
            "loader": self.loader.load_state_dict,
            "rng": lambda state: setattr(default_generator().bit_generator, "state", state),
        }
        for part, load in parts.items():
            try:
                load(checkpoint[part])
            except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
                raise ValueError(
                    f"{source} does not fit this run: its {part} state fails to load "
                    f"({type(error).__name__}: {error})"
                ) from error
        batch = self.loader.state_dict()["batch"]
        if batch % self.config.accumulate:
            raise ValueError(
                f"{source} stands at batch {batch} of an epoch, in the middle of an optimizer "
                f"step of {self.config.accumulate} accumulated batches: the gradients summed "
                f"so far are not checkpointed, so it cannot be resumed exactly (Trainer.save "
                f"writes at the end of an epoch, where every step is whole)"
            )
        self.history = list(checkpoint["history"])
        self.gradient_log = list(checkpoint.get("gradients", []))  # older checkpoints have none

    def _load_ema(self, state) -> None:
        if self.ema is not None and state is not None:
            self.ema.load_state_dict(state)


def evaluate(
    model, dataset, normalize=None, batch_size=256, max_batches=None, group=None
) -> dict:
    """Mean cross-entropy, top-1 and top-5 accuracy of ``model`` on ``dataset`` in eval mode
    (the model's mode is restored afterwards). ``group``: a ``tinynet.distributed``
    ProcessGroup whose ranks each evaluate their contiguous part of the samples."""
    group = group or distributed.ProcessGroup()
    if group.size > 1:  # the same samples as one process: max_batches of them, then sharded
        count = len(dataset) if max_batches is None else min(len(dataset), max_batches * batch_size)
        dataset, max_batches = distributed.DatasetShard(dataset, group.shard(count)), None
    was_training = model.training
    model.eval()
    plan = inference(model, trace_on_call=2)  # this call's weights; a shape met once: eager
    loss = top1 = top5 = seen = 0
    try:
        with no_grad():
            loader = DataLoader(dataset, batch_size, transform=normalize)
            for step, (images, labels) in enumerate(loader):
                if max_batches is not None and step == max_batches:
                    break
                logits = plan(images)
                loss += cross_entropy(logits, labels, reduction="sum").item()
                top1 += topk_correct(logits.data, labels, 1)
                top5 += topk_correct(logits.data, labels, 5)
                seen += len(labels)
    finally:
        model.train(was_training)
    if group.size > 1:
        loss, top1, top5, seen = group.allreduce(np.array([loss, top1, top5, seen], np.float64))
    return {"loss": loss / seen, "top1": top1 / seen, "top5": top5 / seen, "images": seen}


# The parts of a checkpoint and what each must be, checked before any is used.
_CHECKPOINT_PARTS = {
    "config": dict, "model": dict, "optimizer": dict, "scheduler": dict,
    "ema": (dict, type(None)), "loader": dict, "rng": dict, "history": list,
    "gradients": list,  # optional: checkpoints from before --log-gradients have none
}  # fmt: skip


def read_checkpoint(path) -> tuple[dict, TrainConfig]:
    """The contents of a checkpoint written by ``Trainer.save`` and its validated
    configuration; anything else (another file, a damaged or hostile one: parts missing or of
    the wrong kind, settings out of range, NaN or infinite numbers) is refused, naming the file,
    before any network is built from it."""
    checkpoint = io.load(path)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a tinynet training checkpoint (write one with `tinynet train`; "
            f"plain weights load with model.load_state_dict(tinynet.io.load(path)))"
        )
    for part, kind in _CHECKPOINT_PARTS.items():
        if not isinstance(checkpoint.get(part, [] if part == "gradients" else None), kind):
            found = type(checkpoint[part]).__name__ if part in checkpoint else "missing"
            raise ValueError(f"{path} is a damaged training checkpoint: its {part!r} is {found}")
    if not all(is_record(record) for record in checkpoint.get("gradients", [])):
        raise ValueError(f"{path} is a damaged training checkpoint: a gradient record is malformed")
    for name, value in _numbers(checkpoint):  # complex arrays io.load already refuses
        if not np.isfinite(value).all():
            raise ValueError(
                f"{path} is a damaged training checkpoint: {name} holds NaN or infinite values"
            )
    try:
        config = TrainConfig.from_dict(checkpoint["config"])
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} holds a configuration that is refused: {error}") from error
    return checkpoint, config


def _numbers(tree, prefix: str = ""):
    """(path, value) of every float array and float number in a loaded tree."""
    if isinstance(tree, (dict, list)):
        for key, value in tree.items() if isinstance(tree, dict) else enumerate(tree):
            yield from _numbers(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(tree, float) or isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        yield prefix, tree


def check_data_fits(config: TrainConfig, data: DataSplits, source: str) -> None:
    """Refuse data whose images or classes differ from those ``config``'s network was trained
    on (``source`` names it): a renamed or added class folder would silently permute labels."""
    channels = int(data.channels)
    classes = [str(c) for c in data.classes]
    if channels != config.channels:
        raise ValueError(
            f"{source} takes {config.channels}-channel images; {config.dataset} has "
            f"{channels}-channel ones"
        )
    if classes != config.classes:
        raise ValueError(
            f"{source} was trained on the classes {_listed(config.classes)}; {config.dataset} "
            f"has {_listed(classes)}: their labels would not match"
        )


def _listed(names: list[str], most: int = 20) -> str:
    shown = ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")
    return f"[{shown}]"


def load_trained_model(path, averaged: bool = True) -> tuple[nn.Module, TrainConfig]:
    """The network of a training checkpoint, in eval mode, and the run's configuration.

    averaged: use the Polyak-averaged (EMA) weights when the run kept them, as its evaluation
    did; otherwise the last weights.
    """
    checkpoint, config = read_checkpoint(path)
    model = build_model(config)
    weights = checkpoint["model"]
    if averaged and checkpoint.get("ema"):
        weights = checkpoint["ema"]["shadow"]
    try:
        model.load_state_dict(weights)
    except ValueError as error:
        raise ValueError(f"{path} does not fit its own configuration: {error}") from error
    return model.eval(), config
