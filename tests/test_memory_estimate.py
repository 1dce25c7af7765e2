"""tinynet.memory_estimate: the estimated peak memory of a training step against the peak
measured in a process of its own (tests/step_memory.py), the dry forwards leaving the model
and the random generator as they were, and the estimate and the warning in `tinynet summary`
and `tinynet train`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinynet
from tinynet.cli import main
from tinynet.memory_estimate import (
    MemoryEstimate,
    available_memory,
    estimate_training_memory,
    human_bytes,
    memory_warning,
)
from tinynet.models.registry import model_entry
from tinynet.optim import SGD, Adam

from datafiles import needs_sklearn

STEP_MEMORY = Path(__file__).with_name("step_memory.py")
# The estimate against the measured peak: within 25% (measured: +15% at 16 images, +2% at 64;
# the part that does not grow with the batch, kernels' small scratch and NumPy's temporaries,
# weighs most at the smaller batch).
TOLERANCE = 0.25


def small():
    entry = model_entry("small")
    tinynet.manual_seed(0)
    model = entry.build(in_channels=3, num_classes=10, width=0.125)
    return model, lambda outputs, labels: entry.loss(outputs, labels, 0.3, 0.0)


def sgd(params):
    return SGD(params, 0.1, momentum=0.9)


@pytest.mark.skipif(
    not os.path.exists("/proc/self/clear_refs"), reason="the peak is read from Linux's /proc"
)
@pytest.mark.parametrize("batch", [16, 64])
def test_the_estimate_is_near_the_measured_peak_of_a_step(batch):
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = subprocess.run(
        [sys.executable, str(STEP_MEMORY), "small", "0.25", "32", str(batch)],
        capture_output=True, text=True, timeout=600, env=environment,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    ratio = got["estimate"] / got["measured"]
    assert abs(ratio - 1) <= TOLERANCE, got


def test_the_dry_forwards_leave_the_model_and_the_generator_as_they_were():
    model, loss = small()
    weights = {k: v.copy() for k, v in model.state_dict().items()}  # BatchNorm's statistics too
    model.eval()
    state = tinynet.rng.default_generator().bit_generator.state
    estimate_training_memory(model, (3, 32, 32), 8, loss, sgd)
    assert not model.training
    assert tinynet.rng.default_generator().bit_generator.state == state
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, weights[name], err_msg=name)
    assert all(p.grad is None for p in model.parameters())


def test_the_parts_follow_the_batch_and_the_optimizer():
    model, loss = small()
    at = {b: estimate_training_memory(model, (3, 32, 32), b, loss, sgd) for b in (8, 16, 32)}
    weights = sum(p.data.nbytes for p in model.parameters())
    assert at[8].parameters == at[8].gradients == weights
    # the activations are a + b·N: equal steps in the batch, equal steps in bytes
    assert at[32].activations - at[16].activations == 2 * (at[16].activations - at[8].activations)
    assert at[16].activations > at[8].activations > 0
    # SGD with momentum keeps one buffer per parameter, Adam two (and both some scratch)
    adam = estimate_training_memory(model, (3, 32, 32), 8, loss, lambda p: Adam(p, 1e-3))
    assert weights <= at[8].optimizer_state < adam.optimizer_state
    assert 2 * weights <= adam.optimizer_state
    assert "at batch 16 of 3x32x32" in str(at[16]) and human_bytes(at[16].total) in str(at[16])


def test_bad_arguments_are_named():
    model, loss = small()
    with pytest.raises(ValueError, match="batch_size must be a positive int; got 0"):
        estimate_training_memory(model, (3, 32, 32), 0, loss, sgd)
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\); got \(32, 32\)"):
        estimate_training_memory(model, (32, 32), 4, loss, sgd)


def test_the_warning_says_when_the_step_does_not_fit():
    estimate = MemoryEstimate(64, (3, 224, 224), 10, 10, 10, 3 * 2**30, 10)
    line = memory_warning(estimate, 2**30)
    assert line.startswith("warning: a training step at batch 64 needs about 3.0 GB, more than")
    assert "1.0 GB available" in line and "--accumulate" in line and "\n" not in line
    assert memory_warning(estimate, 4 * 2**30) is None
    assert memory_warning(estimate, None) is None  # nothing known of the machine: no warning


def test_the_available_memory_is_read_from_the_machine():
    available = available_memory()
    if sys.platform.startswith("linux"):
        meminfo = Path("/proc/meminfo").read_text()
        kb = int(
            next(line for line in meminfo.splitlines() if line.startswith("MemAvailable")).split()[
                1
            ]
        )
        assert abs(available - kb * 1024) < 2**30  # read a moment apart
    assert available is None or available > 0


# ------------------------------------------------------------------ the commands
def test_summary_states_the_estimate_for_a_batch_size(capsys):
    assert main(["summary", "--model", "small", "--width", "0.125", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("estimated peak memory of a training step at batch 8 of 3x32x32: ")
    assert "activations saved for backward" in out[-1] and "optimizer state" in out[-1]


@needs_sklearn
def test_train_states_the_estimate_and_warns_before_the_first_step(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tinynet.train.available_memory", lambda: 1_000_000)  # 1 MB left
    argv = ["train", "--width", "0.125", "--batch-size", "16", "--max-batches", "1", "--epochs",
            "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    estimate = err.index("estimated peak memory of a training step at batch 16 of 1x32x32: ")
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "more than the 976.6 KB available" in warnings[0]
    assert estimate < err.index(warnings[0]) < err.index("epoch 1/1 [")

    monkeypatch.setattr("tinynet.train.available_memory", lambda: 2**40)
    assert main([*argv, "--overwrite"]) == 0
    assert "warning: " not in capsys.readouterr().err
