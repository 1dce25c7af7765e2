"""--tensorboard: the event files a run writes into OUT/tensorboard/, read back with TensorBoard's
own reader (EventAccumulator), hold the numbers of metrics.jsonl, each step's loss, accuracy,
learning rate and data wait, histograms of the weights and gradients every N steps and the
first augmented batch; without tensorboardX the option is a one-line error naming the extra."""

import json
import subprocess
import sys

import numpy as np
import pytest

import tinynet
from tinynet.cli import main
from tinynet.data import DataSplits, TensorDataset, load_dataset
from tinynet.tensorboard_log import FOLDER
from tinynet.train import METRICS, TrainConfig, Trainer, build_model

from datafiles import needs_sklearn

pytest.importorskip("tensorboardX", reason="the tensorboard extra writes the event files")
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="TensorBoard's own reader checks the files (the dev extra installs it)",
)
pytestmark = needs_sklearn

EVERYTHING = {"scalars": 0, "histograms": 0, "images": 0}  # 0: keep every record


def read(folder):
    events = event_accumulator.EventAccumulator(str(folder), size_guidance=EVERYTHING)
    events.Reload()
    return events


def scalars(events, tag):
    return {e.step: e.value for e in events.Scalars(tag)}


@pytest.fixture(scope="module")
def data():
    """48 training images: 3 steps of 16 an epoch, every batch used (the data wait of a step
    sums to the epoch's only if no batch is read and left, as --max-batches does)."""
    train, test, classes = load_dataset("digits")
    return DataSplits(TensorDataset(*train[:48]), TensorDataset(*test[:32]), classes)


def config(out, **changes):
    options = dict(width=0.125, batch_size=16, epochs=2, ema_decay=None,
                   tensorboard=True, histogram_every=2, out_dir=str(out))  # fmt: skip
    return TrainConfig(**{**options, **changes})


def quiet(message):
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """A 2-epoch run of 3 steps an epoch, with its event files read back."""
    out = tmp_path_factory.mktemp("board")
    trainer = Trainer(config(out), data, log=quiet)
    trainer.fit()
    records = [json.loads(line) for line in (out / METRICS).read_text().splitlines()]
    return trainer, records, read(out / FOLDER)


def test_each_epoch_s_numbers_are_those_of_metrics_jsonl(run):
    trainer, records, events = run
    assert [r["epoch"] for r in records] == [1, 2]
    keys = [k for k in records[0] if k != "epoch" and isinstance(records[0][k], (int, float))]
    assert {"train_loss", "test_top1", "test_top5", "lr", "data_wait_s"} <= set(keys)
    for key in keys:
        got = scalars(events, f"epoch/{key}")
        assert got == {r["epoch"]: np.float32(r[key]) for r in records}, key  # stored as float32


def test_each_step_s_loss_accuracy_learning_rate_and_data_wait(run):
    trainer, records, events = run
    loss, top1, lr = (scalars(events, f"train/{k}") for k in ("loss", "top1", "lr"))
    wait = scalars(events, "train/data_wait_s")
    assert sorted(loss) == sorted(top1) == sorted(lr) == sorted(wait) == [1, 2, 3, 4, 5, 6]
    for epoch, steps in ((1, [1, 2, 3]), (2, [4, 5, 6])):
        record = records[epoch - 1]
        # every step has 16 images: the epoch's mean is the mean of its steps'
        np.testing.assert_allclose(np.mean([loss[s] for s in steps]), record["train_loss"], 1e-6)
        np.testing.assert_allclose(np.mean([top1[s] for s in steps]), record["train_top1"], 1e-6)
        np.testing.assert_allclose(sum(wait[s] for s in steps), record["data_wait_s"], 1e-5, 1e-6)
    assert lr[1] == np.float32(0.1)  # SGD's default, before the cosine schedule moves
    assert lr[4] == np.float32(records[0]["lr"])  # the record's lr is the next step's
    assert lr[1] > lr[4] > lr[6]


def test_histograms_of_every_weight_and_gradient_every_n_steps(run, data):
    trainer, records, events = run
    names = [name for name, _ in trainer.model.named_parameters()]
    tags = events.Tags()["histograms"]
    assert sorted(tags) == sorted(
        [f"weights/{n}" for n in names] + [f"gradients/{n}" for n in names]
    )
    assert [e.step for e in events.Histograms(f"weights/{names[0]}")] == [1, 3, 5]
    # step 1's weights are the network as initialised by the run's seed
    tinynet.manual_seed(trainer.config.seed)
    initial = dict(build_model(trainer.config).named_parameters())
    for name in (names[0], names[-1]):
        histogram = events.Histograms(f"weights/{name}")[0].histogram_value
        values = initial[name].data.astype(np.float64)
        assert histogram.num == values.size
        assert histogram.min == values.min() and histogram.max == values.max()
        np.testing.assert_allclose(histogram.sum, values.sum(), rtol=1e-6, atol=1e-6)
    gradient = events.Histograms(f"gradients/{names[0]}")[0].histogram_value
    assert gradient.num == initial[names[0]].size and gradient.max > gradient.min


def test_the_first_augmented_batch_as_a_grid(run, data):
    import io

    from PIL import Image

    trainer, records, events = run
    (image,) = events.Images("augmented_batch")
    grid = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
    # 16 gray 32x32 images, 8 to a row, drawn in RGB
    assert grid.shape[:2] == (2 * 32, 8 * 32)
    # the first tile is the first batch's first image, augmented, un-normalised
    again = Trainer(config(trainer.out_dir / "again", tensorboard=False), data, log=quiet)
    images, _ = next(iter(again.loader))
    c = again.config
    first = np.clip(images[0, 0] * c.std[0] + c.mean[0], 0, 1)
    np.testing.assert_allclose(grid[:32, :32, 0] / 255, first, atol=1 / 255 + 1e-6)


def test_a_resumed_run_adds_its_steps_and_a_new_run_replaces_the_files(tmp_path, data):
    Trainer(config(tmp_path, epochs=1), data, log=quiet).fit()
    Trainer.resume(tmp_path, epochs=2, data=data, log=quiet).fit()
    events = read(tmp_path / FOLDER)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert len(events.Images("augmented_batch")) == 1  # the run's first batch only

    Trainer(config(tmp_path, epochs=1), data, log=quiet).fit()  # afresh, as --overwrite
    events = read(tmp_path / FOLDER)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]

    Trainer(config(tmp_path, epochs=1, tensorboard=False), data, log=quiet).fit()
    assert not list((tmp_path / FOLDER).iterdir())  # no stale curves beside the new run's files


def test_the_command_writes_the_files_beside_metrics_jsonl(tmp_path, capsys):
    argv = ["train", "--width", "0.125", "--batch-size", "16", "--max-batches", "2", "--epochs",
            "1", "--tensorboard", "--histogram-every", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    events = read(tmp_path / FOLDER)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert len(events.Histograms("weights/fc.weight")) == 2


def test_without_tensorboardx_the_option_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
    code = main(["train", "--tensorboard", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0] == (
        "tinynet train: error: --tensorboard needs the tensorboardX package: pip install "
        "'tinynet[tensorboard]' (or: pip install tensorboardX)"
    )
    assert not (tmp_path / METRICS).exists()


def test_the_histogram_interval_is_checked():
    with pytest.raises(ValueError, match="histogram_every must be a positive int"):
        TrainConfig(histogram_every=0)


def test_a_histogram_interval_without_tensorboard_is_named(tmp_path, capsys):
    code = main(["train", "--histogram-every", "5", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [
        "tinynet train: error: --histogram-every 5 sets how often --tensorboard writes "
        "histograms; add --tensorboard, or drop it"
    ]
    assert not any(tmp_path.iterdir())


def test_neither_tinynet_nor_tensorboard_s_reader_imports_what_they_need_not():
    code = (
        "import sys, tinynet, tinynet.train, tinynet.cli\n"
        "assert 'tensorboardX' not in sys.modules, 'import tinynet imported tensorboardX'\n"
        "from tensorboard.backend.event_processing import event_accumulator\n"
        "assert 'tensorflow' not in sys.modules, 'the reader imported TensorFlow'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
