"""tinynet.train: the Trainer's files, exact resumption, Ctrl-C, divergence, configuration errors,
and the metrics and progress helpers it uses. Runs are a few batches of a narrow network."""

import io as stdio
import json

import numpy as np
import pytest

import tinynet
from tinynet.data import DataLoader, DatasetError, DataSplits, TensorDataset, load_dataset
from tinynet.data.transforms import Normalize
from tinynet.metrics import topk_correct
from tinynet.models.registry import MODELS
from tinynet.nn import BatchNorm2d
from tinynet.progress import ProgressBar
from tinynet.train import (
    CHECKPOINT,
    CURVES,
    DEFAULT_LR,
    METRICS,
    TrainConfig,
    Trainer,
    TrainingError,
    evaluate,
    load_trained_model,
)

from datafiles import installed, needs_sklearn

pytestmark = needs_sklearn  # the runs below train on the bundled digits


def tiny(tmp_path, **changes) -> TrainConfig:
    """A run of a few 16-image batches of a width-0.125 small GoogLeNet on digits."""
    options = dict(width=0.125, batch_size=16, max_batches=3, epochs=2, out_dir=str(tmp_path))
    return TrainConfig(**{**options, **changes})


def quiet(message):
    pass


@pytest.fixture(scope="module")
def data():
    """The bundled digits, cut to 96 training and 64 test images so a tiny run is quick."""
    train, test, classes = load_dataset("digits")
    return DataSplits(TensorDataset(*train[:96]), TensorDataset(*test[:64]), classes)


@pytest.mark.parametrize("split", ["train", "test"])
def test_data_given_with_an_empty_split_is_a_one_line_error(tmp_path, data, split):
    empty = TensorDataset(*(a[:0] for a in getattr(data, split).arrays))
    given = data._replace(**{split: empty})
    with pytest.raises(DatasetError, match=f"^Trainer: the {split} split in the data given has no"):
        Trainer(tiny(tmp_path), given, log=quiet)


def weights(trainer):
    return {k: v.copy() for k, v in trainer.model.state_dict().items()}


# ------------------------------------------------------------------ a run and its files
def test_a_run_writes_checkpoint_metrics_and_curves(tmp_path, data):
    history = Trainer(tiny(tmp_path), data, log=quiet).fit()
    assert [record["epoch"] for record in history] == [1, 2]
    lines = (tmp_path / METRICS).read_text().splitlines()
    assert [json.loads(line) for line in lines] == history
    for record in history:
        assert np.isfinite(record["train_loss"]) and 0 <= record["test_top1"] <= 1
        assert record["test_top1"] <= record["test_top5"] <= 1
    if installed("matplotlib"):
        assert (tmp_path / CURVES).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = tinynet.load(tmp_path / CHECKPOINT)
    assert checkpoint["config"]["classes"] == [str(d) for d in range(10)]
    assert checkpoint["loader"]["epoch"] == 2
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_checkpoint_gives_back_the_evaluated_network(tmp_path, data):
    trainer = Trainer(tiny(tmp_path, epochs=1), data, log=quiet)
    [record] = trainer.fit()
    model, config = load_trained_model(tmp_path / CHECKPOINT)  # the EMA weights, as evaluated
    assert not model.training and config.input_size == 32 and config.channels == 1
    again = evaluate(model, trainer.data.test, trainer.normalize, max_batches=config.max_batches)
    assert again["top1"] == record["test_top1"] and again["loss"] == pytest.approx(
        record["test_loss"], rel=1e-6
    )
    last, _ = load_trained_model(tmp_path / CHECKPOINT, averaged=False)
    for name, value in last.state_dict().items():
        np.testing.assert_array_equal(value, trainer.model.state_dict()[name], err_msg=name)


def test_the_averaged_network_has_batchnorm_statistics_of_its_own_weights(tmp_path, data):
    """After a first epoch at learning rate 0.1 the running statistics lag the weights far
    behind (hundreds of standard deviations here); the averaged network a run evaluates and
    checkpoints has them measured for its own weights on the training images (all 96 here)."""
    Trainer(tiny(tmp_path, epochs=1), data, log=quiet).fit()
    model, config = load_trained_model(tmp_path / CHECKPOINT)
    inputs = {}
    for module in model.modules():
        if isinstance(module, BatchNorm2d):
            module.register_forward_hook(
                lambda module, args, output: inputs.__setitem__(module, args[0].data)
            )
    loader = DataLoader(data.train, len(data.train), transform=Normalize(config.mean, config.std))
    with tinynet.no_grad():
        model(next(iter(loader))[0])
    assert len(inputs) == 57  # every BatchNorm but the aux heads', which eval mode does not run
    for norm, x in inputs.items():
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
        assert np.all(np.abs(norm.running_mean - mean) < 0.02 * np.sqrt(var))
        np.testing.assert_allclose(norm.running_var, var, rtol=0.02)


@pytest.mark.parametrize("stream", [True, False])
def test_batchnorm_statistics_are_measured_on_every_class_of_a_folder_listed_class_by_class(
    tmp_path, stream
):
    """A folder with train/ and test/ lists its images class by class: 10 classes of 60 images
    put classes 0-7 and 32 images of 8 first, and statistics measured on the first 512 alone
    cost the digits written as JPEGs 4 points of test top-1 (issue 26). Each image here is
    flat, 20 x its class, so the normalised pixels the measurement sees name their class."""
    from PIL import Image

    for split, count in (("train", 60), ("test", 2)):
        for k in range(10):
            (tmp_path / split / str(k)).mkdir(parents=True)
            for i in range(count):
                Image.new("L", (8, 8), 20 * k).save(tmp_path / split / str(k) / f"{i}.png")
    config = tiny(tmp_path / "run", dataset="image_folder", data_dir=str(tmp_path), image_size=8)
    data = None if stream else load_dataset("image_folder", tmp_path, image_size=8)
    trainer = Trainer(config, data, log=quiet)
    seen = []
    trainer.ema.update_bn = lambda batches: seen.extend(  # inputs, or (input, target) pairs
        batch[0] if isinstance(batch, tuple) else batch for batch in batches
    )
    trainer.evaluate(trainer.data.test)
    pixels = np.concatenate(seen)[:, 0, 0, 0] * config.std[0] + config.mean[0]
    counts = np.bincount(np.rint(pixels * 255 / 20).astype(int), minlength=10)
    assert counts.sum() == 512 and counts.min() >= 30, counts  # 51.2 each on average


# ------------------------------------------------------------------ resuming exactly
def interrupt_at_step(trainer, step):
    """Make the trainer's optimiser raise KeyboardInterrupt (as Ctrl-C) at its ``step``-th step."""
    original, calls = trainer.optimizer.step, []

    def step_or_interrupt():
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        original()

    trainer.optimizer.step = step_or_interrupt


@pytest.mark.parametrize(
    "changes",
    [{}, {"optimizer": "adamw", "schedule": "step", "warmup_epochs": 1, "ema_decay": None}],
    ids=["sgd-cosine-ema", "adamw-warmup-step"],
)
def test_a_resumed_run_repeats_the_uninterrupted_one_exactly(tmp_path, changes, data):
    whole = Trainer(tiny(tmp_path / "whole", **changes), data, log=quiet)
    expected = whole.fit()

    interrupted = Trainer(tiny(tmp_path / "split", **changes), data, log=quiet)
    interrupt_at_step(interrupted, interrupted.steps_per_epoch + 2)  # inside epoch 2
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = Trainer.resume(tmp_path / "split", data=data, log=quiet)
    assert [r["epoch"] for r in resumed.history] == [1]
    got = resumed.fit()

    assert len(got) == len(expected) == 2
    for a, b in zip(got, expected):  # dropout, crops, shuffling, lr: all continue as they were
        for key in ("train_loss", "train_top1", "test_loss", "test_top1", "lr"):
            assert a[key] == b[key], (a["epoch"], key)
    for name, value in weights(whole).items():
        np.testing.assert_array_equal(resumed.model.state_dict()[name], value, err_msg=name)


def test_resume_refuses_what_is_not_a_training_checkpoint(tmp_path):
    tinynet.save({"w": np.ones(2)}, tmp_path / CHECKPOINT)
    with pytest.raises(ValueError, match="is not a tinynet training checkpoint"):
        Trainer.resume(tmp_path)
    with pytest.raises(ValueError, match="is not a tinynet training checkpoint"):
        load_trained_model(tmp_path / CHECKPOINT)


def test_a_checkpoint_whose_weights_do_not_fit_is_named(tmp_path, data):
    Trainer(tiny(tmp_path, epochs=1), data, log=quiet).fit()
    checkpoint = tinynet.load(tmp_path / CHECKPOINT)
    checkpoint["model"]["fc.weight"] = np.zeros((3, 3), np.float32)
    checkpoint["ema"] = None
    tinynet.save(checkpoint, tmp_path / CHECKPOINT)
    with pytest.raises(ValueError, match=r"(?s)checkpoint.npz does not fit .*fc.weight"):
        load_trained_model(tmp_path / CHECKPOINT)
    with pytest.raises(ValueError, match=r"(?s)checkpoint.npz does not fit this run: .*fc\.w"):
        Trainer.resume(tmp_path, data=data, log=quiet)


def test_a_checkpoint_whose_average_lacks_its_step_count_is_refused(tmp_path, data):
    Trainer(tiny(tmp_path, epochs=1), data, log=quiet).fit()
    checkpoint = tinynet.load(tmp_path / CHECKPOINT)
    del checkpoint["ema"]["num_updates"]  # the EMA's warm-up could not go on where it was
    tinynet.save(checkpoint, tmp_path / CHECKPOINT)
    with pytest.raises(ValueError, match=r"missing \['num_updates'\]"):
        Trainer.resume(tmp_path, data=data, log=quiet)


# ------------------------------------------------------------------ interruptions and failures
def test_ctrl_c_leaves_the_last_epochs_checkpoint_as_it_was(tmp_path, data):
    Trainer(tiny(tmp_path, epochs=1), data, log=quiet).fit()
    before = {name: (tmp_path / name).read_bytes() for name in (CHECKPOINT, METRICS)}
    trainer = Trainer.resume(tmp_path, epochs=3, data=data, log=quiet)
    interrupt_at_step(trainer, 2)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_while_saving_leaves_the_previous_files(tmp_path, monkeypatch, data):
    trainer = Trainer(tiny(tmp_path, epochs=2), data, log=quiet)
    trainer.fit()
    before = (tmp_path / CHECKPOINT).read_bytes()
    trainer.config.epochs = 3

    def interrupted_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_diverging_run_stops_with_advice(tmp_path, data):
    trainer = Trainer(tiny(tmp_path, lr=1e30, ema_decay=None), data, log=quiet)
    with pytest.raises(TrainingError, match=r"the loss became (nan|inf).*lower the learning rate"):
        trainer.fit()


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("model", "resnet", "model must be one of"),
        ("optimizer", "lbfgs", "optimizer must be one of"),
        ("schedule", "poly", "schedule must be one of"),
        ("epochs", 0, r"epochs must be an int in \[1, 1,000,000\]; got 0"),
        ("batch_size", 2.5, "batch_size must be a positive int; got 2.5"),
        ("lr", -0.1, "lr must be a finite number > 0; got -0.1"),
        ("warmup_epochs", 2, r"warmup_epochs must be in \[0, epochs\); got 2"),
        ("ema_decay", 1.0, r"ema_decay must be in \(0, 1\); got 1.0"),
        ("label_smoothing", 1.0, r"label_smoothing must be in \[0, 1\)"),
    ],
)
def test_bad_settings_are_named(field, value, expected):
    with pytest.raises(ValueError, match=expected):
        TrainConfig(**{"epochs": 2, field: value})


def test_an_unknown_dataset_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; known: cifar10, digits"):
        Trainer(tiny(tmp_path, dataset="svhn"), log=quiet)


# ------------------------------------------------------------------ metrics and progress
def test_topk_correct_by_hand():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 1])
    assert topk_correct(logits, labels, 1) == 1
    assert topk_correct(logits, labels, 2) == 2  # row 2: label 1 is second; row 1: 2 is third
    assert topk_correct(logits, labels, 5) == 3  # k >= classes: every row counts
    with pytest.raises(ValueError, match=r"logits must be \(N, C\) and labels \(N,\); got"):
        topk_correct(logits, labels[:2], 1)


def test_the_progress_bar_prints_one_line_per_epoch_when_not_a_terminal():
    stream = stdio.StringIO()
    bar = ProgressBar(4, "epoch 1/2", stream=stream)
    for _ in range(4):
        bar.update(16, loss=0.5)
    bar.close(loss=0.25, acc=0.75)
    [line] = stream.getvalue().splitlines()
    assert line.startswith("epoch 1/2 [" + "#" * 24 + "] 4/4  loss 0.25  acc 0.75  ")
    assert "img/s" in line


def test_evaluate_restores_the_mode_and_counts_every_image():
    model = tinynet.models.googlenet_small(num_classes=3, in_channels=1, width=0.125)
    images = np.random.default_rng(0).normal(size=(5, 1, 32, 32)).astype(np.float32)
    result = evaluate(model.train(), TensorDataset(images, np.array([0, 1, 2, 0, 1])), None, 2)
    assert model.training and result["images"] == 5 and result["top5"] == 1.0


# ------------------------------------------------------------------ per-model recipes
def test_a_models_recipe_fills_what_the_options_leave_open():
    """TrainConfig.for_model: the registry's recipe for the model, under the options given; an
    optimizer given drops the recipe's learning rate (measured for the recipe's optimizer)."""
    recipe = MODELS["inception_v4_small"].recipe
    assert recipe["lr"] != TrainConfig().learning_rate  # a recipe that changes something
    config = TrainConfig.for_model(model="inception_v4_small")
    assert {name: getattr(config, name) for name in recipe} == recipe
    config = TrainConfig.for_model(model="inception_v4_small", epochs=3, lr=0.5)
    assert (config.epochs, config.learning_rate, config.batch_size) == (
        3, 0.5, recipe["batch_size"]
    )  # fmt: skip
    config = TrainConfig.for_model(model="inception_v4_small", optimizer="adam")
    assert config.learning_rate == DEFAULT_LR["adam"]
    assert TrainConfig.for_model() == TrainConfig()  # the main job's network has no recipe
    config = TrainConfig.for_model(model="inception_v4_small", epochs=1)  # too short to warm up
    assert (config.epochs, config.warmup_epochs, config.lr) == (1, 0.0, recipe["lr"])
    with pytest.raises(ValueError, match=r"warmup_epochs must be in \[0, epochs\); got 1.0"):
        TrainConfig.for_model(model="inception_v4_small", epochs=1, warmup_epochs=1.0)
    with pytest.raises(ValueError, match="model must be one of .*; got 'v5'"):
        TrainConfig.for_model(model="v5")
