"""The lessons in examples/lessons/ run as plain scripts (each its own process, in a tmp folder,
writing only into its --out folder), check what they teach with their own asserts, print it, and
are jupytext percent-format files (markdown and code cells) that Jupyter opens as notebooks."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from datafiles import installed, needs_sklearn

LESSONS = Path(__file__).resolve().parent.parent / "examples" / "lessons"
SCRIPTS = sorted(p.name for p in LESSONS.glob("[0-9][0-9]_*.py"))


def run(script: str, *args, cwd: Path) -> str:
    """Run the lesson with ``args`` in ``cwd``; its stdout, after asserting it exited 0."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, str(LESSONS / script), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", timeout=600,
    )  # fmt: skip
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"{script}: exit {result.returncode}\n{output}"
    return result.stdout


def test_the_lessons_are_each_a_percent_format_notebook():
    assert SCRIPTS == [
        "01_scalar_graph.py", "02_conv_im2col.py", "03_inception_block.py",
        "04_train_digits.py", "05_vanishing_gradients.py", "06_multicrop.py",
        "07_write_a_function.py", "08_training_loop.py", "09_inference_plan.py",
    ]  # fmt: skip
    for script in SCRIPTS:
        text = (LESSONS / script).read_text(encoding="utf-8")
        assert "formats: py:percent" in text.split("# %%")[0], script  # the jupytext header
        cells = re.split(r"^# %%", text, flags=re.M)[1:]
        markdown = [c for c in cells if c.startswith(" [markdown]")]
        assert len(markdown) >= 4 and len(cells) - len(markdown) >= 3, script
        assert markdown[0].splitlines()[1].startswith(f"# # Lesson {int(script[:2])}:"), script
        assert "jupytext" not in "".join(c for c in cells if c not in markdown), script
        assert "assert " in text, script


def test_lesson_1_scalar_graph(tmp_path):
    out = tmp_path / "out"
    stdout = run("01_scalar_graph.py", "--out", out, cwd=tmp_path)
    assert "L = 0.5, gradients {'a': -1.5, 'b': 2.0, 'c': 1.0, 'd': 1.0}" in stdout
    assert (out / "scalar_graph.dot").read_text().startswith("digraph")
    assert "window.TINYNET_DATA" in (out / "explorer.html").read_text("utf-8")  # tinynet explore
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing outside --out


def test_lesson_2_conv_im2col(tmp_path):
    out = tmp_path / "out"
    stdout = run("02_conv_im2col.py", "--out", out, cwd=tmp_path)
    assert "the loops and tinynet's kernel build the same cols" in stdout
    assert re.search(r"= (-?[\d.e+-]+)   \(Conv2dFunction.backward gave \1\)", stdout)
    assert "window.TINYNET_DATA" in (out / "explorer.html").read_text("utf-8")  # tinynet explore
    assert re.search(r"dx: max \|by hand - tinynet backward\| = \d\.\de[-+]\d\d", stdout)
    assert stdout.count("ok\n") == 6  # gradcheck: x, w, b at strides 1 and 2


def test_lesson_7_writes_a_function_and_its_check_catches_a_planted_mistake(tmp_path):
    stdout = run("07_write_a_function.py", cwd=tmp_path)
    assert "dy/dx   [-0.053 -0.088 -0.091  0.072  0.5    0.928  1.091  1.088  1.053]" in stdout
    assert "20 elements compared" in stdout and stdout.count("  ok\n") == 1
    assert "SiLUFunction equals its composed twin, forward and backward" in stdout
    assert "FAILED\n    at (" in stdout  # the planted mistake, located element by element
    assert list(tmp_path.iterdir()) == []  # it writes no files


@needs_sklearn
def test_lesson_8_the_loop_by_hand_gives_the_trainer_s_weights(tmp_path):
    stdout = run("08_training_loop.py", "--out", tmp_path / "out", cwd=tmp_path)
    trainer = re.search(r"the Trainer: 6 steps, mean training loss (\d\.\d{6})", stdout)
    assert trainer and f"by hand: 6 steps, mean training loss {trainer[1]}" in stdout
    assert stdout.count("step ") >= 6
    assert "weights and statistics equal the Trainer's, bit for bit" in stdout


def test_lesson_3_inception_block(tmp_path):
    stdout = run("03_inception_block.py", "--out", tmp_path, cwd=tmp_path)
    assert "naive 854.2M multiply-adds, with the reductions 304.3M (2.8 times fewer)" in stdout
    assert "block output: (1, 480, 28, 28)" in stdout
    assert "cluster_branch4" in (tmp_path / "inception3b.dot").read_text()


@pytest.fixture(scope="module")
def lesson_4(tmp_path_factory):
    out = tmp_path_factory.mktemp("lesson4")
    return out, run("04_train_digits.py", "--out", out, cwd=out)


@needs_sklearn
def test_lesson_4_trains_and_writes_its_curves(lesson_4):
    out, stdout = lesson_4
    assert re.search(r"^epoch 3: train loss [\d.]+, test loss [\d.]+, test top-1", stdout, re.M)
    expected = ["checkpoint.npz", "metrics.jsonl"] + ["curves.png"] * installed("matplotlib")
    assert all((out / name).is_file() for name in expected)


@needs_sklearn
@pytest.mark.skipif(not installed("matplotlib"), reason="the figure needs matplotlib")
def test_lesson_5_vanishing_gradients(tmp_path):
    stdout = run("05_vanishing_gradients.py", "--out", tmp_path, cwd=tmp_path)
    assert re.search(r"^no aux +0 +\d\.\d\de-1\d", stdout, re.M)  # conv1 below 1e-9
    assert (tmp_path / "gradients.png").is_file() and (tmp_path / "gradients.jsonl").is_file()


@needs_sklearn
def test_lesson_6_multicrop_on_lesson_4s_checkpoint(lesson_4, tmp_path):
    checkpoint = lesson_4[0] / "checkpoint.npz"
    stdout = run("06_multicrop.py", "--out", tmp_path, "--checkpoint", checkpoint, cwd=tmp_path)
    assert "distinct crops: 48 of 144" in stdout
    assert re.search(r"^ +144 crops: top-1 +[\d.]+% on 12 digits$", stdout, re.M)


def test_lesson_4_quotes_the_recorded_run():
    """Every figure lesson 4 quotes about the full run is in benchmarks/digits.md, which records
    the run it comes from; a figure typed by hand or left from an older run fails here."""
    lesson = (LESSONS / "04_train_digits.py").read_text(encoding="utf-8")
    record = (LESSONS.parent.parent / "benchmarks" / "digits.md").read_text(encoding="utf-8")
    quoted = re.findall(r"\d+\.\d+%", lesson)
    assert len(quoted) == 4, quoted
    table = re.findall(r"\| (\d+\.\d+%) \|", record)
    final = re.search(r"final test\s+top-1 \*\*(\d+\.\d+%)\*\* \((\d+) of 359", record)
    assert final and f"{final[1]} test top-1 ({final[2]} of 359" in " ".join(lesson.split())
    assert quoted[1:] == table[:3], "lesson 4's first three epochs are digits.md's"


def test_lesson_9_inference_plan(tmp_path):
    stdout = run("09_inference_plan.py", cwd=tmp_path)
    assert "inception3a: 14 traced ops -> 9 planned steps" in stdout
    assert "conv then BatchNorm vs one folded conv: max difference" in stdout
    assert list(tmp_path.iterdir()) == []  # it writes nothing
