"""Data-parallel training over MPI on one machine: images/s with 1 and 2 ranks (1 thread each)
and the gradient Allreduce's time per step; then the scaling on paper for more nodes.

    pip install -e ".[train,mpi]"
    python benchmarks/bench_mpi.py [--batch 64] [--steps 8] [--width 0.25]

The script launches itself under ``mpiexec -n 1`` and ``mpiexec -n 2`` (``--worker``): each rank
trains the small GoogLeNet on random 1x32x32 images (10 classes) with ``--batch`` images per
global batch, as ``tinynet train`` does (tinynet.distributed.DataParallel, per-rank BatchNorm),
one warm-up step then ``--steps`` timed ones. Printed: the median step, images/s, the median
time inside the Allreduce (which includes waiting for the slower rank), and the projection.

The projection: a ring Allreduce sends and receives 2 (N-1)/N x the gradient's bytes per node,
about 2 x parameters x 4 bytes (float32); on a link of L bit/s that takes
    T_comm = 2 (N-1)/N * 4 P * 8 / L  +  2 (N-1) * LATENCY
and, with no overlap of communication and backward, a node whose share of the batch takes
T_compute keeps an efficiency of T_compute / (T_compute + T_comm). Communication dominates once
T_compute < T_comm: below b* = T_comm / (compute per image) images per node.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

LINKS_GBIT = (10, 25, 100)
NODES = (2, 4, 8, 16, 32, 64)
NODE_SPEEDUPS = (1, 32)  # this 2-core machine, and a 64-core server at the same speed per core
LATENCY = 5e-6  # seconds per message hop on the link; small next to the bandwidth term here
# Parameters of the networks the projection covers (training: with the aux heads).
INCEPTION_V3 = {"with aux": 27_161_264, "without aux": 23_834_568}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="global batch (images)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (median)")
    parser.add_argument("--width", type=float, default=0.25, help="small GoogLeNet's width")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def worker(args) -> None:
    """One rank: time the steps; rank 0 prints one JSON line."""
    import numpy as np

    import tinynet
    from tinynet import distributed, optim
    from tinynet.models.registry import model_entry

    tinynet.runtime.configure()  # as `mpiexec -n N tinynet train` runs
    group = distributed.world()
    tinynet.manual_seed(0)
    entry = model_entry("small")
    model = entry.build(in_channels=1, num_classes=10, width=args.width)
    parallel = distributed.DataParallel(group, model)
    optimizer = optim.SGD(model.parameters(), 0.01, momentum=0.9)
    data = np.random.default_rng(0)
    step_seconds, allreduce_seconds = [], []
    for step in range(args.steps + 1):
        images = data.standard_normal((args.batch, 1, 32, 32)).astype(np.float32)
        labels = data.integers(0, 10, args.batch)
        start = time.perf_counter()
        images, labels = parallel.shard(images, labels)
        loss = entry.loss(model(images), labels, 0.3, 0.0)
        optimizer.zero_grad()
        parallel.backward(loss)
        before = time.perf_counter()
        parallel.allreduce_gradients(loss.item() * len(labels))
        after = time.perf_counter()
        optimizer.step()
        if step:  # the first step compiles or loads the kernels
            step_seconds.append(time.perf_counter() - start)
            allreduce_seconds.append(after - before)
    if group.rank == 0:
        parameters = sum(p.size for p in model.parameters())
        print(json.dumps({
            "ranks": group.size, "parameters": parameters,
            "step": statistics.median(step_seconds),
            "allreduce": statistics.median(allreduce_seconds),
        }))  # fmt: skip


def measure(args, ranks: int) -> dict:
    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.defpath}")
    if mpiexec is None:
        raise SystemExit("bench_mpi: no mpiexec; install the extra: pip install -e '.[mpi]'")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = "1"  # 1 thread per rank
    command = [mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker",
               "--batch", str(args.batch), "--steps", str(args.steps), "--width", str(args.width)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def network_parameters() -> dict:
    """Trained parameter counts (aux heads included) of the small (at its default width, 10
    classes) and paper (1000 classes) GoogLeNets, and Inception-v3's known count."""
    import tinynet  # noqa: F401
    from tinynet.models.registry import model_entry

    counts = {}
    for name, options in (("small", {"num_classes": 10}), ("paper", {"num_classes": 1000})):
        model = model_entry(name).build(**options)
        counts[name] = sum(p.size for p in model.parameters())
    counts["inception_v3"] = INCEPTION_V3["with aux"]
    return counts


def ring_seconds(parameters: int, nodes: int, gbit: float) -> float:
    sent = 2 * (nodes - 1) / nodes * 4 * parameters
    return sent * 8 / (gbit * 1e9) + 2 * (nodes - 1) * LATENCY


def projection(compute_per_image: dict, per_node_batch: int) -> None:
    counts = network_parameters()
    print("\nbytes each node sends per step (ring Allreduce, float32 gradients, 2 x P x 4):")
    for name, count in counts.items():
        print(f"  {name:13s} {count:>12,} parameters   {2 * 4 * count / 2**20:9.1f} MiB")
    for speedup in NODE_SPEEDUPS:
        print(f"\nprojected efficiency, nodes {speedup}x this one, {per_node_batch} images per "
              f"node per step, no overlap; b*: images per node below which communication "
              f"dominates (64 nodes)")  # fmt: skip
        print(f"  {'network':13s} {'Gb/s':>5s} " + " ".join(f"{n:>6d}" for n in NODES) + "     b*")
        faster = {name: seconds / speedup for name, seconds in compute_per_image.items()}
        rows(counts, faster, per_node_batch)


def rows(counts: dict, compute_per_image: dict, per_node_batch: int) -> None:
    for name, count in counts.items():
        per_image = compute_per_image[name]
        for gbit in LINKS_GBIT:
            cells = []
            for nodes in NODES:
                compute = per_image * per_node_batch
                cells.append(compute / (compute + ring_seconds(count, nodes, gbit)))
            dominated = ring_seconds(count, NODES[-1], gbit) / per_image
            print(f"  {name:13s} {gbit:5d} " + " ".join(f"{100 * e:5.0f}%" for e in cells)
                  + f"  {dominated:7.1f}")  # fmt: skip


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    print(f"small GoogLeNet width {args.width}, global batch {args.batch}, 1 thread per rank, "
          f"median of {args.steps} steps")  # fmt: skip
    rows = {ranks: measure(args, ranks) for ranks in (1, 2)}
    print(f"  {'ranks':>5s} {'step ms':>9s} {'img/s':>8s} {'allreduce ms':>13s} {'parameters':>11s}")
    for ranks, row in rows.items():
        print(f"  {ranks:5d} {1e3 * row['step']:9.1f} {args.batch / row['step']:8.1f} "
              f"{1e3 * row['allreduce']:13.2f} {row['parameters']:11,}")  # fmt: skip
    # A node is this machine (2 cores). Its compute per image: the 2-rank step without the
    # Allreduce (small); RESULTS.md's measured train step of the paper network (224 px, b32,
    # 2 threads: 3986 ms); Inception-v3: that x 5.7 / 1.5 GFLOPs per image (299 px vs 224 px).
    small_per_image = (rows[2]["step"] - rows[2]["allreduce"]) / args.batch
    paper_per_image = 3.986 / 32
    compute = {"small": small_per_image, "paper": paper_per_image,
               "inception_v3": paper_per_image * 5.7 / 1.5}  # fmt: skip
    for name, seconds in compute.items():
        print(f"  compute per image on this 2-core node: {name:13s} {1e3 * seconds:8.2f} ms")
    projection(compute, per_node_batch=32)


if __name__ == "__main__":
    main()
