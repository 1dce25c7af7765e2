"""One writer per run folder and Ctrl-C, as a user meets them through `tinynet train`: a second
run on a folder in use, a folder holding a run without --resume or --overwrite, a lock whose
holder was killed, saves racing each other from several processes, an absurd --epochs, and
SIGINT at any moment of a run (numba kernels included), on one process and under mpiexec. Each
refusal is one line with exit code 1 and leaves the folder as it was."""

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from interrupt import sigint_as_usual

from tinynet import run_folder
from tinynet.cli import EXIT_ERROR, EXIT_INTERRUPTED, main
from tinynet.io import load, save
from tinynet.train import (
    CHECKPOINT,
    GRADIENTS,
    MAX_EPOCHS,
    METRICS,
    TrainConfig,
    Trainer,
    read_checkpoint,
)

from datafiles import needs_sklearn
from holders import ROOT, holding

TINY = ["--width", "0.125", "--batch-size", "16", "--max-batches", "2"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(capsys, *argv):
    """``tinynet ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, command: str = "tinynet train") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: "), err
    return lines[0]


def refused(capsys, folder: Path, *argv) -> str:
    """The error line of ``tinynet train ARGV``, checked to be one line with exit code 1 that
    leaves ``folder`` as it was."""
    before = contents(folder)
    code, _, err = run(capsys, "train", *argv)
    assert code == EXIT_ERROR
    assert contents(folder) == before
    return one_line_error(err)


def contents(folder: Path) -> dict:
    """Every file under ``folder``: its bytes and permissions."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mode)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# ------------------------------------------------------------------ one writer per folder
def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with holding(out) as other:
        assert (out / run_folder.LOCK).read_text() == f"{other.pid}\n"
        line = refused(capsys, out, "--epochs", "1", *TINY, "--out", out)
        assert f"{out} is in use by process {other.pid}" in line, line
        assert "choose another --out" in line
        with pytest.raises(run_folder.RunFolderBusy, match=f"process {other.pid}"):
            with run_folder.hold(out):
                pass
    assert list(contents(out)) == ["notes.txt"]  # the holder took its lock file with it
    with run_folder.hold(out):  # and the folder is free
        pass


def test_the_lock_goes_with_its_process_even_one_killed_outright(tmp_path):
    out = tmp_path / "run"
    with holding(out) as other:
        other.kill()  # SIGKILL: no finally runs, the lock file stays with a dead id in it
        other.wait(timeout=60)
        assert (out / run_folder.LOCK).read_text() == f"{other.pid}\n"
        with run_folder.hold(out):
            assert (out / run_folder.LOCK).read_text() == f"{os.getpid()}\n"
    assert not (out / run_folder.LOCK).exists()


def test_a_lock_file_planted_as_a_symlink_is_not_followed(tmp_path, capsys):
    out, target = tmp_path / "run", tmp_path / "elsewhere.txt"
    out.mkdir()
    target.write_text("not tinynet's")
    (out / run_folder.LOCK).symlink_to(target)
    line = refused(capsys, tmp_path, "--epochs", "1", *TINY, "--out", out)
    assert f"{out} cannot be locked for this run: opening {out / run_folder.LOCK} fails" in line


def test_a_file_system_without_locks_is_named(tmp_path, capsys, monkeypatch):
    def no_locks(handle, command, *args):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    out = tmp_path / "run"
    line = refused(capsys, tmp_path, "--epochs", "1", *TINY, "--out", out)
    assert line.endswith(
        f"{out} cannot be locked for this run: locking {out / run_folder.LOCK} fails (No locks "
        f"available); choose an --out on a file system with locks"
    ), line
    save({"v": np.ones(2)}, tmp_path / "w.npz")  # a save needs no lock: its name says who writes
    assert load(tmp_path / "w.npz")["v"].tolist() == [1.0, 1.0]


def test_the_lock_is_reentrant_in_one_process_and_leaves_no_folder_it_made(tmp_path):
    out = tmp_path / "new" / "run"
    with run_folder.hold(out):
        with run_folder.hold(tmp_path / "new" / "." / "run"):  # the same folder, named otherwise
            assert (out / run_folder.LOCK).read_text() == f"{os.getpid()}\n"
        assert (out / run_folder.LOCK).exists()  # the outer hold still has it
    assert list(tmp_path.iterdir()) == []  # made for the run, empty: removed
    with run_folder.hold(out):
        (out / "kept.txt").write_text("a run's file")
    assert list(contents(tmp_path)) == ["new/run/kept.txt"]


@needs_sklearn
def test_the_python_api_takes_the_lock_too(tmp_path):
    config = TrainConfig(
        width=0.125, batch_size=16, max_batches=1, epochs=1, ema_decay=None, out_dir=str(tmp_path)
    )
    trainer = Trainer(config, log=lambda line: None)
    with holding(tmp_path) as other:
        with pytest.raises(run_folder.RunFolderBusy, match=f"in use by process {other.pid}"):
            trainer.fit()
    assert list(tmp_path.iterdir()) == []
    trainer.fit()
    assert {path.name for path in tmp_path.iterdir()} >= {CHECKPOINT, METRICS}
    assert not (tmp_path / run_folder.LOCK).exists()
    with pytest.raises(ValueError, match=r"epochs must be an int in \[1, 1,000,000\]; got 10"):
        Trainer.resume(tmp_path, epochs=10 * MAX_EPOCHS)


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    save({"weights": np.ones(3)}, out / CHECKPOINT)
    (out / METRICS).write_text('{"epoch": 1}\n')
    line = refused(capsys, out, "--epochs", "1", *TINY, "--out", out)
    assert f"--out {out} already holds a run ({out / CHECKPOINT})" in line, line
    assert "continue it with --resume or replace it with --overwrite" in line


def test_resume_and_overwrite_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--resume", "--overwrite", "--out", str(tmp_path / "run")])
    assert exit_.value.code == EXIT_ERROR
    line = one_line_error(capsys.readouterr().err)
    assert "--overwrite: not allowed with argument --resume" in line, line
    assert not (tmp_path / "run").exists()


@needs_sklearn
def test_overwrite_replaces_the_old_runs_files(tmp_path, capsys):
    out = tmp_path / "run"
    save({"weights": np.ones(3)}, out / CHECKPOINT)  # not even a training checkpoint
    (out / METRICS).write_text('{"epoch": 7}\n')
    (out / GRADIENTS).write_bytes(b"the old run's figure")
    (out / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "train", "--epochs", "1", *TINY, "--overwrite", "--out", out)
    assert code == 0, err
    checkpoint, config = read_checkpoint(out / CHECKPOINT)
    assert config.epochs == 1 and len(checkpoint["history"]) == 1
    assert [json.loads(line)["epoch"] for line in (out / METRICS).read_text().splitlines()] == [1]
    assert not (out / GRADIENTS).exists()  # this run logs no gradients: the old figure is gone
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / run_folder.LOCK).exists()


# ------------------------------------------------------------------ --epochs
@pytest.mark.parametrize("epochs", ["1000001", "1000000000", "0", "-3", "1e9", "nan", "two"])
@pytest.mark.parametrize("resume", [False, True])
def test_an_absurd_epochs_is_refused_by_the_parser(tmp_path, capsys, epochs, resume):
    argv = ["train", "--epochs", epochs, "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_:
        main(argv + (["--resume"] if resume else []))
    assert exit_.value.code == EXIT_ERROR
    line = one_line_error(capsys.readouterr().err)
    assert f"argument --epochs: must be an int in [1, 1,000,000]; got {epochs!r}" in line, line
    assert not (tmp_path / "run").exists()


def test_an_absurd_epochs_is_refused_by_the_config_too():
    TrainConfig(epochs=MAX_EPOCHS)
    with pytest.raises(ValueError, match=r"epochs must be an int in \[1, 1,000,000\]; got 10"):
        TrainConfig(epochs=10 * MAX_EPOCHS)


# ------------------------------------------------------------------ Ctrl-C
def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        cwd=ROOT, preexec_fn=sigint_as_usual,
    )  # fmt: skip


def wait_for_line(process: subprocess.Popen, phrase: str) -> str:
    """Read ``process``'s stderr up to the first line holding ``phrase`` (failing if it ends
    first); returns what was read."""
    seen = ""
    while phrase not in seen:
        line = process.stderr.readline()
        assert line, f"the run ended before {phrase!r}:\n{seen}"
        seen += line
    return seen


# A batch of 128 makes each step's kernels (im2col, col2im, pooling) run long enough that a
# signal often arrives inside one: numba then reports it as "SystemError: CPUDispatcher(...)
# returned a result with an exception set", with the KeyboardInterrupt as its context.
KERNEL_HEAVY = ["--width", "0.125", "--batch-size", "128", "--max-batches", "1", "--no-ema"]


def train_command(out: Path, epochs: int = 1000) -> list[str]:
    return [sys.executable, "-m", "tinynet", "train", "--epochs", str(epochs), *KERNEL_HEAVY,
            "--out", str(out)]  # fmt: skip


def assert_interrupted_cleanly(process, out: Path, seen: str) -> str:
    _, err = process.communicate(timeout=300)
    err = seen + err
    assert process.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "error" not in err, err
    left = {path.name for path in out.iterdir()} if out.exists() else set()
    leftovers = left - {CHECKPOINT, METRICS, "curves.png"}
    assert not leftovers, leftovers  # no temporary file, no lock file
    return err


@needs_sklearn
@pytest.mark.parametrize("delay", [0.0, 0.4, 1.2])
def test_ctrl_c_at_any_moment_exits_130_with_the_resume_hint(tmp_path, delay):
    """SIGINT at several moments after the first checkpoint: while it is written, while the
    next epoch's kernels run, while it evaluates."""
    out = tmp_path / "run"
    process = start(train_command(out))
    seen = wait_for_line(process, "epoch 1/1000: train loss")
    while not (out / CHECKPOINT).exists():  # logged just before it is written
        assert process.poll() is None, seen
        time.sleep(0.01)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    err = assert_interrupted_cleanly(process, out, seen)
    assert err.rstrip().endswith(
        f"interrupted: {out / CHECKPOINT} holds the last completed epoch; continue with: "
        f"tinynet train --resume --out {out}"
    ), err
    checkpoint, _ = read_checkpoint(out / CHECKPOINT)  # whole, and what --resume reads
    assert len(checkpoint["history"]) >= 1


@needs_sklearn
def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(tmp_path):
    out = tmp_path / "run"
    process = start(train_command(out))
    seen = wait_for_line(process, "training small")  # the first epoch starts
    process.send_signal(signal.SIGINT)
    err = assert_interrupted_cleanly(process, out, seen)
    assert err.rstrip().endswith(
        f"interrupted before the first epoch's checkpoint was written: nothing to resume in {out}"
    ), err
    assert not out.exists()  # made for the run, and left empty: removed


@needs_sklearn
def test_an_interrupt_reported_by_a_kernel_is_an_interrupt(tmp_path, capsys, monkeypatch):
    """What numba raises when Ctrl-C lands in a kernel, as the command sees it."""

    def interrupted_in_a_kernel(self):
        self.save()  # a completed epoch
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemError(
                "CPUDispatcher(<function col2im>) returned a result with an exception set"
            ) from None  # only the context: numba sets no cause

    monkeypatch.setattr(Trainer, "fit", interrupted_in_a_kernel)
    with pytest.raises(SystemExit) as exit_:
        main(["train", *TINY, "--out", str(tmp_path)])
    assert exit_.value.code == EXIT_INTERRUPTED
    assert f"continue with: tinynet train --resume --out {tmp_path}" in capsys.readouterr().err


def test_any_command_takes_an_error_caused_by_ctrl_c_for_ctrl_c(capsys, monkeypatch):
    def interrupted(args):
        raise SystemError("CPUDispatcher(<function im2col>) returned ...") from KeyboardInterrupt()

    monkeypatch.setattr("tinynet.cli._predict", interrupted)
    code, out, err = run(capsys, "predict", "checkpoint.npz", "image.png")
    assert (code, out, err.strip()) == (EXIT_INTERRUPTED, "", "interrupted")
