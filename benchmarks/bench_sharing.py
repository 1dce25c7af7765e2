"""Two trainings on one machine: do they keep the machine's throughput?

    python benchmarks/bench_sharing.py [--epochs E] [-- extra tinynet train options]

Runs the README's main job (``tinynet train``, digits, the small GoogLeNet) for E epochs:
alone, then two copies started together, in three ways:

- sharing: tinynet's default; each run takes ``cores // runs`` threads while the other trains
  (``tinynet/_threads.py``, rule 3);
- oversubscribed: ``TINYNET_NUM_THREADS`` set to every core in both, so each uses all of them
  (what two runs did before the sharing existed);
- pinned: each run given its own cores with ``taskset`` (its pools follow its affinity mask).

Images/s are the training epochs' (metrics.jsonl: images over the epochs' seconds, evaluation
excluded). For two runs, the sum of both over the epochs before the last (both still running),
and that sum against one run alone: the target of issue 15 is >= 0.90.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import describe


def train_command(out: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "tinynet", "train", "--epochs", str(epochs), "--out", str(out)]


def images_per_second(out: Path, epochs: int) -> float:
    """Training images/s over the epochs before the last (all of them for a run alone)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs_run = [r for r in records if "epoch" in r and "images_per_second" in r]
    kept = epochs_run[:-1] if len(epochs_run) > 1 else epochs_run
    return sum(r["images_per_second"] * r["seconds"] for r in kept) / sum(
        r["seconds"] for r in kept
    )


def run_together(scratch: Path, name: str, epochs: int, extra, prefixes, env) -> list[float]:
    processes, outs = [], []
    for i, prefix in enumerate(prefixes):
        out = scratch / f"{name}-{i}"
        outs.append(out)
        command = prefix + train_command(out, epochs) + extra
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        )
    for process in processes:
        _, errors = process.communicate()
        if process.returncode:
            raise SystemExit(f"{name}: a run failed: {errors.decode()[-500:]}")
    return [images_per_second(out, epochs) for out in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="more `tinynet train` options, after --")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(describe())
    env = {k: v for k, v in os.environ.items() if k != "TINYNET_NUM_THREADS"}
    oversubscribed = {**env, "TINYNET_NUM_THREADS": str(cores)}
    half = max(1, cores // 2)
    pinned = [["taskset", "-c", f"0-{half - 1}"], ["taskset", "-c", f"{half}-{cores - 1}"]]
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        (alone,) = run_together(scratch, "alone", args.epochs, args.extra, [[]], env)
        rows = [("one run alone", [alone])]
        rows.append(("two runs, sharing", run_together(
            scratch, "sharing", args.epochs, args.extra, [[], []], env)))  # fmt: skip
        rows.append(("two runs, oversubscribed", run_together(
            scratch, "over", args.epochs, args.extra, [[], []], oversubscribed)))  # fmt: skip
        if shutil.which("taskset") and cores >= 2:
            rows.append(("two runs, pinned", run_together(
                scratch, "pinned", args.epochs, args.extra, pinned, env)))  # fmt: skip
    command = " ".join(["tinynet train --epochs", str(args.epochs), *args.extra])
    print(f"\n`{command}`\n")
    print("| how | img/s of each run | img/s in all | x one run alone |")
    print("|---|---:|---:|---:|")
    for label, rates in rows:
        each = " + ".join(f"{r:.0f}" for r in rates)
        print(f"| {label} | {each} | {sum(rates):.0f} | {sum(rates) / alone:.2f} |")


if __name__ == "__main__":
    main()
