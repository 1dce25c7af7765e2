"""What every lesson shares: where it writes its files.

A lesson run as a script takes ``--out FOLDER``; without it (and in Jupyter, whose kernel passes
its own arguments, which are ignored here) it writes into a new temporary folder, never into the
repository.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def output_folder(lesson: str) -> Path:
    """The folder this lesson writes into (made if missing), printed so the reader can look."""
    parser = argparse.ArgumentParser(description=f"tinynet lesson: {lesson}")
    parser.add_argument("--out", help="folder for the lesson's files (default: a temporary one)")
    args, _ = parser.parse_known_args()
    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix=f"tinynet-{lesson}-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{lesson}: writing into {folder}")
    return folder
