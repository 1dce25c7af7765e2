"""Time tinynet's conv2d on GoogLeNet's distinct convolution shapes (224x224 input), and the same
layers in PyTorch, when it is installed, with the same thread count in the same run.

    python benchmarks/bench_conv.py [--batch 32] [--repeat 5] [--threads T]

Each figure is the median of ``--repeat`` runs after one warm-up run (which also compiles or loads
the numba kernels). "fwd" runs under no_grad; "fwd+bwd" records the graph and back-propagates a
random gradient into the weight, the bias and, except for the stem (whose input is the image), the
input, as in training. GFLOP/s counts 2·N·C_out·OH·OW·C_in·kH·kW per GEMM-sized product.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="default: all cores")
    return parser.parse_args()


ARGS = parse_args()
# Thread pools (OpenBLAS/MKL, OpenMP, numba) read these when first loaded, so set them first.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

import tinynet  # noqa: E402
import tinynet.functional as F  # noqa: E402
from tinynet.ops import layout  # noqa: E402

tinynet.runtime.configure()  # as tinynet's commands run

try:
    import torch
except ImportError:
    torch = None

# name, C_in, C_out, kernel, stride, padding, input side
LAYERS = [("stem 7x7/2", 3, 64, 7, 2, 3, 224)]
LAYERS += [("conv2 1x1", 64, 64, 1, 1, 0, 56), ("conv2 3x3", 64, 192, 3, 1, 1, 56)]
# The paper's table: side, in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTION = {
    "3a": (28, 192, 64, 96, 128, 16, 32, 32),
    "4a": (14, 480, 192, 96, 208, 16, 48, 64),
    "5b": (7, 832, 384, 192, 384, 48, 128, 128),
}
for block, (side, cin, c1, r3, c3, r5, c5, pool) in INCEPTION.items():
    LAYERS += [
        (f"{block} 1x1", cin, c1, 1, 1, 0, side),
        (f"{block} 3x3 reduce", cin, r3, 1, 1, 0, side),
        (f"{block} 3x3", r3, c3, 3, 1, 1, side),
        (f"{block} 5x5 reduce", cin, r5, 1, 1, 0, side),
        (f"{block} 5x5", r5, c5, 5, 1, 2, side),
        (f"{block} pool proj", cin, pool, 1, 1, 0, side),
    ]


def median_ms(run) -> float:
    run()  # warm-up: numba compilation or cache load, allocator, BLAS buffers
    times = []
    for _ in range(ARGS.repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def time_tinynet(x, w, b, grad, stride, padding, input_grad):
    tx = tinynet.tensor(x, requires_grad=input_grad)
    tw, tb = tinynet.tensor(w, requires_grad=True), tinynet.tensor(b, requires_grad=True)

    def forward():
        with tinynet.no_grad():
            F.conv2d(tx, tw, tb, stride=stride, padding=padding)

    def forward_backward():
        tx.grad = tw.grad = tb.grad = None
        F.conv2d(tx, tw, tb, stride=stride, padding=padding).backward(grad)

    return median_ms(forward), median_ms(forward_backward)


def time_torch(x, w, b, grad, stride, padding, input_grad):
    tx = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(input_grad)
    tw, tb = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
    tgrad = torch.from_numpy(np.ascontiguousarray(grad))

    def forward():
        with torch.no_grad():
            torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)

    def forward_backward():
        tx.grad = tw.grad = tb.grad = None
        torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding).backward(tgrad)

    return median_ms(forward), median_ms(forward_backward)


def main():
    if torch is not None:
        torch.set_num_threads(ARGS.threads)
    rng = np.random.default_rng(0)
    n = ARGS.batch
    header = (
        f"{'layer':<15} {'C_in->C_out k/s @ HxW':<24} {'fwd ms':>8} {'f+b ms':>8} "
        f"{'torch fwd':>9} {'torch f+b':>9} {'x fwd':>6} {'x f+b':>6} {'GFLOP/s':>8}"
    )
    print(
        f"batch {n}, {ARGS.threads} threads, median of {ARGS.repeat}, float32; "
        f"x = tinynet time / torch time" + ("" if torch else " (torch not installed)")
    )
    print(header)
    print("-" * len(header))
    totals = np.zeros(4)
    for name, cin, cout, k, stride, padding, side in LAYERS:
        x = layout.empty_nchw(n, cin, side, side, np.float32)  # channel-major, as the network's
        x[...] = rng.standard_normal(x.shape, dtype=np.float32)
        w = rng.standard_normal((cout, cin, k, k), dtype=np.float32) * (cin * k * k) ** -0.5
        b = rng.standard_normal(cout, dtype=np.float32)
        out_side = (side + 2 * padding - k) // stride + 1
        grad = layout.empty_nchw(n, cout, out_side, out_side, np.float32)
        grad[...] = rng.standard_normal(grad.shape, dtype=np.float32)
        input_grad = not name.startswith("stem")
        args = (x, w, b, grad, stride, padding, input_grad)
        fwd, both = time_tinynet(*args)
        ref_fwd, ref_both = time_torch(*args) if torch else (float("nan"), float("nan"))
        totals += (fwd, both, ref_fwd, ref_both)
        gflop = 2 * n * cout * out_side**2 * cin * k * k / 1e9
        shape = f"{cin}->{cout} {k}x{k}/{stride} @ {side}"
        print(
            f"{name:<15} {shape:<24} {fwd:8.1f} {both:8.1f} {ref_fwd:9.1f} {ref_both:9.1f} "
            f"{fwd / ref_fwd:6.2f} {both / ref_both:6.2f} {gflop / fwd * 1e3:8.1f}"
        )
    fwd, both, ref_fwd, ref_both = totals
    print("-" * len(header))
    print(
        f"{'total':<15} {'':<24} {fwd:8.1f} {both:8.1f} {ref_fwd:9.1f} {ref_both:9.1f} "
        f"{fwd / ref_fwd:6.2f} {both / ref_both:6.2f}"
    )


if __name__ == "__main__":
    main()
