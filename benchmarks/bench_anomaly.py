"""What ``tinynet.detect_anomaly()`` costs: a training step's time and memory with it off and on.

    python benchmarks/bench_anomaly.py [--repeat R] [--small-batch B] [--paper-batch B]
                                       [--no-paper] [--no-memory]

Rows: the main job's ``small`` network at 32x32 (batch 64 by default) and the paper's GoogLeNet
at 224x224 (batch 2), each a whole training step (train-mode forward with the aux heads, main +
0.3 x aux cross-entropies, backward, SGD momentum 0.9) on fixed random data, warmed up, then
timed ``--repeat`` times with off and on alternating, so that load from elsewhere hits both
alike; the medians of the wall time and of the process's CPU time (all its threads; less
disturbed than the wall time when other processes share the cores) and their ratios are
printed, and the ratio of the fastest steps (the least disturbed); and the time the checks
themselves take within a step that runs them (on a loaded machine the surest of these).
Memory: the peak resident size over two steps above the process's after building the network,
a fresh process per row and mode (on keeps each op's inputs until its backward, for the
report).

Off, the only work anomaly detection adds is one read of a thread-local attribute per op in
``Function.apply`` and one per ``backward()`` call (and a test of a local per graph node). That
is below what a step's timing can resolve, so it is bounded instead: the time of the read
(timed alone) times the ops of one step, as a share of the step.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

import tinynet  # noqa: E402
from tinynet import anomaly  # noqa: E402
from tinynet.models import googlenet_loss, googlenet_paper, googlenet_small  # noqa: E402
from tinynet.optim import SGD  # noqa: E402

AUX_WEIGHT, LR, MOMENTUM, WARMUP = 0.3, 0.01, 0.9, 2


NETWORKS = {"small": (googlenet_small, 32), "paper": (googlenet_paper, 224)}


def training_step(build, side: int, batch: int):
    """The step of ``build()``'s network on a fixed batch, and a function counting the ops it
    records (on a forward and loss of its own)."""
    tinynet.manual_seed(0)
    model = build().train()
    rng = np.random.default_rng(0)
    x = tinynet.tensor(rng.standard_normal((batch, 3, side, side), dtype=np.float32))
    target = rng.integers(0, model.config.num_classes, batch)
    optimizer = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def step():
        optimizer.zero_grad()
        googlenet_loss(model(x), target, AUX_WEIGHT).backward()
        optimizer.step()

    def ops() -> int:
        return len(tinynet.trace(googlenet_loss(model(x), target, AUX_WEIGHT)).ops)

    return step, ops


class TimedChecks(anomaly.detect_anomaly):
    """detect_anomaly() adding up the wall time of its checks in ``seconds``: what it adds to a
    step, measured inside the step, so that load that stretches whole steps cannot hide it."""

    seconds = 0.0

    def check_forward(self, *args):
        self._timed(super().check_forward, args)

    def check_arriving(self, *args):
        self._timed(super().check_arriving, args)

    def check_backward(self, *args):
        self._timed(super().check_backward, args)

    def _timed(self, check, args):
        start = time.perf_counter()
        try:
            check(*args)
        finally:
            self.seconds += time.perf_counter() - start


def timed(step, on: bool) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of all the process's threads, seconds in the checks) of a
    step."""
    watch = TimedChecks(enabled=on)
    start, cpu = time.perf_counter(), time.process_time()
    with watch:
        step()
    return time.perf_counter() - start, time.process_time() - cpu, watch.seconds


def flag_read_seconds() -> float:
    """One read of the switch as ``Function.apply`` makes it, best of several runs."""
    number = 1_000_000
    runs = timeit.repeat("state.mode", globals={"state": anomaly.state}, number=number, repeat=5)
    return min(runs) / number


def peak_megabytes(name: str, batch: int, on: bool) -> float:
    """The memory row of ``name`` with detection ``on`` or off, measured in a fresh process."""
    worker = [sys.executable, __file__, "--memory-worker", name, str(batch), "on" if on else "off"]
    return float(subprocess.run(worker, capture_output=True, text=True, check=True).stdout)


def memory_worker(name: str, batch: int, on: bool) -> None:
    tinynet.runtime.configure()
    build, side = NETWORKS[name]
    step, _ = training_step(build, side, batch)
    before = peak_resident_kb()
    for _ in range(2):
        timed(step, on)
    print((peak_resident_kb() - before) / 1024)


def peak_resident_kb() -> int:
    """This process's peak resident size (Linux's VmHWM; ru_maxrss would start from the size of
    the process that started it, which exec keeps)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status: the memory rows need Linux")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed steps per mode (default 7)")
    parser.add_argument("--small-batch", type=int, default=64)
    parser.add_argument("--paper-batch", type=int, default=2)
    parser.add_argument("--no-paper", action="store_true", help="only the small network")
    parser.add_argument("--no-memory", action="store_true", help="times only")
    parser.add_argument("--memory-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        name, batch, mode = args.memory_worker
        return memory_worker(name, int(batch), mode == "on")
    tinynet.runtime.configure()  # as the trainer and the commands run
    print(describe())
    rows = [("small", args.small_batch)] + ([] if args.no_paper else [("paper", args.paper_batch)])
    read = flag_read_seconds()
    print(f"one read of the switch (anomaly.state.mode): {read * 1e9:.0f} ns\n")
    print(
        "| network | batch | ops per step | off: median (min), ms | on: median (min), ms "
        "| on / off: medians (mins) | CPU on / off | in the checks, ms (share of on) "
        "| off's reads, bound | peak MB off | on |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, batch in rows:
        build, side = NETWORKS[name]
        step, count_ops = training_step(build, side, batch)
        ops = count_ops()
        for _ in range(WARMUP):
            timed(step, False)
            timed(step, True)
        times = {False: [], True: []}
        for _ in range(args.repeat):
            for on in (False, True):
                times[on].append(timed(step, on))
        (off, off_cpu, _), (on, on_cpu, checks) = (
            [statistics.median(column) for column in zip(*times[mode])] for mode in (False, True)
        )
        off_min, on_min = (min(wall for wall, *_ in times[mode]) for mode in (False, True))
        bound = 2 * ops * read  # a read per op in forward and a test per node in backward
        memory = "| - | - |"
        if not args.no_memory:
            off_mb, on_mb = (peak_megabytes(name, batch, mode) for mode in (False, True))
            memory = f"| {off_mb:.0f} | {on_mb:.0f} |"
        print(
            f"| {name} {side}x{side} | {batch} | {ops} | {off * 1e3:.0f} ({off_min * 1e3:.0f}) "
            f"| {on * 1e3:.0f} ({on_min * 1e3:.0f}) | {on / off:.2f}x ({on_min / off_min:.2f}x) "
            f"| {on_cpu / off_cpu:.2f}x | {checks * 1e3:.0f} ({checks / on:.1%}) "
            f"| {bound * 1e6:.0f} us = {bound / off:.1e} of the step "
            f"{memory}"
        )


if __name__ == "__main__":
    main()
