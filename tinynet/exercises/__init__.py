"""tinynet's graded exercises: write an op, a backward, a block or a training loop yourself, in
NumPy, and let tinynet check it (``tinynet exercises start DIR``, then ``check DIR``).

Each module here holds one exercise: tinynet's own solution (whose signatures and docstrings,
with the math and a hint, are the stub a learner starts from) and its check. The op exercises
are checked by ``tinynet.testing.check_op`` against tinynet's reference ops; the others by their
own checks. A learner's file that takes its answer from tinynet (its ops, reference twins,
functional API, kernels, checker or these solutions) is reported as not the learner's work.

This is the machinery side: ``import tinynet`` does not import it.
"""

from __future__ import annotations

from pathlib import Path

from tinynet.exercises import (
    batch_norm_backward,
    conv2d_backward,
    conv2d_forward,
    fold_batch_norm,
    im2col,
    inception_block,
    linear_backward,
    max_pool2d_backward,
    scalar_backward,
    softmax_cross_entropy_backward,
    training_loop,
)
from tinynet.exercises.exercise import Exercise
from tinynet.exercises.grader import FAILING, NOT_STARTED, NOT_YOURS, PASSED, Grade, grade_file

EXERCISES: dict[str, Exercise] = {
    module.EXERCISE.name: module.EXERCISE
    for module in (
        scalar_backward,
        linear_backward,
        softmax_cross_entropy_backward,
        im2col,
        conv2d_forward,
        conv2d_backward,
        max_pool2d_backward,
        batch_norm_backward,
        inception_block,
        training_loop,
        fold_batch_norm,
    )
}
MAX_EXAMPLES = 100  # cases drawn per op exercise by check_op


def exercise(name: str) -> Exercise:
    """The exercise called ``name``, or a ValueError listing them."""
    if name not in EXERCISES:
        raise ValueError(f"no exercise {name!r}; the exercises are {', '.join(EXERCISES)}")
    return EXERCISES[name]


def stub_text(name: str) -> str:
    """The file ``start`` writes for exercise ``name``."""
    number = list(EXERCISES).index(name) + 1
    return exercise(name).stub_text(number, len(EXERCISES))


def solution_text(name: str) -> str:
    """tinynet's solution of exercise ``name``, as a file that passes its check."""
    number = list(EXERCISES).index(exercise(name).name) + 1
    return exercise(name).solution_text(number, len(EXERCISES))


def start(directory) -> list[tuple[Path, bool]]:
    """Write ``directory/<name>.py`` for every exercise, creating the folder; a file that exists
    already is left as it is (a learner's work is never overwritten). Returns (path, written)
    for each exercise, in order."""
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"exercises start: {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"exercises start: cannot create {folder} ({error.strerror})") from None
    done = []
    for name in EXERCISES:
        path = folder / f"{name}.py"
        try:
            with open(path, "x", encoding="utf-8") as file:  # "x": never over an existing file
                file.write(stub_text(name))
            done.append((path, True))
        except FileExistsError:
            done.append((path, False))
    return done


def check(directory, names=None, *, max_examples: int = MAX_EXAMPLES, seed: int = 0) -> list[Grade]:
    """Grade ``directory/<name>.py`` for each of ``names`` (default: every exercise)."""
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"exercises check: {folder} is a file, not a folder")
    if not folder.is_dir():
        raise ValueError(f"exercises check: no folder {folder} (tinynet exercises start writes it)")
    names = list(EXERCISES) if not names else [exercise(name).name for name in names]
    names = list(dict.fromkeys(names))  # a name given twice is graded once
    return [
        grade_file(EXERCISES[name], folder / f"{name}.py", stub_text(name), max_examples, seed)
        for name in names
    ]


__all__ = [
    "EXERCISES",
    "FAILING",
    "NOT_STARTED",
    "NOT_YOURS",
    "PASSED",
    "Exercise",
    "Grade",
    "check",
    "exercise",
    "solution_text",
    "start",
    "stub_text",
]
