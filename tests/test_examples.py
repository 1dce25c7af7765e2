"""The scripts in examples/ run, each as its own process with tiny options, and print what they
promise (shapes, checks passed, the bug caught), not merely exit 0."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from datafiles import installed, write_mnist

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    """Run examples/<script> with ``args`` in ``cwd``; stdout and stderr as text."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_train_digits_trains_writes_the_run_folder_and_predicts(tmp_path):
    pytest.importorskip("sklearn", reason="the digits come with scikit-learn")
    out = tmp_path / "run"
    args = ("--epochs", 1, "--max-batches", 1, "--batch-size", 8, "--show", 3, "--out", out)
    stdout = ok(run("train_digits.py", *args, cwd=tmp_path))
    assert re.search(r"epoch 1/1: train loss [\d.]+, test loss [\d.]+, test top-1", stdout)
    assert re.search(r"^\s+1\s+[\d.]+%\s+[\d.]+%\s+[\d.]+%$", stdout, re.M), stdout
    expected = ["checkpoint.npz", "metrics.jsonl"] + (["curves.png"] * installed("matplotlib"))
    for name in expected:
        assert (out / name).is_file()
        assert re.search(rf"^  {re.escape(name)}\s+[\d,]+ bytes$", stdout, re.M), name
    assert f"reloaded {out / 'checkpoint.npz'}" in stdout
    predictions = re.findall(r"test digit \d: true (\d), predicted (\d) \(p=[\d.]+\)", stdout)
    assert len(predictions) == 3
    assert re.search(r"^\d/3 correct$", stdout, re.M)


def test_train_mnist_files_reads_idx_gz_files_and_trains(tmp_path):
    data = tmp_path / "mnist"
    write_mnist(data, n_train=24, n_test=8)
    out = tmp_path / "run"
    args = ("--data-dir", data, "--max-batches", 2, "--batch-size", 8, "--out", out)
    stdout = ok(run("train_mnist_files.py", *args, cwd=tmp_path))
    assert f"mnist from {data}: 24 train / 8 test images of (1, 28, 28)" in stdout
    assert "epoch 1/1: train loss" in stdout
    assert re.search(r"done: test top-1 [\d.]+% after 1 epoch", stdout)
    assert (out / "checkpoint.npz").is_file()


def test_train_mnist_files_without_the_files_says_which_and_how(tmp_path):
    result = run("train_mnist_files.py", "--data-dir", tmp_path / "empty", cwd=tmp_path)
    assert result.returncode == 1
    assert "train-images-idx3-ubyte.gz is not in" in result.stderr
    assert "--download" in result.stderr
    assert "Traceback" not in result.stderr


def test_inception_branches_shapes_slices_and_concatenation(tmp_path):
    plot = tmp_path / "branches.png"
    stdout = ok(run("inception_branches.py", "--noise", "--plot", plot, cwd=tmp_path))
    assert "inception3a: input (4, 48, 16, 16) -> output (4, 64, 16, 16)" in stdout
    # The small preset's inception3a at width 0.25: 16 + 32 + 8 + 8 channels, in this order.
    for branch, layers, channels, where in (
        ("branch1", "1x1", 16, "[0:16]"),
        ("branch2", "1x1 -> 3x3", 32, "[16:48]"),
        ("branch3", "1x1 -> 5x5", 8, "[48:56]"),
        ("branch4", "maxpool -> 1x1", 8, "[56:64]"),
    ):
        line = rf"^{branch}\s+{re.escape(layers)}\s+\(4, {channels}, 16, 16\)\s+{re.escape(where)}"
        assert re.search(line + r"\s+[\d.e+-]+\s+[\d.]+%$", stdout, re.M), branch
    assert "equals the inception3a output exactly (64 channels)" in stdout
    assert plot.is_file() == installed("matplotlib")


def test_backward_walkthrough_checks_gradients_and_catches_a_bug(tmp_path):
    stdout = ok(run("backward_walkthrough.py", cwd=tmp_path))
    assert re.search(
        r"^conv\s+conv2d\(x, w, b, padding=1\)\s+\(2, 3, 6, 6\)\s+\(2, 3, 6, 6\)", stdout, re.M
    )
    assert re.search(r"^pool\s+max_pool2d\(relu, 2\)\s+\(2, 3, 3, 3\)", stdout, re.M)
    for name in ("dW = dY · colsᵀ", "db = Σ_columns dY", "dx = col2im(Wᵀ · dY)"):
        assert re.search(rf"{re.escape(name)} .* max \|by hand - backward\| = \d", stdout), name
    assert "-- conv2d, stride 2, padding 1 (inputs x, w, b): ok" in stdout
    assert "gradcheck passed: conv2d and the Inception block" in stdout
    assert "-- BuggySquare: FAILED" in stdout
    assert "caught the wrong backward: tinynet.gradcheck raised GradcheckError" in stdout
    assert "analytic / numeric = 0.500000 (the missing factor 2)" in stdout
