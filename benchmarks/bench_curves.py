"""Cost curves of the paper's GoogLeNet: how time and memory grow with the batch and the image
size, in tinynet, PyTorch and ONNX Runtime, in one run.

    python benchmarks/bench_curves.py [--out DIR] [--quick] [--repeat R] [--threads T]
                                      [--only CURVES]

Curves (``--only`` takes their names, comma-separated):
  eval_batch    eval forward, time per image against the batch (1 ... 64) at 224x224
  eval_size     eval forward, time per image against the image side (64 ... 299) at batch 8
  train_batch   training step (train-mode forward with the aux heads, main + 0.3 x aux
                cross-entropies, backward, SGD momentum 0.9), time per image against the batch
                at 224x224; tinynet and PyTorch (ONNX Runtime does not train)
  train_memory  peak memory of that training step against the batch: ru_maxrss above the
                process's ru_maxrss right after its imports, a fresh process per point

The machinery is bench_googlenet.py's: the weights saved once by tinynet, one worker process per
framework with the same thread count, each point warmed up once, then timed ``--repeat`` times
(median plotted) with the workers driven in turns so that load from elsewhere hits them alike.
ONNX Runtime runs the PyTorch model exported once per image side with a dynamic batch axis.

Writes one PNG per curve and ``curves.json`` (every point, the machine) into ``--out``, and prints
a markdown table of every point.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench_googlenet import (
    installed,
    measure_memory,
    missing,
    save_weights,
    set_thread_env,
    start_workers,
    time_row,
)
from machine import cpu_model, describe, instruction_set

HERE = Path(__file__).resolve().parent
NETWORK = "paper"
BATCHES = (1, 2, 4, 8, 16, 32, 64)
SIDES = (64, 96, 128, 160, 224, 299)
QUICK = {"batch": (1, 2, 4), "side": (64, 96)}
WARMUP = 1  # per point; the first point of a worker also loads numba's cache in it
STYLE = {"tinynet": "o-", "torch": "s-", "onnxruntime": "^-"}


@dataclass(frozen=True)
class Curve:
    """One plot: ``what`` ('eval' or 'train') of the paper's network swept over ``axis``
    ('batch' or 'side') with the other held at ``fixed``, for the frameworks ``kinds``.
    ``measure`` 'time' is timed in the long-lived workers, 'memory' measured in a fresh process
    per point."""

    title: str
    what: str
    axis: str
    fixed: int
    kinds: tuple[str, ...]
    measure: str = "time"

    def row(self, value) -> tuple:
        """The (network, side, batch, what) row of the point at ``value`` on the axis."""
        side, batch = (self.fixed, value) if self.axis == "batch" else (value, self.fixed)
        return NETWORK, side, batch, self.what


ALL = ("tinynet", "torch", "onnxruntime")
CURVES = {
    "eval_batch": Curve("eval forward at 224x224", "eval", "batch", 224, ALL),
    "eval_size": Curve("eval forward at batch 8", "eval", "side", 8, ALL),
    "train_batch": Curve("training step at 224x224", "train", "batch", 224, ("tinynet", "torch")),
    "train_memory": Curve(
        "peak memory of a training step at 224x224",
        "train",
        "batch",
        224,
        ("tinynet", "torch"),
        "memory",
    ),
}
AXIS_LABELS = {"batch": "batch size (images)", "side": "image side (pixels, square images)"}


def positive(text) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=HERE / "curves", help="folder for the PNGs and curves.json"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: batches 1,2,4, sides 64,96, 1 repetition (unless --repeat)",
    )
    parser.add_argument("--repeat", type=positive, help="timed repetitions per point (default 3)")
    parser.add_argument("--threads", type=positive, default=os.cpu_count(), help="default: all")
    parser.add_argument(
        "--only", default="", help="comma-separated curves, from: " + ", ".join(CURVES)
    )
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - CURVES.keys())
    if unknown:
        parser.error(f"--only: unknown curves {unknown}; choose from {list(CURVES)}")
    args.curves = [name for name in CURVES if name in wanted or not wanted]
    args.repeat = args.repeat or (1 if args.quick else 3)
    return args


# ================================================================================ measuring
def axis_values(curve, quick) -> tuple:
    if quick:
        return QUICK[curve.axis]
    return BATCHES if curve.axis == "batch" else SIDES


def measure_times(names, args, weights, notes, seconds) -> dict:
    """{curve name: [point]} for the 'time' curves in ``names``, timed in one worker per
    framework that they need; each curve's wall time into ``seconds``."""
    kinds = [kind for kind in ALL if any(kind in CURVES[name].kinds for name in names)]
    workers = start_workers(kinds, args, weights, notes)
    results = {}
    try:
        for name in names:
            curve, points, start = CURVES[name], [], time.perf_counter()
            running = {kind: w for kind, w in workers.items() if kind in curve.kinds}
            for value in axis_values(curve, args.quick):
                row = curve.row(value)
                label = f"{name} {curve.axis} {value}"
                times = time_row(running, row, args.repeat, WARMUP, notes, label)
                points += [time_point(kind, row, ts) for kind, ts in times.items()]
                progress(label, start)
            results[name] = points
            seconds[name] = round(time.perf_counter() - start)
    finally:
        for worker in workers.values():
            worker.close()
    return results


def measure_memories(name, args, weights, notes, seconds) -> list:
    """The points of the 'memory' curve ``name``: one fresh process per framework and value;
    its wall time into ``seconds``."""
    curve, points, start = CURVES[name], [], time.perf_counter()
    kinds = []
    for kind in curve.kinds:
        if missing(kind):
            notes.append(f"{name}: {missing(kind)}")
        else:
            kinds.append(kind)
    for value in axis_values(curve, args.quick):
        row = curve.row(value)
        for kind in kinds:
            answer = measure_memory(kind, row, weights, args.threads)
            if "error" in answer:
                notes.append(f"{kind} {name} {curve.axis} {value}: {answer['error']}")
                continue
            peak, baseline = answer["peak_mb"], answer["baseline_mb"]
            points.append(
                {
                    **point_key(kind, row),
                    "peak_mb": round(peak, 1),
                    "baseline_mb": round(baseline, 1),
                    "above_import_mb": round(peak - baseline, 1),
                }
            )
        progress(f"{name} {curve.axis} {value}", start)
    seconds[name] = round(time.perf_counter() - start)
    return points


def point_key(kind, row) -> dict:
    _, side, batch, _ = row
    return {"framework": kind, "batch": batch, "side": side}


def time_point(kind, row, times) -> dict:
    median = statistics.median(times)
    return {
        **point_key(kind, row),
        "times_ms": [round(t * 1e3, 2) for t in times],
        "median_ms": round(median * 1e3, 2),
        "ms_per_image": round(median * 1e3 / row[2], 3),
    }


def progress(label, start) -> None:
    print(f"  {label} done, {time.perf_counter() - start:.0f} s into the curve", file=sys.stderr)


# ================================================================================ reporting
TIME_COLUMNS = ("median ms", "min ms", "max ms", "ms/image", "x torch")
MEMORY_COLUMNS = ("peak MB", "after imports MB", "above imports MB")


def print_tables(results) -> None:
    """Markdown tables of every point: the timed curves, then the memory curves."""
    timed, memory = [], []
    for name, points in results.items():
        for p in points:
            key = [name, p["framework"], str(p["batch"]), str(p["side"])]
            if CURVES[name].measure == "time":
                times = [p["median_ms"], min(p["times_ms"]), max(p["times_ms"])]
                timed.append(
                    key
                    + [f"{t:.1f}" for t in times]
                    + [f"{p['ms_per_image']:.2f}", ratio_to_torch(p, points)]
                )
            else:
                mb = (p["peak_mb"], p["baseline_mb"], p["above_import_mb"])
                memory.append(key + [f"{m:.0f}" for m in mb])
    for columns, rows in ((TIME_COLUMNS, timed), (MEMORY_COLUMNS, memory)):
        if rows:
            print_markdown(("curve", "framework", "batch", "side", *columns), rows)


def print_markdown(columns, rows) -> None:
    """A markdown table, the first two columns (names) left-aligned, the numbers right."""
    print("| " + " | ".join(columns) + " |")
    print("|---|---|" + "--:|" * (len(columns) - 2))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def ratio_to_torch(point, points) -> str:
    """This point's median over PyTorch's at the same batch and side, or '-' without one."""
    same = (point["batch"], point["side"])
    ref = [p for p in points if p["framework"] == "torch" and (p["batch"], p["side"]) == same]
    return f"{point['median_ms'] / ref[0]['median_ms']:.2f}" if ref else "-"


def plot(plt, name, points, machine_title, out) -> Path:
    """One PNG: a line per framework over the curve's axis, log-log, so that a slope reads as
    an exponent (time per image: flat where the cost is proportional to the batch; memory: a
    fixed part at small batches, then slope 1)."""
    from matplotlib.ticker import LogFormatter

    from tinynet.plot import save_figure

    curve = CURVES[name]
    figure, axes = plt.subplots(figsize=(7, 5))
    values = sorted({p[curve.axis] for p in points})
    for kind in curve.kinds:
        mine = sorted((p for p in points if p["framework"] == kind), key=lambda p: p[curve.axis])
        if not mine:
            continue
        y = [p["ms_per_image" if curve.measure == "time" else "above_import_mb"] for p in mine]
        axes.plot([p[curve.axis] for p in mine], y, STYLE[kind], label=kind)
    if curve.measure == "time":
        axes.set_ylabel("time per image (ms, median)")
        if curve.axis == "side" and len(values) > 1:
            pixels_guide(axes, points, values)
    else:
        axes.set_ylabel("peak memory above the imports (MB, ru_maxrss)")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(values, [str(v) for v in values])
    axes.set_xticks([], minor=True)
    for which in ("major", "minor"):  # 300, not 3 x 10^2
        getattr(axes.yaxis, f"set_{which}_formatter")(LogFormatter(labelOnlyBase=False))
    axes.set_xlabel(AXIS_LABELS[curve.axis])
    axes.set_title(f"GoogLeNet (paper): {curve.title}\n{machine_title}", fontsize=10)
    axes.grid(alpha=0.3, which="both")
    axes.legend()
    figure.tight_layout()
    return save_figure(plt, figure, out / f"{name}.png")


def pixels_guide(axes, points, values) -> None:
    """A dotted line proportional to side^2 through tinynet's (or the first framework's) point
    at the largest side: where a framework's points rise above it towards small images, fixed
    per-image costs dominate."""
    largest = [p for p in points if p["side"] == values[-1]]
    anchor = next((p for p in largest if p["framework"] == "tinynet"), largest[0])
    scale = anchor["ms_per_image"] / values[-1] ** 2
    axes.plot(values, [scale * v**2 for v in values], ":", color="grey", label="∝ side²")


def write_json(path, machine, args, results, seconds, notes) -> None:
    from tinynet.io import atomic_write

    report = {
        "machine": machine,
        "threads": args.threads,
        "repeat": args.repeat,
        "warmup": WARMUP,
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "network": "googlenet_paper",
        "curves": {
            name: {**asdict(CURVES[name]), "seconds": seconds[name], "points": points}
            for name, points in results.items()
        },
        "notes": notes,
    }
    with atomic_write(path, "w") as file:
        json.dump(report, file, indent=1)


# ================================================================================ main
def check_output(out) -> None:
    """Refuse at once (one line, exit 1) what would only fail after minutes of measuring: no
    matplotlib, or an ``--out`` that cannot be made or written into."""
    if not installed("matplotlib"):
        sys.exit("bench_curves.py: the plots need matplotlib: pip install 'tinynet[train]'")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        sys.exit(f"bench_curves.py: --out {out} cannot be made: {error.strerror or error}")
    if not os.access(out, os.W_OK):
        sys.exit(f"bench_curves.py: --out {out} is not writable")


def main():
    args = parse_args()
    set_thread_env(args.threads)
    check_output(args.out)
    # This process imports tinynet (for the plots) only after the measurements: the import sets
    # thread-policy variables (tinynet/_threads.py) that the workers started from here would
    # inherit, and the torch and ONNX Runtime workers must keep their own defaults.
    wall = time.perf_counter()
    machine = describe()
    print(f"{machine}; {args.threads} threads per framework, float32\n")
    machine_title = f"{cpu_model()}, {instruction_set()}, {args.threads} threads"
    notes, results, seconds = [], {}, {}
    with tempfile.TemporaryDirectory() as weights:
        save_weights(weights)
        timed = [name for name in args.curves if CURVES[name].measure == "time"]
        if timed:
            results.update(measure_times(timed, args, weights, notes, seconds))
        for name in args.curves:
            if CURVES[name].measure == "memory":
                results[name] = measure_memories(name, args, weights, notes, seconds)
    results = {name: results[name] for name in args.curves}  # in CURVES' order
    print_tables(results)
    from tinynet.plot import pyplot

    plt = pyplot("bench_curves.py's plots")
    for name, points in results.items():
        if points:
            print("wrote", plot(plt, name, points, machine_title, args.out))
    write_json(args.out / "curves.json", machine, args, results, seconds, notes)
    print("wrote", args.out / "curves.json")
    print(
        f"run took {time.perf_counter() - wall:.0f} s (curves: "
        + ", ".join(f"{name} {s} s" for name, s in seconds.items())
        + f"); {args.repeat} timed repetitions and {WARMUP} warm-up per point"
    )
    print("x torch: the point's median / PyTorch's median at the same batch and side (< 1: faster)")
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
