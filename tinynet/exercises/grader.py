"""Grading a learner's exercise file: read whose work it is, load it apart from the host, check it.

A file is loaded into a module object of its own that stays out of ``sys.modules`` (it is there
only while the file runs and is checked, for code such as dataclasses that looks itself up), and
what a file may change in the host while it runs (``sys.path``, the modules it imports from its
own folder, NumPy's error and print settings, the working directory) is put back afterwards. An
exception raised by the file, or by its code during the check, is that exercise's failure.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinynet.exercises.exercise import Exercise
from tinynet.exercises.provenance import borrowed

PASSED, FAILING, NOT_STARTED, NOT_YOURS = "passed", "failing", "not started", "not your work"


@dataclass(frozen=True)
class Grade:
    """An exercise's status and, unless it passed, why: the smallest failing case and the hint,
    what the file took from tinynet, or how to start."""

    name: str
    status: str
    detail: str = ""


def grade_file(exercise: Exercise, path: Path, stub: str, max_examples: int, seed: int) -> Grade:
    """Grade the file at ``path`` (``stub``: the text ``start`` wrote, so an untouched file is
    "not started" without running it)."""
    name = exercise.name
    if not path.is_file():
        return Grade(name, NOT_STARTED, f"no file {path} (tinynet exercises start writes it)")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return Grade(name, FAILING, f"cannot read {path}: {error}")
    if _normalised(source) == _normalised(stub):
        return Grade(name, NOT_STARTED, f"{path} is the stub as written: fill it in")
    try:
        taken = borrowed(source, exercise.allowed)
    except SyntaxError as error:
        return Grade(name, FAILING, f"{path} line {error.lineno}: SyntaxError: {error.msg}")
    if taken:
        allowed = ", ".join(exercise.allowed) if exercise.allowed else "nothing from tinynet"
        return Grade(
            name,
            NOT_YOURS,
            f"{path} uses tinynet's answer instead of its own (allowed here: numpy and the "
            f"standard library, {allowed}):\n" + "\n".join(f"  {line}" for line in taken),
        )
    with _host_kept(path.parent):
        module = types.ModuleType(f"tinynet_exercise_{name}")
        module.__file__ = str(path)
        sys.modules[module.__name__] = module
        try:
            exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - the learner's
            answer = getattr(module, exercise.entry, None)
            if answer is None:
                return Grade(name, FAILING, f"{path} defines no {exercise.entry}")
            exercise.check(answer, max_examples=max_examples, seed=seed)
        except AssertionError as error:  # a check's finding; if the learner's code raised, where
            if _raised_in(error, path):  # the learner's own assert statement
                return Grade(name, FAILING, _said(error) + _where(error, path))
            first, _, rest = str(error).partition("\n")
            where = _where(error.__cause__, path) if error.__cause__ is not None else ""
            return Grade(name, FAILING, first + where + ("\n" + rest if rest else ""))
        except NotImplementedError as error:
            where = _where(error, path)
            return Grade(name, FAILING, f"still raises NotImplementedError{where}")
        except (Exception, SystemExit) as error:  # noqa: BLE001 - the learner's code failed
            detail = _said(error) + _where(error, path)
            sibling = getattr(error, "name", None) if isinstance(error, ImportError) else None
            if sibling and (path.parent / f"{sibling}.py").is_file():
                detail += (
                    f"\nhint: each exercise file is graded alone (so only what it holds is read "
                    f"as your work): copy what you need from {sibling}.py into {path.name}"
                )
            return Grade(name, FAILING, detail)
        finally:
            sys.modules.pop(module.__name__, None)
    return Grade(name, PASSED)


def _normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip().splitlines())


def _said(error: BaseException) -> str:
    """'ValueError: its message', or the bare name of an error raised without one."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _raised_in(error: BaseException, path: Path) -> bool:
    """Whether ``error`` was raised by a line of the learner's file (not by tinynet's check)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename == str(path)


def _where(error: BaseException, path: Path) -> str:
    """' (at <file> line N)' for the innermost frame of ``error`` in the learner's file."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == str(path)]
    return f" (at {path.name} line {frames[-1].lineno}: {frames[-1].line})" if frames else ""


@contextlib.contextmanager
def _host_kept(folder: Path):
    """Put back what a learner's file may change in the host process."""
    path, cwd = list(sys.path), os.getcwd()
    modules = set(sys.modules)
    errors, printing = np.geterr(), np.get_printoptions()
    try:
        yield
    finally:
        sys.path[:] = path
        os.chdir(cwd)
        np.seterr(**errors)
        np.set_printoptions(**printing)
        folder = folder.resolve()
        for name in set(sys.modules) - modules:  # a helper the file imported from its folder
            origin = getattr(sys.modules[name], "__file__", None)
            if origin and folder in Path(origin).resolve().parents:
                del sys.modules[name]


def report(grades: list[Grade]) -> str:
    """The table of statuses, then each failing exercise's case and hint."""
    width = max(len("exercise"), *(len(g.name) for g in grades))
    lines = [f"{'exercise':<{width}}  status", f"{'-' * width}  {'-' * 13}"]
    lines += [f"{g.name:<{width}}  {g.status}" for g in grades]
    passed = sum(g.status == PASSED for g in grades)
    lines.append(f"{passed} of {len(grades)} passed")
    for g in grades:
        if g.status in (FAILING, NOT_YOURS):
            lines += ["", f"{g.name}: {g.status}", *("  " + line for line in g.detail.splitlines())]
    return "\n".join(lines)
