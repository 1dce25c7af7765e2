"""Another process holding a run folder's lock (``tinynet.run_folder.hold``), for the tests of
one writer per run folder, on one process and under mpiexec."""

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Holds ``run_folder.hold(argv[1])`` until its stdin closes.
HOLD_FOLDER = """
import sys
from tinynet import run_folder
with run_folder.hold(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def holding(folder: Path):
    """Another process holding ``folder``'s lock while the block runs; yields it."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOLDER, str(folder)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert process.stdout.readline() == "held\n"
        yield process
    finally:
        process.stdin.close()
        process.wait(timeout=60)
