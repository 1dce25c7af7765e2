"""What ``tinynet.detect_anomaly()`` costs: a training step's time with it off and on.

    python benchmarks/bench_anomaly.py [--repeat R] [--small-batch B] [--paper-batch B]
                                       [--no-paper]

Rows: the main job's ``small`` network at 32x32 (batch 64 by default) and the paper's GoogLeNet
at 224x224 (batch 2), each a whole training step (train-mode forward with the aux heads, main +
0.3 x aux cross-entropies, backward, SGD momentum 0.9) on fixed random data, warmed up, then
timed ``--repeat`` times with off and on alternating, so that load from elsewhere hits both
alike; the medians and their ratio are printed.

Off, the only work anomaly detection adds is one read of a thread-local attribute per op in
``Function.apply`` and one per ``backward()`` call (and a test of a local per graph node). That
is below what a step's timing can resolve, so it is bounded instead: the time of the read
(timed alone) times the ops of one step, as a share of the step.
"""

from __future__ import annotations

import argparse
import statistics
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


def training_step(build, side: int, batch: int):
    """The step of ``build()``'s network on a fixed batch, and the ops it records."""
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

    ops = len(tinynet.trace(googlenet_loss(model(x), target, AUX_WEIGHT)).ops)
    return step, ops


def timed(step, on: bool) -> float:
    watch = anomaly.detect_anomaly(enabled=on)
    start = time.perf_counter()
    with watch:
        step()
    return time.perf_counter() - start


def flag_read_seconds() -> float:
    """One read of the switch as ``Function.apply`` makes it, best of several runs."""
    number = 1_000_000
    runs = timeit.repeat("state.mode", globals={"state": anomaly.state}, number=number, repeat=5)
    return min(runs) / number


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed steps per mode (default 7)")
    parser.add_argument("--small-batch", type=int, default=64)
    parser.add_argument("--paper-batch", type=int, default=2)
    parser.add_argument("--no-paper", action="store_true", help="only the small network")
    args = parser.parse_args(argv)
    tinynet.runtime.configure()  # as the trainer and the commands run
    print(describe())
    rows = [("small", googlenet_small, 32, args.small_batch)]
    if not args.no_paper:
        rows.append(("paper", googlenet_paper, 224, args.paper_batch))
    read = flag_read_seconds()
    print(f"one read of the switch (anomaly.state.mode): {read * 1e9:.0f} ns\n")
    print("| network | batch | ops per step | off (ms) | on (ms) | on / off | off's reads, bound |")
    print("|---|---|---|---|---|---|---|")
    for name, build, side, batch in rows:
        step, ops = training_step(build, side, batch)
        for _ in range(WARMUP):
            timed(step, False)
            timed(step, True)
        times = {False: [], True: []}
        for _ in range(args.repeat):
            for on in (False, True):
                times[on].append(timed(step, on))
        off, on = statistics.median(times[False]), statistics.median(times[True])
        bound = 2 * ops * read  # a read per op in forward and a test per node in backward
        print(
            f"| {name} {side}x{side} | {batch} | {ops} | {off * 1e3:.1f} | {on * 1e3:.1f} | "
            f"{on / off:.2f}x | {bound * 1e6:.0f} us = {bound / off:.1e} of the step |"
        )


if __name__ == "__main__":
    main()
