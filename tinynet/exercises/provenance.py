"""Whose work an exercise file is: the names it takes from tinynet, read from its syntax tree.

An exercise passes on the learner's own NumPy. A file that imports tinynet's ops, reference
twins, functional API, kernels, checker or solutions (or another framework's autograd) would pass
with tinynet's answer, so the grader reads every import, every dotted name that starts at an
imported module (``F.conv2d``, ``tinynet.functional.conv2d``) and every string naming a tinynet
module, and reports what the exercise does not allow. Imports it cannot read statically
(``__import__``, ``importlib``, ``exec``, ``eval``, ``globals()``, ``runpy``, ``sys.modules``)
are reported too: a learner imports what they use with plain ``import`` statements.
"""

from __future__ import annotations

import ast
import re

# Other frameworks would compute the answer as tinynet's own ops would.
FRAMEWORKS = ("torch", "torchvision", "jax", "tensorflow", "keras", "mxnet", "paddle", "micrograd")
DYNAMIC = (
    "__import__", "importlib", "exec", "eval", "compile", "__builtins__", "builtins", "globals",
    "vars", "runpy", "pkgutil", "sys.modules",
)  # fmt: skip
_WHAT = {  # what a tinynet module is, to say why it is not allowed
    "tinynet.ops": "tinynet's own ops",
    "tinynet.reference": "tinynet's reference twins",
    "tinynet.functional": "tinynet's functional ops",
    "tinynet.kernels": "tinynet's kernels",
    "tinynet.testing": "tinynet's checker",
    "tinynet.exercises": "tinynet's own solutions",
    "tinynet.optim": "tinynet's optimisers",
}
_MODULE_STRING = re.compile(r"^tinynet(\.\w+)*$")


def borrowed(source: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """Every use in ``source`` of a name that is not the learner's work, one line each
    ("line 3: tinynet.functional.conv2d (tinynet's functional ops)"); [] for a file of the
    learner's own code. ``allowed``: the dotted tinynet names this exercise permits (a name
    under one is permitted too). ``source`` must parse."""
    tree = ast.parse(source)
    bound = _imports(tree)
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = _imported(node, alias)
                if not _allowed(name, allowed, importing=True):
                    found.append((node.lineno, name))
        elif isinstance(node, (ast.Attribute, ast.Name)) and id(node) not in inner:
            name = _dotted(node, bound)
            if name is not None and not _allowed(name, allowed, importing=False):
                found.append((node.lineno, name))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_STRING.match(node.value) and not _allowed(node.value, allowed, False):
                found.append((node.lineno, f"{node.value!r}"))
    return [f"line {line}: {name} ({_why(name)})" for line, name in sorted(set(found))]


def _imported(node, alias) -> str:
    """The dotted name an import statement brings in (``from a.b import c`` -> ``a.b.c``)."""
    if isinstance(node, ast.Import):
        return alias.name
    module = "." * node.level + (node.module or "")
    return f"{module}.{alias.name}" if module else alias.name


def _imports(tree) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from every import in the file."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:  # `import a.b.c` binds a
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                bound[alias.asname or alias.name] = _imported(node, alias)
    for name in ("__import__", "exec", "eval", "compile", "__builtins__", "globals", "vars"):
        bound.setdefault(name, name)  # builtins that import or run code the grader cannot read
    return bound


def _dotted(node, bound) -> str | None:
    """``F.conv2d`` -> ``tinynet.functional.conv2d`` when F is bound by an import, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in bound:
        return None
    return ".".join([bound[node.id], *reversed(parts)])


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _allowed(name: str, allowed: tuple[str, ...], importing: bool) -> bool:
    """A name is allowed unless it is dynamic importing, another framework, or a tinynet name
    outside ``allowed``; importing a module above an allowed name (``import tinynet.functional
    as F`` for ``tinynet.functional.cat``) is allowed, and each use of it is judged."""
    if name.startswith("."):
        return False  # a relative import: an exercise file stands alone
    if any(_under(name, dynamic) for dynamic in DYNAMIC):
        return False
    root = name.split(".")[0]
    if root in FRAMEWORKS:
        return False
    if root != "tinynet":
        return True
    if any(_under(name, permitted) for permitted in allowed):
        return True
    return importing and any(permitted.startswith(name + ".") for permitted in allowed)


def _why(name: str) -> str:
    name = name.strip("'")
    if name.startswith("."):
        return "a relative import: each exercise file stands alone"
    if any(_under(name, dynamic) for dynamic in DYNAMIC):
        return "an import the grader cannot read: use plain import statements"
    if name.split(".")[0] in FRAMEWORKS:
        return "another framework's ops: write it in NumPy"
    for module, what in _WHAT.items():
        if _under(name, module):
            return what
    return "not allowed in this exercise"
