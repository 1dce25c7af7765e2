"""The ``tinynet`` command as a user runs it: the main job in miniature, evaluate (single, 10 and
144 crops), predict, summary, gradcheck, convert, and every bad input as one line on stderr with a
non-zero exit code (a traceback only with --debug)."""

import gzip
import re
import subprocess
import sys

import numpy as np
import pytest

import tinynet
from tinynet.cli import EXIT_ERROR, EXIT_INTERRUPTED, main
from tinynet.gradcheck_cases import CASES
from tinynet.models.registry import MODELS
from tinynet.train import CHECKPOINT, CURVES, METRICS, Trainer

from datafiles import idx_bytes, installed, needs_pillow, needs_sklearn, write_mnist

TINY = ["--width", "0.125", "--batch-size", "16", "--max-batches", "2"]


def run(capsys, *argv):
    """``tinynet ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, command: str) -> str:
    """The single error line of ``tinynet COMMAND``, checked to be the whole of stderr."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tinynet {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished 1-epoch run of the main command in miniature, made through the console entry
    point exactly as the README runs it (``python -m tinynet`` is the same function)."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("run")
    result = subprocess.run(
        [sys.executable, "-m", "tinynet", "train", "--epochs", "1", *TINY, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"test top-1 \d+\.\d\d% after 1 epochs; checkpoint", result.stdout)
    assert "epoch 1/1 [" in result.stderr and "img/s" in result.stderr  # the progress bar
    return out


# ------------------------------------------------------------------ the main job
def test_the_main_command_leaves_checkpoint_metrics_and_curves(run_dir):
    assert tinynet.load(run_dir / CHECKPOINT)["config"]["dataset"] == "digits"
    assert len((run_dir / METRICS).read_text().splitlines()) == 1
    if installed("matplotlib"):
        assert (run_dir / CURVES).stat().st_size > 0


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "predict", "summary", "gradcheck", "convert"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--resume" in out and "--max-batches" in out and "x0.96 every 8 epochs" in out


@needs_sklearn
def test_resume_continues_the_run_and_refuses_other_settings(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    copy.mkdir()
    for name in (CHECKPOINT, METRICS):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    code, out, err = run(capsys, "train", "--resume", "--out", copy, "--epochs", "2")
    assert code == 0, err
    assert "after 2 epochs" in out and "epoch 2/2" in err
    assert len((copy / METRICS).read_text().splitlines()) == 2

    code, _, err = run(capsys, "train", "--resume", "--out", copy, "--lr", "0.5")
    assert code == EXIT_ERROR
    assert "drop --lr (only --out and --epochs may be given)" in one_line_error(err, "train")


@needs_sklearn
def test_train_uses_the_models_recipe_under_the_options_given(tmp_path, capsys):
    """`--model inception_v4_small` trains with its recipe (registry), except what is given."""
    code, _, err = run(
        capsys, "train", "--model", "inception_v4_small", "--epochs", "2", "--max-batches", "1",
        "--width", "0.125", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    config = tinynet.load(tmp_path / CHECKPOINT)["config"]
    recipe = MODELS["inception_v4_small"].recipe
    assert (config["epochs"], config["lr"], config["batch_size"]) == (
        2, recipe["lr"], recipe["batch_size"]
    )  # fmt: skip


@needs_sklearn
def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(self):
        self.save()  # a completed epoch
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    with pytest.raises(SystemExit) as exit_:
        main(["train", *TINY, "--out", str(tmp_path)])
    assert exit_.value.code == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert f"continue with: tinynet train --resume --out {tmp_path}" in err


# ------------------------------------------------------------------ evaluate and predict
@pytest.mark.parametrize("crops", ["none", "10", "144"])
def test_evaluate_single_and_multi_crop(run_dir, tmp_path, capsys, crops):
    # The run's own digits test split (359 images) for one crop; three MNIST-format test
    # images, resized to the run's 32 pixels, for the 10 and 144 crops.
    write_mnist(tmp_path, n_train=2, n_test=3)
    data = [] if crops == "none" else ["--dataset", "mnist", "--data-dir", tmp_path]
    code, out, err = run(capsys, "evaluate", run_dir / CHECKPOINT, *data, "--multi-crop", crops)
    assert code == 0, err
    images, count = (359, 1) if crops == "none" else (3, int(crops))
    match = re.fullmatch(
        rf"{images} test images, {count} crop\(s\) each: top-1 (\d+\.\d\d)%, top-5 (\d+\.\d\d)%\n",
        out,
    )
    assert match and float(match[1]) <= float(match[2]) <= 100


@needs_pillow
def test_predict_ranks_the_classes_of_image_files(run_dir, tmp_path, capsys):
    from PIL import Image

    from tinynet.data import load_dataset

    test = load_dataset("digits").test
    files = []
    for i in range(2):
        files.append(tmp_path / f"digit{i}.png")
        Image.fromarray((255 * test.arrays[0][i, 0]).astype(np.uint8)).save(files[-1])
    code, out, err = run(capsys, "predict", run_dir / CHECKPOINT, *files, "--top", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    for file, line in zip(files, lines):
        assert line.startswith(f"{file}: ")
        ranked = re.findall(r"(\d) (\d+\.\d)%", line)
        assert len(ranked) == 3 and len({name for name, _ in ranked}) == 3
        percents = [float(p) for _, p in ranked]
        assert percents == sorted(percents, reverse=True) and sum(percents) <= 100.05


@needs_pillow
def test_an_undecodable_image_is_named(run_dir, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    code, _, err = run(capsys, "predict", run_dir / CHECKPOINT, broken)
    assert code == EXIT_ERROR
    assert str(broken) in one_line_error(err, "predict")


# ------------------------------------------------------------------ bad input
def test_missing_dataset_files_are_named(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--data-dir", tmp_path, *TINY)
    assert code == EXIT_ERROR
    line = one_line_error(err, "train")
    assert "train-images-idx3-ubyte.gz is not in" in line and "--download" in line


def test_a_malformed_data_file_is_named(tmp_path, capsys):
    write_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 2), np.uint8))))
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--data-dir", tmp_path, *TINY)
    assert code == EXIT_ERROR
    line = one_line_error(err, "train")
    assert "t10k-labels-idx1-ubyte.gz" in line and "1-D unsigned-byte label array" in line


def test_an_unknown_dataset_is_named(capsys):
    code, _, err = run(capsys, "train", "--dataset", "svhn")
    assert code == EXIT_ERROR
    assert "unknown dataset 'svhn'; known: cifar10, digits" in one_line_error(err, "train")


def test_a_bad_setting_is_named(capsys):
    code, _, err = run(capsys, "train", "--batch-size", "0")
    assert code == EXIT_ERROR
    assert "batch_size must be a positive int; got 0" in one_line_error(err, "train")


def test_a_bad_setting_is_named_before_the_run_folder_is_looked_at(tmp_path, capsys):
    """A folder holding a finished run (as runs/digits does after the main job) does not hide a
    bad option behind its own refusal."""
    (tmp_path / "checkpoint.npz").write_bytes(b"a finished run")
    code, _, err = run(capsys, "train", "--batch-size", "0", "--out", tmp_path)
    assert code == EXIT_ERROR
    assert "batch_size must be a positive int; got 0" in one_line_error(err, "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


def test_a_checkpoint_that_is_not_a_run_is_refused(tmp_path, capsys):
    model = tinynet.models.googlenet_small(width=0.125)
    tinynet.save(model.state_dict(), tmp_path / "weights.npz")
    for command in ("evaluate", "predict"):
        extra = ["image.png"] if command == "predict" else []
        code, _, err = run(capsys, command, tmp_path / "weights.npz", *extra)
        assert code == EXIT_ERROR
        line = one_line_error(err, command)
        assert "weights.npz is not a tinynet training checkpoint" in line


@needs_pillow
def test_a_checkpoint_for_other_data_is_refused(run_dir, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "colour"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (12, 12), (40 * i, 90, 200)).save(folder / name / f"{i}.png")
    code, _, err = run(
        capsys, "evaluate", run_dir / CHECKPOINT, "--dataset", "image_folder", "--data-dir", folder
    )
    assert code == EXIT_ERROR
    line = one_line_error(err, "evaluate")
    assert "network takes 1-channel images; image_folder has 3-channel ones" in line

    tampered = tinynet.load(run_dir / CHECKPOINT)
    tampered["config"]["classes"] = ["a", "b", "c"]
    tinynet.save(tampered, tmp_path / "tampered.npz")
    code, _, err = run(capsys, "evaluate", tmp_path / "tampered.npz")
    assert code == EXIT_ERROR
    line = one_line_error(err, "evaluate")
    assert "tampered.npz does not fit its own configuration" in line and "fc.weight" in line


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", tmp_path / "nothere.npz")
    assert code == EXIT_ERROR
    assert "no such file" in one_line_error(err, "evaluate")


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        main(["--debug", "train", "--dataset", "svhn"])


def test_the_console_script_exits_non_zero_on_an_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tinynet", "evaluate", str(tmp_path / "nothere.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == EXIT_ERROR
    assert one_line_error(result.stderr, "evaluate")


# ------------------------------------------------------------------ summary, gradcheck, convert
def test_summary_of_the_papers_network(capsys):
    code, out, _ = run(capsys, "summary", "--model", "paper")
    assert code == 0
    assert "inception3a" in out and "inception5b" in out
    assert "parameters: 13,378,280 (6,998,552 used at inference)" in out
    assert "multiply-adds per image: 1.583G" in out


@pytest.mark.parametrize("target", sorted(CASES))
def test_gradcheck_passes_on_every_case(capsys, target):
    code, out, _ = run(capsys, "gradcheck", target)
    assert code == 0
    assert out.startswith(f"{target}: analytic vs central differences")
    assert out.rstrip().endswith("ok: every gradient matches")


def test_gradcheck_fails_loudly_when_the_step_is_useless(capsys):
    # eps so small that central differences are pure rounding noise: the check must say so.
    with pytest.raises(SystemExit) as exit_:
        main(["gradcheck", "conv2d", "--eps", "1e-15"])
    assert exit_.value.code == EXIT_ERROR
    assert capsys.readouterr().out.rstrip().endswith("FAILED")


def test_convert_refuses_a_file_that_is_no_checkpoint(tmp_path, capsys):
    (tmp_path / "bad.pth").write_bytes(b"\x00" * 64)
    code, _, err = run(capsys, "convert", tmp_path / "bad.pth", tmp_path / "out.npz")
    assert code == EXIT_ERROR
    assert "bad.pth" in one_line_error(err, "convert")
    assert not (tmp_path / "out.npz").exists()


def test_convert_a_pytorch_state_dict(torch, tmp_path, capsys):
    model = torch.nn.Conv2d(3, 4, 3)
    torch.save(model.state_dict(), tmp_path / "conv.pth")
    code, out, err = run(capsys, "convert", tmp_path / "conv.pth", tmp_path / "conv.npz")
    assert code == 0, err
    assert "wrote 2 tensors" in out
    np.testing.assert_array_equal(
        tinynet.load(tmp_path / "conv.npz")["weight"], model.weight.detach().numpy()
    )
