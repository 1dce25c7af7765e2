"""--accumulate K: K batches' gradients summed before one optimizer step (tinynet.step).

For a network without BatchNorm the step equals one step on the K batches as one batch, to
float64 rounding, over several steps of SGD (momentum, Nesterov, weight decay) and Adam; with
one batch it is the textbook training_step to the bit. The Trainer counts optimizer steps, and
a resumed run repeats the uninterrupted one exactly; a checkpoint in the middle of a step is
refused."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinynet
from tinynet import nn
from tinynet.data import DataSplits, TensorDataset, load_dataset
from tinynet.functional import cross_entropy
from tinynet.models.googlenet import Inception
from tinynet.optim import SGD, Adam
from tinynet.step import PLAIN, StepSeams, accumulated_step, training_step
from tinynet.train import CHECKPOINT, METRICS, SettingError, TrainConfig, Trainer

from datafiles import needs_sklearn

# float64 parameters and images: the only difference between the two ways is the order in which
# the per-image terms of the gradient are summed, a few units of the last place.
FLOAT64 = dict(rtol=1e-12, atol=1e-14)


def network(seed: int = 0) -> nn.Module:
    """A small network of the family without BatchNorm (or Dropout): conv, an Inception block,
    LRN, pooling and a linear head, in float64."""
    tinynet.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.LocalResponseNorm(5),
        Inception(8, 4, 4, 6, 2, 2, 2),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(14, 5),
    ).double()


def batches(sizes, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((n, 3, 8, 8)), rng.integers(0, 5, n).astype(np.int64)) for n in sizes
    ]


def joined(group):
    return np.concatenate([x for x, _ in group]), np.concatenate([y for _, y in group])


OPTIMIZERS = {
    "sgd": lambda params: SGD(params, 0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "adam": lambda params: Adam(params, 1e-2, weight_decay=1e-2),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("sizes", [(4, 4), (3, 3, 3), (5, 2)])  # (5, 2): an epoch's short tail
def test_accumulated_steps_equal_steps_on_the_joined_batches(optimizer, sizes):
    small, big = network(), network()
    small_opt, big_opt = (
        OPTIMIZERS[optimizer](small.parameters()),
        OPTIMIZERS[optimizer](big.parameters()),
    )
    for step in range(3):  # momentum, Adam's moments and weight decay carry over the steps
        group = batches(sizes, seed=step)
        results = accumulated_step(small, group, cross_entropy, small_opt)
        big_loss, _ = training_step(big, *joined(group), cross_entropy, big_opt)
        losses = np.array([loss.item() for loss, _ in results])
        # the reported losses are each batch's own mean; weighted, the joined batch's mean
        np.testing.assert_allclose(
            losses @ np.array(sizes) / sum(sizes), big_loss.item(), **FLOAT64
        )
        for (name, p), q in zip(small.named_parameters(), big.parameters()):
            np.testing.assert_allclose(p.grad, q.grad, **FLOAT64, err_msg=f"{name}.grad")
            np.testing.assert_allclose(p.data, q.data, **FLOAT64, err_msg=name)
    assert not np.array_equal(small[0].weight.data, network()[0].weight.data)  # it did move


def test_one_batch_is_the_textbook_step_to_the_bit():
    a, b = network(), network()
    opt_a, opt_b = SGD(a.parameters(), 0.1, momentum=0.9), SGD(b.parameters(), 0.1, momentum=0.9)
    for step in range(2):
        ((images, labels),) = batches([6], seed=step)
        accumulated_step(a, [(images, labels)], cross_entropy, opt_a)
        training_step(b, images, labels, cross_entropy, opt_b)
    for p, q in zip(a.parameters(), b.parameters()):
        assert np.array_equal(p.data, q.data)


def test_the_seams_are_called_per_batch_and_once_per_step():
    calls = []

    class Recorder(StepSeams):
        def local_rows(self, images, labels):
            calls.append(("rows", len(labels)))
            return images[1:], labels[1:]  # as if another process took the first row

        def after_backward(self, loss, outputs, labels):
            calls.append(("after_backward", len(labels)))

        def before_update(self):
            calls.append(("before_update",))

        def after_update(self):
            calls.append(("after_update",))

    model = network()
    accumulated_step(
        model, batches([3, 4]), cross_entropy, SGD(model.parameters(), 0.1), Recorder()
    )
    assert calls == [
        ("rows", 3), ("after_backward", 2), ("rows", 4), ("after_backward", 3),
        ("before_update",), ("after_update",),
    ]  # fmt: skip
    assert isinstance(PLAIN, StepSeams)


def test_no_batches_is_refused():
    model = network()
    with pytest.raises(ValueError, match="at least one"):
        accumulated_step(model, [], cross_entropy, SGD(model.parameters(), 0.1))


# ------------------------------------------------------------------ the Trainer
def test_accumulate_must_be_a_positive_int():
    for bad in (0, -2, 1.5, True):
        with pytest.raises(SettingError, match="accumulate must be a positive int"):
            TrainConfig(accumulate=bad)


@pytest.fixture(scope="module")
def data():
    train, test, classes = load_dataset("digits")
    return DataSplits(TensorDataset(*train[:88]), TensorDataset(*test[:32]), classes)


def tiny(tmp_path, **changes) -> TrainConfig:
    options = dict(width=0.125, batch_size=16, epochs=2, ema_decay=None, out_dir=str(tmp_path))
    return TrainConfig(**{**options, **changes})


def quiet(message):
    pass


@needs_sklearn
def test_the_trainer_counts_optimizer_steps(tmp_path, data):
    # 88 images in batches of 16: 6 batches (the last of 8), 2 steps of 3 batches each
    trainer = Trainer(tiny(tmp_path, accumulate=3, schedule="cosine"), data, log=quiet)
    assert trainer.steps_per_epoch == 2
    steps = []
    trainer.optimizer.step = (lambda step: lambda: (steps.append(1), step())[1])(
        trainer.optimizer.step
    )
    record = trainer.train_epoch(1)
    assert len(steps) == 2 and record["images"] == 88
    assert trainer.scheduler.last_epoch == 2  # the schedule stepped once per optimizer step
    # 4 batches with --accumulate 3: a step of 3 and the epoch's last step of the 1 left
    assert (
        Trainer(tiny(tmp_path, batch_size=24, accumulate=3), data, log=quiet).steps_per_epoch == 2
    )
    # --max-batches counts optimizer steps
    assert (
        Trainer(tiny(tmp_path, accumulate=2, max_batches=1), data, log=quiet).steps_per_epoch == 1
    )


@needs_sklearn
def test_ctrl_c_in_the_middle_of_a_step_resumes_exactly(tmp_path, data, monkeypatch):
    """Checkpoints are written at the end of an epoch, where every step is whole: a run stopped
    between two batches of one step resumes from its last epoch and repeats the uninterrupted
    run to the bit."""
    # The same threads for both runs: other runs of this user would otherwise change how many
    # this one gets (tinynet._threads.share_cores), and with them the order of float32 sums.
    monkeypatch.setenv("TINYNET_NUM_THREADS", "1")
    whole = Trainer(tiny(tmp_path / "whole", accumulate=2), data, log=quiet)
    expected = whole.fit()

    interrupted = Trainer(tiny(tmp_path / "split", accumulate=2), data, log=quiet)
    forwards = []

    def stop_in_epoch_2_between_two_batches_of_a_step(module, inputs, output):
        if module.training and len(inputs[0]) in (16, 8):  # not the memory estimate's 2 and 3
            forwards.append(1)
            if len(forwards) == 6 + 2:  # 6 batches in epoch 1; the 2nd batch of epoch 2's step 1
                raise KeyboardInterrupt

    interrupted.model.register_forward_hook(stop_in_epoch_2_between_two_batches_of_a_step)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = Trainer.resume(tmp_path / "split", data=data, log=quiet)
    assert [r["epoch"] for r in resumed.history] == [1]
    got = resumed.fit()
    for a, b in zip(got, expected, strict=True):
        for key in ("train_loss", "train_top1", "test_loss", "test_top1", "lr"):
            assert a[key] == b[key], (a["epoch"], key)
    for (name, p), q in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert np.array_equal(p, q), name


@needs_sklearn
def test_a_checkpoint_in_the_middle_of_a_step_is_refused(tmp_path, data):
    Trainer(tiny(tmp_path, accumulate=2, epochs=1), data, log=quiet).fit()
    checkpoint = tinynet.load(tmp_path / CHECKPOINT)
    checkpoint["loader"] = {**checkpoint["loader"], "epoch": 1, "batch": 3}  # of 6
    with pytest.raises(ValueError, match="middle of an optimizer step of 2 accumulated batches"):
        Trainer(tiny(tmp_path, accumulate=2, epochs=2), data, log=quiet).load_state_dict(checkpoint)
    checkpoint["loader"]["batch"] = 4  # a step's boundary is fine
    Trainer(tiny(tmp_path, accumulate=2, epochs=2), data, log=quiet).load_state_dict(checkpoint)


# ------------------------------------------------------------------ under mpiexec
ACCUMULATING = """
import sys
from tinynet.train import TrainConfig, Trainer
Trainer(TrainConfig(width=0.0625, batch_size=12, accumulate=2, max_batches=1, epochs=1,
                    out_dir=sys.argv[1], sync_batchnorm=True, ema_decay=None)).fit()
"""


@needs_sklearn
def test_two_ranks_accumulating_follow_one_process(tmp_path):
    """Each rank takes its rows of each batch (StepSeams.local_rows) and backpropagates its
    share of it; the gradients summed over both batches are summed over the ranks once, before
    the update. With synchronised BatchNorm two ranks compute what one process computes, to
    float32 rounding (measured: 2e-7 of the weights' norm after one step of two batches). One
    step: float32 differences grow along a trajectory through ReLU's and max-pool's kinks (4e-5
    after two steps without accumulation), which test_distributed.py's kink-free trajectory
    handles."""
    pytest.importorskip("mpi4py", reason="the `mpi` extra (mpi4py, MPICH) is not installed")
    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.defpath}")
    if mpiexec is None:
        pytest.skip("mpi4py is installed but no mpiexec is on the PATH")
    models = {}
    for ranks in (1, 2):
        out = tmp_path / f"ranks-{ranks}"
        command = [sys.executable, "-c", ACCUMULATING, str(out)]
        if ranks > 1:
            command = [mpiexec, "-n", str(ranks), *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        models[ranks] = tinynet.load(out / CHECKPOINT)["model"]
        records = [json.loads(line) for line in (out / METRICS).read_text().splitlines()]
        models[ranks]["train_loss"] = np.array(records[0]["train_loss"])
    one, two = models[1], models[2]
    assert abs(one["train_loss"] - two["train_loss"]) <= 1e-5 * abs(one["train_loss"])
    keys = [k for k in one if one[k].dtype.kind == "f"]
    first = np.concatenate([np.ravel(one[k]).astype(np.float64) for k in keys])
    second = np.concatenate([np.ravel(two[k]).astype(np.float64) for k in keys])
    assert np.linalg.norm(first - second) <= 1e-5 * np.linalg.norm(first)
