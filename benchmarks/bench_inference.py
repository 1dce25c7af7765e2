"""The inference plan (tinynet.inference) against the eager eval forward, and each of its
rewrites alone: every variant of one case alternates with the others (A B C ... A B C ...) and
each figure is the median, so a noisy shared machine shifts them all alike.

    python benchmarks/bench_inference.py [--case paper-8] [--repeat 7] [--threads T]

Cases: paper-8 and paper-1 (googlenet_paper, 224x224, batch 8 / 1), small-64 (googlenet_small,
32x32, batch 64); every model in float32, eval mode, random weights and BatchNorm statistics.
Variants: eager (``no_grad`` forward), plan (every rewrite), 'plan -X' (every rewrite but X;
'concat' is the concatenation in place, 'winograd' Winograd's F(2x2, 3x3)), 'plan block=B' (B
GEMM columns per epilogue block).
Also the plan's share of time inside GEMM (np.matmul timed in one extra run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

CASES = {"paper-8": ("paper", 224, 8), "paper-1": ("paper", 224, 1), "small-64": ("small", 32, 64)}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), nargs="+", default=sorted(CASES))
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per figure (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="default: all cores")
    parser.add_argument("--blocks", type=int, nargs="*", default=[], help="column blocks to try")
    parser.add_argument("--no-passes", action="store_true", help="skip the 'plan -X' variants")
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    from bench_googlenet import set_thread_env  # the pools read it when loaded: set it first

    set_thread_env(ARGS.threads)

import numpy as np  # noqa: E402

import tinynet  # noqa: E402
import tinynet.runtime  # noqa: E402
from tinynet.function import no_grad  # noqa: E402
from tinynet.inference import program  # noqa: E402
from tinynet.inference.passes import PASSES  # noqa: E402
from tinynet.models.registry import MODELS  # noqa: E402

tinynet.runtime.configure()  # as tinynet's commands run: OpenBLAS's threads sleep when idle


def build(name: str, size: int, batch: int):
    rng = np.random.default_rng(0)
    model = MODELS[name].build().eval()
    for key, buffer in model.named_buffers():
        if key.endswith("running_mean"):
            buffer[...] = rng.normal(0, 0.1, buffer.shape)
        elif key.endswith("running_var"):
            buffer[...] = rng.uniform(0.5, 2.0, buffer.shape)
    return model, rng.random((batch, 3, size, size)).astype(np.float32)


def without_concat_in_place(model, x):
    """A plan whose concatenations copy their inputs (the slab placement switched off)."""
    place = program.Program._place_concats
    program.Program._place_concats = lambda self, placement: None
    try:
        return tinynet.inference(model, x)
    finally:
        program.Program._place_concats = place


def variants(model, x, blocks):
    def eager(x):
        with no_grad():
            return model(x)

    found = {"eager": eager, "plan": tinynet.inference(model, x)}
    if not ARGS.no_passes:
        for name in PASSES:
            others = [p for p in PASSES if p != name]
            found[f"plan -{name}"] = tinynet.inference(model, x, passes=others)
        found["plan -concat"] = without_concat_in_place(model, x)
        found["plan -winograd"] = tinynet.inference(model, x, winograd=False)
    for block in blocks:
        found[f"plan block={block}"] = tinynet.inference(model, x, column_block=block)
    return {name: (lambda run=run: run(x)) for name, run in found.items()}


def gemm_share(plan, x) -> float:
    """The fraction of one plan call spent in np.matmul (wrapped with a timer for one call)."""
    spent = [0.0]
    matmul = np.matmul

    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = matmul(*args, **kwargs)
        spent[0] += time.perf_counter() - start
        return result

    program.np.matmul = timed  # the module's np is numpy itself: restore right after
    try:
        start = time.perf_counter()
        plan(x)
        total = time.perf_counter() - start
    finally:
        program.np.matmul = matmul
    return spent[0] / total


def main():
    from machine import describe as machine

    print(f"{machine()}; median of {ARGS.repeat}, float32, variants in turns")
    for case in ARGS.case:
        name, size, batch = CASES[case]
        model, x = build(name, size, batch)
        runs = variants(model, x, ARGS.blocks)
        for run in runs.values():  # warm up: compile, first touch of the arenas
            run()
        times = {key: [] for key in runs}
        for _ in range(ARGS.repeat):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
        eager = statistics.median(times["eager"])
        print(f"{case} ({name}, {size}x{size}, batch {batch}, {ARGS.threads} threads)")
        for key, values in times.items():
            median = statistics.median(values)
            print(f"  {key:<28} {median * 1e3:8.2f} ms   {median / eager:5.3f} of eager")
        plan = tinynet.inference(model, x)
        share = statistics.median(gemm_share(plan, x) for _ in range(3))
        print(f"  plan: {share:.0%} of the time in GEMM, {1 - share:.0%} outside")


if __name__ == "__main__":
    main()
