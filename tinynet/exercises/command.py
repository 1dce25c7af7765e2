"""``tinynet exercises list | start DIR | check DIR [NAME ...] | solution NAME`` (the parser is in
tinynet/cli.py): what each action prints, and its exit code."""

from __future__ import annotations

import tinynet.exercises as exercises
from tinynet.exercises.grader import PASSED, report


def run(args) -> int:
    """Run ``args.action``; the exit code: 0, or 1 when ``check`` finds an exercise not passed."""
    return _ACTIONS[args.action](args)


def _list(args) -> int:
    width = max(map(len, exercises.EXERCISES))
    for number, (name, exercise) in enumerate(exercises.EXERCISES.items(), 1):
        print(f"{number:2}. {name:<{width}}  {exercise.summary}")
        print(f"    {'':<{width}}  practises {', '.join(exercise.lessons)}")
    print("\nStart with: tinynet exercises start DIR   then: tinynet exercises check DIR")
    return 0


def _start(args) -> int:
    for path, written in exercises.start(args.directory):
        print(f"wrote {path}" if written else f"kept {path} (it exists; your work is not touched)")
    print(f"next: fill in a file, then tinynet exercises check {args.directory} NAME")
    return 0


def _check(args) -> int:
    grades = exercises.check(
        args.directory, args.names, max_examples=args.max_examples, seed=args.seed
    )
    print(report(grades))
    return 0 if all(grade.status == PASSED for grade in grades) else 1


def _solution(args) -> int:
    print(exercises.solution_text(args.name), end="")
    return 0


_ACTIONS = {"list": _list, "start": _start, "check": _check, "solution": _solution}
