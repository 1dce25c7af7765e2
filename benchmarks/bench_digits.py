"""The main job, measured: run ``tinynet train`` (the README's command, with its defaults) in a
fresh process and report its wall time, training images/s per epoch and test accuracy.

    python benchmarks/bench_digits.py [--out DIR] [-- extra tinynet train options]
    python benchmarks/bench_digits.py --baseline CHECKOUT [--rounds R] [-- options]

The wall time is the whole command as a user sees it: start-up, loading the digits, numba's
compiled-kernel cache (or compilation, on a first run), training, evaluation and checkpoints.
Prints a markdown table; benchmarks/digits.md holds a recorded run.

With ``--baseline`` the same command also runs from another checkout of tinynet (a
``git worktree`` of an older commit, say), with the same interpreter and packages, its folder put
first on PYTHONPATH; the two alternate, ``--rounds`` times each, each run in a fresh process after
one untimed run per checkout that warms its kernel cache, so load from elsewhere hits both alike.
It prints every run's wall time, the medians and their ratio (this checkout / the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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


def run_main_job(out: Path, extra, checkout: Path | None = None) -> tuple[float, list[dict]]:
    """``tinynet train --out out *extra`` in a fresh process (from ``checkout``'s tinynet if
    given): (wall seconds, the metrics.jsonl records)."""
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "tinynet", "train", "--out", str(out), *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL if checkout else None)
    wall = time.perf_counter() - start
    return wall, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def compare(baseline: Path, rounds: int, extra) -> None:
    """This checkout against ``baseline``'s, alternately, in one run."""
    here = Path(__file__).resolve().parent.parent
    checkouts = {"this": here, "baseline": baseline.resolve()}
    walls = {name: [] for name in checkouts}
    top1 = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as scratch:
        extra = [*extra, "--overwrite"]  # each checkout's run folder is reused
        for name, checkout in checkouts.items():  # warm each checkout's kernel cache
            run_main_job(Path(scratch) / name, [*extra, "--max-batches", "1", "--epochs", "1"],
                         checkout)  # fmt: skip
        for round_ in range(rounds):
            order = list(checkouts) if round_ % 2 == 0 else list(reversed(checkouts))
            for name in order:
                wall, history = run_main_job(Path(scratch) / name, extra, checkouts[name])
                walls[name].append(wall)
                top1[name].append(history[-1]["test_top1"])
                print(f"round {round_ + 1} {name:<8} {wall:6.1f} s  top-1 "
                      f"{100 * history[-1]['test_top1']:.2f}%", flush=True)  # fmt: skip
    medians = {name: statistics.median(w) for name, w in walls.items()}
    print(f"\n`tinynet train {' '.join(extra)}` on {cpu_model()}, {os.cpu_count()} cores")
    for name, checkout in checkouts.items():
        print(f"  {name:<8} {checkout}: median {medians[name]:.1f} s "
              f"(runs {', '.join(f'{w:.1f}' for w in walls[name])})")  # fmt: skip
    print(f"  this / baseline: {medians['this'] / medians['baseline']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="run folder (default: a temporary one)")
    parser.add_argument("--baseline", type=Path, help="another tinynet checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="runs per checkout (--baseline)")
    parser.add_argument("extra", nargs="*", help="more `tinynet train` options, after --")
    args = parser.parse_args()
    if args.baseline is not None:
        if not (args.baseline / "tinynet" / "__init__.py").is_file():
            sys.exit(f"--baseline: {args.baseline} is not a tinynet checkout (no tinynet/)")
        return compare(args.baseline, args.rounds, args.extra)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or Path(scratch) / "digits")
        wall, history = run_main_job(out, args.extra)

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
