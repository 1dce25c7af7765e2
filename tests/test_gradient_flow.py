"""Gradient flow: tinynet.gradflow's measurements against hand-computed values, ``tinynet train
--log-gradients`` (records, metrics.jsonl, gradients.png, resumption), and ``tinynet inspect
gradients`` in miniature, with their bad options as one-line errors."""

import json
import math

import numpy as np
import pytest
from test_cli import one_line_error, run

import tinynet
from tinynet import nn
from tinynet.cli import EXIT_ERROR, main
from tinynet.data import DataSplits, TensorDataset, load_dataset
from tinynet.gradflow import GradientFlow, block_norms, nonfinite
from tinynet.optim import SGD
from tinynet.train import CHECKPOINT, GRADIENTS, METRICS, TrainConfig, Trainer, read_checkpoint

from datafiles import installed, needs_sklearn

PNG = b"\x89PNG\r\n\x1a\n"


def strict_json(line: str) -> dict:
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


# ------------------------------------------------------------------ the measurements by hand
def test_gradient_norms_and_update_ratios_by_hand():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(2, 1))
    conv, linear = model[0], model[2]
    conv.weight.data[...] = np.array([3.0, 4.0]).reshape(2, 1, 1, 1)  # ‖W‖ = 5
    linear.weight.data[...] = np.array([[1.0, 0.0]])  # ‖W‖ = 1
    conv.weight.grad = np.array([0.0, 2.0], dtype=np.float32).reshape(2, 1, 1, 1)
    linear.weight.grad = np.array([[6.0, 8.0]], dtype=np.float32)
    for bias in (conv.bias, linear.bias):  # biases are not the layer's weight: not measured
        bias.grad = np.full(bias.shape, 100.0, dtype=np.float32)
    flow = GradientFlow(model)
    assert flow.names == ["0", "2"]
    before = flow.before_step()
    SGD(list(model.parameters()), lr=0.5).step()  # W -= 0.5 ∂L/∂W
    record = flow.after_step(before, epoch=1, step=7)
    assert record["record"] == "gradients" and (record["epoch"], record["step"]) == (1, 7)
    assert record["grad_norm"] == pytest.approx({"0": 2.0, "2": 10.0})
    assert record["update_ratio"] == pytest.approx({"0": 0.5 * 2 / 5, "2": 0.5 * 10 / 1})
    assert nonfinite(record) is None
    assert block_norms({"a.x": 3.0, "a.y": 4.0, "ab": 7.0}, ["a", "ab"]) == {"a": 5.0, "ab": 7.0}


def test_what_is_not_finite_is_named():
    record = {"grad_norm": {"conv1.conv": 1.0, "fc": math.inf}, "update_ratio": {"fc": 0.1}}
    assert nonfinite(record) == "the gradient norm of fc is inf"
    record = {"grad_norm": {"fc": 1.0}, "update_ratio": {"fc": math.nan}}
    assert nonfinite(record) == "the update ratio of fc is nan"
    with pytest.raises(ValueError, match="block_norms: no layer of 'inception9z' in the record"):
        block_norms({"conv1.conv": 1.0}, ["inception9z"])


# ------------------------------------------------------------------ tinynet train --log-gradients
def tiny(tmp_path, **changes) -> TrainConfig:
    """Three 16-image batches an epoch of a width-0.125 small GoogLeNet, gradients every 2."""
    options = dict(width=0.125, batch_size=16, max_batches=3, epochs=2, log_gradients=2,
                   schedule="constant",  # so that a 1-epoch run is the 2-epoch one cut short
                   out_dir=str(tmp_path))  # fmt: skip
    return TrainConfig(**{**options, **changes})


def quiet(message):
    pass


@pytest.fixture(scope="module")
def data():
    pytest.importorskip("sklearn")
    train, test, classes = load_dataset("digits")
    return DataSplits(TensorDataset(*train[:96]), TensorDataset(*test[:32]), classes)


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("logged")
    trainer = Trainer(tiny(out), data, log=quiet)
    trainer.fit()
    return trainer, out


def test_metrics_hold_the_gradient_records_before_each_epochs_record(logged_run):
    trainer, out = logged_run
    records = [strict_json(line) for line in (out / METRICS).read_text().splitlines()]
    epochs = [r for r in records if "record" not in r]
    assert epochs == trainer.history and records[-1] == trainer.history[-1]
    gradients = [r for r in records if r.get("record") == "gradients"]
    # 3 steps an epoch, every 2nd logged: steps 0 and 2 in epoch 1, step 4 in epoch 2
    assert [(r["epoch"], r["step"]) for r in gradients] == [(1, 0), (1, 2), (2, 4)]
    assert [r.get("record", "epoch") for r in records] == ["gradients"] * 2 + ["epoch"] + [
        "gradients", "epoch"]  # fmt: skip
    assert gradients == trainer.gradient_log


def test_every_weight_layer_is_recorded_with_finite_positive_values(logged_run):
    trainer, out = logged_run
    record = trainer.gradient_log[0]
    branches = ["branch1.conv", "branch2.0.conv", "branch2.1.conv", "branch3.0.conv",
                "branch3.1.conv", "branch4.1.conv"]  # fmt: skip
    blocks = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]
    heads = [f"aux{i}.{layer}" for i in (1, 2) for layer in ("conv.conv", "fc1", "fc2")]
    expected = ["conv1.conv", "conv2.conv", "conv3.conv",
                *(f"inception{b}.{branch}" for b in blocks for branch in branches), *heads, "fc"]
    for key in ("grad_norm", "update_ratio"):
        assert list(record[key]) == expected
        for r in trainer.gradient_log:
            assert all(math.isfinite(v) and v > 0 for v in r[key].values())
    if installed("matplotlib"):
        assert (out / GRADIENTS).read_bytes()[:8] == PNG


def test_a_resumed_run_logs_what_the_uninterrupted_one_did(tmp_path, logged_run, data):
    trainer, logged = logged_run
    Trainer(tiny(tmp_path, epochs=1), data, log=quiet).fit()
    resumed = Trainer.resume(tmp_path, epochs=2, data=data, log=quiet)
    resumed.fit()
    assert resumed.gradient_log == trainer.gradient_log
    resumed_lines, lines = ((out / METRICS).read_text().splitlines() for out in (tmp_path, logged))
    assert len(resumed_lines) == len(lines)
    for resumed_line, line in zip(resumed_lines, lines):  # epoch records differ in their timings
        assert resumed_line == line or "record" not in strict_json(line)


def test_a_checkpoint_with_a_malformed_gradient_record_is_refused(tmp_path, logged_run):
    checkpoint = tinynet.load(logged_run[1] / CHECKPOINT)
    checkpoint["gradients"][1]["step"] = "two"
    tinynet.save(checkpoint, tmp_path / CHECKPOINT)
    with pytest.raises(ValueError, match="damaged training checkpoint: a gradient record is"):
        read_checkpoint(tmp_path / CHECKPOINT)
    checkpoint["gradients"] = {"not": "a list"}
    tinynet.save(checkpoint, tmp_path / CHECKPOINT)
    with pytest.raises(ValueError, match="damaged training checkpoint: its 'gradients' is dict"):
        read_checkpoint(tmp_path / CHECKPOINT)


def error_line(capsys, command: str, *argv) -> str:
    """The one-line error of ``tinynet ARGV`` (argparse's or the run's), exit code 1."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    assert code == EXIT_ERROR
    return one_line_error(capsys.readouterr().err, command)


def test_bad_log_gradients_is_one_line(capsys, tmp_path):
    line = error_line(capsys, "train", "train", "--log-gradients", "0", "--out", tmp_path)
    assert "log_gradients must be a positive int (steps) or None; got 0" in line
    line = error_line(capsys, "train", "train", "--log-gradients", "two", "--out", tmp_path)
    assert "argument --log-gradients: invalid int value: 'two'" in line
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ tinynet inspect gradients
@needs_sklearn
def test_inspect_gradients_in_miniature(capsys, tmp_path):
    code, out, err = run(capsys, "inspect", "gradients", "--width", "0.05", "--steps", "3",
                         "--batch-size", "8", "--log-every", "2", "--out", tmp_path)  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split() == ["network", "step", "conv1", "3a", "4a", "4d", "5b", "main", "loss"]
    names = ("no aux", "aux heads", "BatchNorm")
    assert [(line[:9].strip(), line[9:].split()[0]) for line in lines[2:8]] == [
        (name, step) for name in names for step in ("0", "2")
    ]
    jsonl = (tmp_path / "gradients.jsonl").read_text().splitlines()
    records = [strict_json(line) for line in jsonl]
    assert [(r["network"], r["step"]) for r in records] == [
        (name, step) for name in names for step in (0, 2)
    ]
    first = {r["network"]: block_norms(r["grad_norm"], ["conv1"])["conv1"]
             for r in records if r["step"] == 0}  # fmt: skip
    # The evidence in miniature: at initialisation the aux heads bring orders of magnitude more
    # gradient back to the first layer, BatchNorm more still.
    assert 0 < 1e3 * first["no aux"] < first["aux heads"] < first["BatchNorm"]
    if installed("matplotlib"):
        assert (tmp_path / "gradients.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    "options, command, expected",
    [(["--steps", "0"], "inspect gradients", "argument --steps: must be a positive int; got '0'"),
     (["--lr", "nan"], "inspect gradients", "argument --lr: must be a finite number > 0; got 'na"),
     (["--width", "2"], "inspect", "compare_gradient_flow: width must be a number in (0, 1]; got 2"),
     (["--steps", "2", "--log-every", "5"], "inspect",
      "compare_gradient_flow: log_every must be at most steps (2); got 5")],
)  # fmt: skip
def test_inspect_gradients_bad_options_are_one_line(capsys, tmp_path, options, command, expected):
    out = tmp_path / "out"
    line = error_line(capsys, command, "inspect", "gradients", *options, "--out", out)
    assert expected in line
    assert not out.exists()


def test_inspect_needs_a_target(capsys):
    line = error_line(capsys, "inspect", "inspect")
    assert "the following arguments are required: WHAT" in line
