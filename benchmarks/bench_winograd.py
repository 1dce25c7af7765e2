"""Winograd F(2x2, 3x3) (tinynet/inference/winograd.py) against im2col + one GEMM (the path of
tinynet/ops/conv.py), forward only, on the paper GoogLeNet's 3x3 stride-1 convolutions (224x224
input), batch 1 and 8, float32; and which layers ``use_winograd`` picks.

    python benchmarks/bench_winograd.py [--repeat 9] [--threads T] [--batches 1 8]

Each path runs as the inference plan (tinynet/inference/program.py) runs it: its buffers (the
output, im2col's column matrix, Winograd's scratch) and the transformed filters U are made once,
outside the timing; im2col (in chunks of at most 32 MiB, as conv2d) is followed by one GEMM per
chunk and the bias + ReLU epilogue, Winograd applies the two in its output transform. The two
alternate (A B A B ...) and each figure is the median. Before timing a layer, its float32
Winograd output is checked against the exact convolution (float64 ``F.conv2d``) within the bound
of tinynet/inference/winograd.py: err/bound is the largest error over its bound, err/im2col
Winograd's largest error over im2col's. The 'picked' total is each layer by the path
``use_winograd`` picks, over im2col's total.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed runs per figure (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="default: all cores")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    from bench_googlenet import set_thread_env  # the pools read it when loaded: set it first

    set_thread_env(ARGS.threads)

import numpy as np  # noqa: E402

import tinynet  # noqa: E402
import tinynet.functional as F  # noqa: E402
from tinynet.inference import winograd  # noqa: E402
from tinynet.kernels.epilogue import bias_relu  # noqa: E402
from tinynet.kernels.im2col import im2col  # noqa: E402
from tinynet.ops import layout  # noqa: E402
from tinynet.ops.conv import image_chunks  # noqa: E402

tinynet.runtime.configure()  # as tinynet's commands run: OpenBLAS's threads sleep when idle

# The paper GoogLeNet's 3x3 stride-1 convolutions: name, C_in (the 3x3 reduce), C_out, side.
LAYERS = [
    ("conv2", 64, 192, 56),
    ("3a", 96, 128, 28),
    ("3b", 128, 192, 28),
    ("4a", 96, 208, 14),
    ("4b", 112, 224, 14),
    ("4c", 128, 256, 14),
    ("4d", 144, 288, 14),
    ("4e", 160, 320, 14),
    ("5a", 160, 320, 7),
    ("5b", 192, 384, 7),
]


def check_error(x, w, b, winograd_out):
    """The float32 Winograd output's error (with ReLU) against the exact convolution, within its
    bound plus the float64 reference's own rounding; returns (max error / bound, Winograd's max
    error / im2col's)."""
    exact = F.relu(F.conv2d(x.astype(float), w.astype(float), b.astype(float), padding=1)).data
    exact = layout.channel_rows(exact)
    x_cm = layout.channel_major(x)
    channels = x.shape[1]
    reference = winograd.gamma(9 * channels + 1, np.float64) / winograd.gamma(
        channels + 11, np.float32
    )
    bound = winograd.error_bound(x_cm, w, b) * (1 + reference)
    error = np.abs(winograd_out - exact)
    if not np.all(error <= bound):
        raise AssertionError("Winograd's float32 error exceeds its bound (1)")
    direct = np.abs(layout.channel_rows(F.relu(F.conv2d(x, w, b, padding=1)).data) - exact)
    return (error / bound).max(), error.max() / direct.max()


def main():
    from machine import describe as machine

    rng = np.random.default_rng(0)
    print(f"{machine()}; {ARGS.threads} threads, median of {ARGS.repeat}, float32, forward only")
    header = (
        f"{'layer':<6} {'C_in->C_out @ side':<19} {'im2col ms':>10} {'winograd ms':>12} "
        f"{'ratio':>6} {'err/bound':>10} {'err/im2col':>10} {'picks':>9}"
    )
    for batch in ARGS.batches:
        print(f"\nbatch {batch} (ratio = winograd / im2col; < 1: Winograd faster)")
        print(header)
        print("-" * len(header))
        totals = np.zeros(3)
        for name, cin, cout, side in LAYERS:
            x = layout.empty_nchw(batch, cin, side, side, np.float32)  # as the network's
            x[...] = rng.standard_normal(x.shape, dtype=np.float32)
            w = rng.standard_normal((cout, cin, 3, 3), dtype=np.float32) * (9 * cin) ** -0.5
            b = rng.standard_normal(cout, dtype=np.float32)
            W = w.reshape(cout, -1)
            x_cm, U = layout.channel_major(x), winograd.filter_transform(w)
            out = np.empty((cout, batch * side * side), np.float32)
            chunks = image_chunks(batch, 9 * cin, side * side, 4)
            cols = np.empty((9 * cin, (chunks[0][1] - chunks[0][0]) * side * side), np.float32)
            scratch = winograd.scratch_size(cin, cout, side, side, batch, ARGS.threads)
            scratch = np.empty(scratch, np.float32)

            def im2col_path():
                for n0, n1 in chunks:
                    columns = cols[:, : (n1 - n0) * side * side]
                    im2col(x_cm[:, n0:n1], (3, 3), (1, 1), (1, 1), (side, side), columns)
                    first, last = n0 * side * side, n1 * side * side
                    np.matmul(W, columns, out=out[:, first:last])
                    bias_relu(out, first, last, b, True, True)

            def winograd_path():
                winograd.winograd_conv3x3(x_cm, U, b, True, out, scratch)

            im2col_path()  # the warm-ups (numba compiles or loads its cache); out is Winograd's
            winograd_path()
            of_bound, of_direct = check_error(x, w, b, out)
            times = ([], [])
            for _ in range(ARGS.repeat):
                for path, record in zip((im2col_path, winograd_path), times):
                    start = time.perf_counter()
                    path()
                    record.append(time.perf_counter() - start)
            im2col_ms, winograd_ms = (1e3 * statistics.median(t) for t in times)
            picked = winograd.use_winograd(cin, cout, side, side, batch)
            totals += (im2col_ms, winograd_ms, winograd_ms if picked else im2col_ms)
            print(
                f"{name:<6} {f'{cin}->{cout} @ {side}':<19} {im2col_ms:10.2f} {winograd_ms:12.2f} "
                f"{winograd_ms / im2col_ms:6.2f} {of_bound:10.2g} {of_direct:10.2f} "
                f"{'winograd' if picked else 'im2col':>9}"
            )
        print("-" * len(header))
        print(f"{'total':<26} {totals[0]:10.2f} {totals[1]:12.2f} {totals[1] / totals[0]:6.2f}")
        print(f"{'picked':<26} {'':10} {totals[2]:12.2f} {totals[2] / totals[0]:6.2f}")
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
