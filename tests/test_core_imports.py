"""The line between the core and the machinery (STYLE.md): the core computes and knows nothing of
processes, machines, files or the command line, so none of its modules imports the machinery,
and ``tinynet.summary`` learns a block's naive cost from the block, not by importing models.

Checked statically, over every import statement of every file (function-local ones, ones under
``if``/``try``, relative ones, and ``importlib.import_module`` / ``__import__`` with a literal
name), so a path that a test run never takes is held to the line too.

The core: the engine (tensor, function, functional, reference, gradcheck and its cases, rng,
hooks, anomaly), ops, kernels, nn, models and optim. ``kernels/cache.py`` is in it: it chooses
the folder numba caches the compiled kernels in, which the kernels cannot be without, and it
imports nothing of the machinery.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tinynet"
CORE = [
    "tensor.py", "function.py", "functional.py", "reference.py", "gradcheck.py",
    "gradcheck_cases.py", "rng.py", "hooks.py", "anomaly.py", "ops", "kernels", "nn", "models",
    "optim",
]  # fmt: skip
MACHINERY = [
    "tinynet.distributed", "tinynet._threads", "tinynet._malloc", "tinynet.train", "tinynet.cli",
    "tinynet.onnx", "tinynet.data", "mpi4py", "tinynet.memory_estimate", "tinynet.tensorboard_log",
    "tensorboardX",
]  # fmt: skip


def module_name(path: Path) -> str:
    """The dotted name of a file of the package (a package's __init__ is the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, package: str) -> set[str]:
    """Every module or module attribute ``source`` imports, dotted (``from a.b import c`` gives
    a.b.c); relative imports are resolved from ``package``, the one the file is in (for a
    package's __init__, the package itself)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call) and node.args:
            called = ast.unparse(node.func)
            first = node.args[0]
            if called in ("importlib.import_module", "import_module", "__import__") and (
                isinstance(first, ast.Constant) and isinstance(first.value, str)
            ):
                names.add(first.value)
    return names


def is_under(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def core_files() -> list[Path]:
    files = []
    for entry in CORE:
        path = PACKAGE / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def imports_of(path: Path) -> set[str]:
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return imported_names(path.read_text(encoding="utf-8"), package)


def test_the_core_is_where_the_list_says():
    missing = [entry for entry in CORE if not (PACKAGE / entry).exists()]
    assert not missing, f"core entries that no longer exist: {missing}"
    assert len(core_files()) > 40  # every file of ops, kernels, nn, models, optim


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_core_module_imports_the_machinery(path):
    crossing = sorted(n for n in imports_of(path) if any(is_under(n, m) for m in MACHINERY))
    assert not crossing, f"{path.relative_to(PACKAGE)} imports the machinery: {crossing}"


def test_the_core_imports_only_the_core():
    """Stronger than the list above: a core module's tinynet imports are core modules (so no
    new machinery module can be reached from the core either)."""
    core = {module_name(path) for path in core_files()}
    outside = {}
    for path in core_files():
        for name in imports_of(path):
            if is_under(name, "tinynet") and not any(is_under(name, c) for c in core):
                outside.setdefault(str(path.relative_to(PACKAGE)), []).append(name)
    assert not outside, f"core modules importing tinynet modules outside the core: {outside}"


def test_summary_does_not_import_the_models():
    names = imports_of(PACKAGE / "summary.py")
    assert not [n for n in names if is_under(n, "tinynet.models")], sorted(names)


@pytest.mark.parametrize(
    "source, package, expected",
    [
        ("def f():\n    from tinynet import distributed\n", "tinynet.nn", "tinynet.distributed"),
        ("try:\n    import mpi4py.MPI\nexcept ImportError:\n    pass\n", "tinynet", "mpi4py.MPI"),
        ("from .. import train\n", "tinynet.ops", "tinynet.train"),
        ("from ..data import loader\n", "tinynet.nn", "tinynet.data.loader"),
        ("from . import _threads\n", "tinynet", "tinynet._threads"),
        ("import importlib\nimportlib.import_module('tinynet.cli')\n", "tinynet", "tinynet.cli"),
        ("__import__('tinynet._malloc')\n", "tinynet", "tinynet._malloc"),
    ],
)
def test_the_check_sees_every_kind_of_import(source, package, expected):
    assert expected in imported_names(source, package)
