"""The README's promises: its two commands lead it, and its Python snippets run as written."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", TEXT, re.S)


def command_after(marker: str) -> str:
    """The command in the fenced block after ``<!-- marker -->``, as .ci/run reads it."""
    match = re.search(rf"<!-- {marker} -->\n```sh\n(.+)\n```", TEXT)
    assert match, f"README.md has no <!-- {marker} --> block"
    return match[1]


def test_the_two_commands_open_the_readme():
    head = TEXT[: TEXT.index("tinynet is a deep-learning framework")]
    main, tests = command_after("main-command"), command_after("test-command")
    assert main in head and tests in head
    assert main.endswith('pip install ".[train]" && tinynet train')
    assert tests.endswith('pip install -e ".[dev]" && python -m pytest')


@pytest.mark.parametrize(
    "snippet",
    [s for s in SNIPPETS if "googlenet.npz" not in s],  # that one needs downloaded weights
    ids=lambda s: s.splitlines()[-1][:40],
)
def test_python_snippets_run_as_written(snippet):
    for name in re.findall(r"^(?:import|from) (\w+)", snippet, re.M):
        if importlib.util.find_spec(name) is None:  # an optional reference, e.g. onnxruntime
            pytest.skip(f"this snippet needs {name}, which is not installed")
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", snippet],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    if "summary" in snippet:
        assert "parameters: 13,378,280 (6,998,552 used at inference)" in result.stdout
        assert result.stdout.strip() in TEXT  # the table the README shows is the one printed
