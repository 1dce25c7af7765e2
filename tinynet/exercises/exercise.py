"""What one exercise is: the code a learner writes, tinynet's answer to it, and its check.

The stub a learner starts from and the solution tinynet prints are both made from one source,
the solution's: the stub keeps every signature and docstring (the math and the hint) and
replaces the bodies of the parts left to the learner with ``raise NotImplementedError``.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass
from typing import Callable

NUMPY = "import numpy as np\n"


@dataclass(frozen=True)
class Exercise:
    """One graded exercise.

    name:      the exercise's name, and the file ``<name>.py`` a learner writes
    entry:     what that file must define and the check calls (a function, or ``Value``)
    summary:   one line for ``tinynet exercises list``
    lessons:   the lessons it practises (file names in examples/lessons/)
    solution:  tinynet's answer: the functions and classes, in the order the file holds them
    stub:      the ones the learner's file starts with (a subset of ``solution``)
    to_write:  the functions (or methods) whose bodies the stub leaves to the learner
    check:     check(answer, max_examples=..., seed=...) raises AssertionError, naming the
               smallest failing case and a hint, unless ``answer`` (the file's ``entry``) is right
    allowed:   the tinynet names a learner's file may use (dotted, e.g. ``tinynet.nn``); none for
               the exercises written in NumPy alone
    imports:   the import lines at the top of the learner's file
    """

    name: str
    entry: str
    summary: str
    lessons: tuple[str, ...]
    solution: tuple[object, ...]
    stub: tuple[object, ...]
    to_write: frozenset[str]
    check: Callable
    allowed: tuple[str, ...] = ()
    imports: str = NUMPY

    @classmethod
    def of_function(cls, function, summary: str, lessons: tuple[str, ...], check, **options):
        """The exercise of writing ``function`` alone: named after it, its body to write."""
        name = function.__name__
        return cls(name, name, summary, lessons, (function,), (function,), frozenset({name}),
                   check, **options)  # fmt: skip

    def stub_text(self, number: int, count: int) -> str:
        """The file ``tinynet exercises start`` writes: the stub parts, bodies to write."""
        parts = [_without_bodies(_source(part), self.to_write) for part in self.stub]
        return self._file(number, count, parts, "Replace each `raise NotImplementedError`.")

    def solution_text(self, number: int, count: int) -> str:
        """tinynet's own answer, as a file that passes ``tinynet exercises check``."""
        parts = [_source(part) for part in self.solution]
        return self._file(number, count, parts, "tinynet's solution.")

    def _file(self, number: int, count: int, parts: list[str], what: str) -> str:
        header = (
            f'"""tinynet exercise {number}/{count}: {self.name}.\n\n{self.summary}\n\n'
            f"{what}\nPractises {', '.join(self.lessons)} (examples/lessons/).\n"
            f"Check it with: tinynet exercises check DIR {self.name}\n"
            f'"""\n\n'
        )
        imports = self.imports + "\n\n" if self.imports else "\n"
        return header + imports + "\n\n".join(parts)


def _source(part) -> str:
    """The source of a function or class, dedented (a method's class comes whole)."""
    return textwrap.dedent(inspect.getsource(part)).rstrip() + "\n"


def _without_bodies(source: str, to_write: frozenset[str]) -> str:
    """``source`` with the body of every function named in ``to_write`` (at any depth) replaced
    by ``raise NotImplementedError``; its signature and docstring stay."""
    lines = source.splitlines()
    cuts = []  # (first body line after the docstring, last line, indent), 1-based
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name in to_write:
            body = node.body
            has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            first = body[0].end_lineno + 1 if has_doc else body[0].lineno
            indent = " " * body[-1].col_offset
            cuts.append((first, node.end_lineno, indent))
    for first, last, indent in sorted(cuts, reverse=True):
        lines[first - 1 : last] = [f"{indent}raise NotImplementedError"]
    return "\n".join(lines) + "\n"


def op_check(op: str, role: str) -> Callable:
    """The check of an exercise that writes op ``op``'s ``role`` ('forward' or 'backward'):
    ``tinynet.testing.check_op`` on cases drawn by hypothesis, against tinynet's reference."""

    def check(answer, max_examples: int = 100, seed: int = 0) -> None:
        from tinynet.testing import check_op  # needs hypothesis: only when an exercise is graded

        functions = (answer, None) if role == "forward" else (None, answer)
        check_op(op, *functions, max_examples=max_examples, seed=seed)

    return check
