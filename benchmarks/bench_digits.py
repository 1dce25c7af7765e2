"""The main job, measured: run ``tinynet train`` (the README's command, with its defaults) in a
fresh process and report its wall time, training images/s per epoch and test accuracy.

    python benchmarks/bench_digits.py [--out DIR] [-- extra tinynet train options]

The wall time is the whole command as a user sees it: start-up, loading the digits, numba's
compiled-kernel cache (or compilation, on a first run), training, evaluation and checkpoints.
Prints a markdown table; benchmarks/digits.md holds a recorded run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "an unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="run folder (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="more `tinynet train` options, after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or Path(scratch) / "digits")
        command = [sys.executable, "-m", "tinynet", "train", "--out", str(out), *args.extra]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    command = " ".join(["tinynet train", *args.extra])
    print(
        f"\n`{command}` on {cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}\n"
    )
    print("| epoch | train loss | test loss | test top-1 | epoch time (s) | train img/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for h in history:
        print(
            f"| {h['epoch']} | {h['train_loss']:.4f} | {h['test_loss']:.4f} | "
            f"{100 * h['test_top1']:.2f}% | {h['seconds']:.1f} | {h['images_per_second']:.0f} |"
        )
    train_seconds = sum(h["seconds"] for h in history)
    print(
        f"\nwhole command: {wall:.1f} s wall ({train_seconds:.1f} s in training epochs); final "
        f"test top-1 {100 * history[-1]['test_top1']:.2f}%"
    )


if __name__ == "__main__":
    main()
