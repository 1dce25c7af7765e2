"""GoogLeNet's GEMMs under OpenBLAS (NumPy's) and other BLAS libraries, in the same run.

    python benchmarks/bench_blas.py [--quick] [--threads 1,2] [--repeat R] [--libs LIBS]
                                    [--mkl-lib DIR]

What it measures. Every GEMM tinynet runs for three network rows, taken from the networks
themselves: ``tinynet.trace`` of ``googlenet_paper()``'s eval forward at 224x224, batch 8 and
batch 1, and of ``googlenet_small()``'s train-mode forward at 32x32, batch 64 (each Conv2d and
Linear op with its input's shape). A convolution's products are those of
``tinynet.ops.conv.ImageColumns`` (which decides pointwise or im2col and the image chunks):
forward W·cols, in training also the weight gradient cols·dYᵀ and the input gradient Wᵀ·dY (none
for the stem, whose input is the image); a Linear's are x·Wᵀ, dY·W and dYᵀ·x. Each product is
set up with the layout tinynet passes: C-contiguous row-major operands, a transposed operand as a
transposed view (free: the BLAS reads it with its transpose flag), and in a chunked convolution
the window of columns of dY or of Y's rows that a chunk reads or writes (a leading dimension
larger than the window). Identical products are timed once and weighted by their count.

Libraries (``--libs``; one worker process per library and thread count, its pool sizes set in
the environment before anything is imported, idle threads sleeping as under
``tinynet.runtime.configure()``: OPENBLAS_THREAD_TIMEOUT=1, OMP_WAIT_POLICY=PASSIVE):
  openblas   ``np.matmul(a, b, out=c)`` on those views: what tinynet runs.
  blis       explosion's cython-blis (``pip install blis``), its public ``blis.py.gemm``, which
             takes C-contiguous operands only: a column window is copied in (dY) or out (Y),
             and the copy is timed with the product, as routing tinynet through it would pay it.
  blis-zen2  the same wheel's BLIS called through ``bli_sgemm_ex`` (ctypes) with the context of
             its zen2 configuration (AVX2 kernels) and any strides (no copies): what its BLIS
             would do if its CPU detection knew this processor. A diagnostic, not a candidate:
             it goes through a private symbol of the extension module.
  mkl        Intel oneMKL's ``cblas_sgemm`` (ctypes) from the ``mkl`` wheel on PyPI, found in
             this Python's lib/ (``pip install mkl``) or in ``--mkl-lib DIR``, on the same views.
A library that is not installed, or whose worker fails, is left out with a note.

Each worker checks its results against float64 products of sampled rows, warms every product
up, and then the workers are driven in rounds: each round every worker times each product once
(one call each), the workers in a new seeded order per round, so load from elsewhere on the
machine hits every library alike.

How to read it. The machine line first, then each worker's library line (version, kernel,
threading), then per thread count and network row a table of its products, largest share of
OpenBLAS's GEMM time first: M x K x N; layout, N or T per operand as in op(A)·op(B) and * where
a window of a wider matrix is read or written; its count n; OpenBLAS's median and best GFLOP/s;
for each other library its median GFLOP/s, its median time over OpenBLAS's (x; below 1: faster
than OpenBLAS) and its min time over OpenBLAS's (x min). Last, per network row and thread count,
the sum of count x median time (and x min) per library and its ratio to OpenBLAS's: the GEMM time
of one forward or training step. Times on a shared machine are noisy: compare ratios within one
run, and at 2 threads read the mins (when another process holds a core, OpenBLAS's 2-thread
GEMMs wait for it: their medians then measure the load, not the kernels).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import bench_googlenet

# row name -> (network, image side, batch, train)
ROWS = {
    "eval224_b8": ("paper", 224, 8, False),
    "eval224_b1": ("paper", 224, 1, False),
    "small_train_b64": ("small", 32, 64, True),
}
LIBS = ("openblas", "blis", "blis-zen2", "mkl")
CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 101, 111, 112


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, for a smoke run")
    parser.add_argument(
        "--threads", default="1,2", help="comma-separated thread counts (default: 1,2)"
    )
    parser.add_argument("--repeat", type=int, help="timed rounds (default 7; --quick: 3)")
    parser.add_argument(
        "--libs", default=",".join(LIBS), help=f"comma-separated, from: {', '.join(LIBS)}"
    )
    parser.add_argument("--mkl-lib", help="folder holding libmkl_rt.so (default: sys.prefix/lib)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        args.thread_counts = []
    if not args.thread_counts or min(args.thread_counts) < 1:
        parser.error(f"--threads must be positive integers separated by commas; got {args.threads}")
    args.lib_list = [lib for lib in args.libs.split(",") if lib]
    unknown = set(args.lib_list) - set(LIBS)
    if unknown or "openblas" not in args.lib_list:
        parser.error(f"--libs must name openblas and some of {', '.join(LIBS)}; got {args.libs}")
    return args


# ================================================================================ the GEMMs
class Product(NamedTuple):
    """op(A) (M, K) · op(B) (K, N) -> C (M, N). ta/tb: the operand is the transpose of a
    C-contiguous (K, M) / (N, K) matrix; lda/ldb/ldc: the row length of the matrix each is stored
    in (larger than its width for a window of columns)."""

    m: int
    k: int
    n: int
    ta: bool
    tb: bool
    lda: int
    ldb: int
    ldc: int

    @property
    def a_rows(self) -> int:
        return self.k if self.ta else self.m

    @property
    def b_rows(self) -> int:
        return self.n if self.tb else self.k

    @property
    def layout(self) -> str:
        """'NN', 'NT', 'TN' as in op(A)·op(B), with '*' where B or C is a window."""
        window = self.ldb != (self.k if self.tb else self.n) or self.ldc != self.n
        return ("T" if self.ta else "N") + ("T" if self.tb else "N") + ("*" if window else "")

    def gflops(self, seconds) -> float:
        return 2 * self.m * self.k * self.n / seconds / 1e9


def product(m, k, n, ta=False, tb=False, ldb=None, ldc=None) -> Product:
    """A product whose operands are stored contiguously unless ldb/ldc say otherwise."""
    return Product(m, k, n, ta, tb, m if ta else k, ldb or (k if tb else n), ldc or n)


def conv_products(x_shape, w_shape, stride, padding, train, input_grad) -> list[tuple]:
    """The GEMMs of one Conv2dFunction forward (and backward if ``train``), as tinynet's
    ImageColumns runs them on an input of ``x_shape``."""
    import numpy as np

    from tinynet.ops.conv import ImageColumns

    x = np.broadcast_to(np.float32(0), x_shape)  # ImageColumns reads only the shape here
    cols = ImageColumns(x, w_shape[2:], stride, padding)
    o, kk, total = w_shape[0], cols.patch_size, x_shape[0] * cols.pixels
    if cols.pointwise:
        out = [product(o, kk, total)]  # W · x's channel rows
        if train:
            out.append(product(kk, total, o, tb=True))  # (x rows · dYᵀ)ᵀ
            if input_grad:
                out.append(product(kk, o, total, ta=True))  # Wᵀ · dY
        return out
    out = []
    for n0, n1 in cols.chunks:
        nc = (n1 - n0) * cols.pixels
        window = total if len(cols.chunks) > 1 else None
        out.append(product(o, kk, nc, ldc=window))  # W · cols into Y's columns
        if train:
            out.append(product(kk, nc, o, tb=True, ldb=window))  # cols · dY[:, chunk]ᵀ
            if input_grad:
                out.append(product(kk, o, nc, ta=True, ldb=window))  # Wᵀ · dY[:, chunk]
    return out


def linear_products(x_shape, w_shape, train, input_grad) -> list[tuple]:
    """LinearFunction's GEMMs: x · Wᵀ; in training dYᵀ · x and dY · W."""
    n, (o, i) = x_shape[0], w_shape
    out = [product(n, i, o, tb=True)]
    if train:
        out.append(product(o, n, i, ta=True))
        if input_grad:
            out.append(product(n, o, i))
    return out


def network_products(network, side, batch, train) -> Counter:
    """{product: count} of one eval forward or training step, from tinynet's trace."""
    import numpy as np

    import tinynet
    from tinynet.models import googlenet_paper, googlenet_small
    from tinynet.ops.conv import Conv2dFunction
    from tinynet.ops.linalg import LinearFunction

    tinynet.manual_seed(0)
    model = {"paper": googlenet_paper, "small": googlenet_small}[network]()
    model.train(train)
    x = np.zeros((batch, 3, side, side), dtype=np.float32)
    trace = tinynet.trace(model(x), model)
    counts = Counter()
    for op in trace.ops:
        if op.fn not in (Conv2dFunction, LinearFunction):
            continue
        source, weight = trace[op.inputs[0]], trace[op.inputs[1]]
        input_grad = getattr(source, "kind", "op") != "input"  # the image needs no gradient
        if op.fn is Conv2dFunction:
            stride, padding = op.params["stride"], op.params["padding"]
            found = conv_products(source.shape, weight.shape, stride, padding, train, input_grad)
        else:
            found = linear_products(source.shape, weight.shape, train, input_grad)
        counts.update(found)
    return counts


# ================================================================================ workers
class Operands:
    """Views with each product's layout, carved from three arenas of random float32 filled once
    (products run one at a time, so they share the memory)."""

    def __init__(self, products):
        import numpy as np

        a = max(p.a_rows * p.lda for p in products)
        b = max(p.b_rows * p.ldb for p in products)
        c = max(p.m * p.ldc for p in products)
        rng = np.random.default_rng(0)
        self.a, self.b = (rng.standard_normal(s, dtype=np.float32) for s in (a, b))
        self.c = np.zeros(c, dtype=np.float32)

    def views(self, p: Product):
        """(A, B, C) as tinynet passes them: transposed views, windows of wider matrices."""
        a = self.a[: p.a_rows * p.lda].reshape(p.a_rows, p.lda)
        b = self.b[: p.b_rows * p.ldb].reshape(p.b_rows, p.ldb)[:, : (p.k if p.tb else p.n)]
        c = self.c[: p.m * p.ldc].reshape(p.m, p.ldc)[:, : p.n]
        return (a.T if p.ta else a), (b.T if p.tb else b), c


def strides(view) -> tuple[int, int]:
    """(row stride, column stride) in elements."""
    return view.strides[0] // view.itemsize, view.strides[1] // view.itemsize


class OpenBLAS:
    def __init__(self):
        import numpy as np
        from threadpoolctl import threadpool_info

        self.np = np
        blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"][0]
        self.about = (
            f"OpenBLAS {blas['version']} via np.matmul ({blas['architecture']} kernel, "
            f"{blas['threading_layer']}, {blas['num_threads']} threads)"
        )

    def gemm(self, a, b, c):
        self.np.matmul(a, b, out=c)


class Blis:
    """cython-blis's public ``blis.py.gemm``: C-contiguous A, B and out, transposes as flags."""

    def __init__(self):
        import blis.about
        import blis.cy
        import blis.py
        import numpy as np

        self.np, self.blis = np, blis.py
        lib = ctypes.CDLL(blis.cy.__file__)
        lib.bli_info_get_version_str.restype = ctypes.c_char_p
        lib.bli_arch_string.restype = ctypes.c_char_p
        arch = lib.bli_arch_string(lib.bli_arch_query_id()).decode()
        threads = "built without threading"
        if lib.bli_info_get_enable_threading():
            threads = "pthreads" if lib.bli_info_get_enable_pthreads() else "OpenMP"
        self.lib, self.arch = lib, arch
        self.about = (
            f"BLIS {lib.bli_info_get_version_str().decode()} in cython-blis "
            f"{blis.about.__version__}, blis.py.gemm ({arch} kernels, {threads})"
        )

    def gemm(self, a, b, c):
        np = self.np
        ta, tb = strides(a)[1] != 1, strides(b)[1] != 1  # transposed views
        a_stored = a.T if ta else a
        b_stored = np.ascontiguousarray(b.T if tb else b)  # a copy only for a window
        if c.flags.c_contiguous:
            self.blis.gemm(a_stored, b_stored, out=c, trans1=ta, trans2=tb, beta=0.0)
        else:  # a window of Y's columns: computed apart, copied in
            c[...] = self.blis.gemm(a_stored, b_stored, trans1=ta, trans2=tb, beta=0.0)


class BlisZen2(Blis):
    """The same BLIS through ``bli_sgemm_ex`` with the zen2 configuration's context and any
    row/column strides."""

    def __init__(self):
        super().__init__()
        self.cntx = ctypes.create_string_buffer(1 << 20)  # larger than any cntx_t
        self.lib.bli_cntx_init_zen2(self.cntx)
        p, i = ctypes.c_void_p, ctypes.c_long
        # trans a, trans b, m, n, k, alpha, a, rs, cs, b, rs, cs, beta, c, rs, cs, cntx, rntm
        self.lib.bli_sgemm_ex.argtypes = (
            [ctypes.c_int] * 2 + [i] * 3 + [p] + [p, i, i] * 2 + [p, p, i, i, p, p]
        )
        self.one, self.zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
        self.about = self.about.replace(
            f"blis.py.gemm ({self.arch} kernels", "bli_sgemm_ex (zen2 context forced"
        )

    def gemm(self, a, b, c):
        m, k = a.shape
        self.lib.bli_sgemm_ex(
            0, 0, m, c.shape[1], k, ctypes.addressof(self.one),
            a.ctypes.data, *strides(a), b.ctypes.data, *strides(b),
            ctypes.addressof(self.zero), c.ctypes.data, *strides(c),
            ctypes.addressof(self.cntx), None,
        )  # fmt: skip


def mkl_library(folder) -> Path | None:
    """libmkl_rt.so(.N) in ``folder`` (default: this Python's lib/, where ``pip install mkl``
    puts it), or None."""
    found = sorted(Path(folder or Path(sys.prefix) / "lib").glob("libmkl_rt.so*"))
    return found[0] if found else None


class Mkl:
    def __init__(self, folder):
        path = mkl_library(folder)
        if path is None:
            raise RuntimeError(f"no libmkl_rt.so in {folder or Path(sys.prefix) / 'lib'}")
        lib = ctypes.CDLL(str(path))
        version = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(version, 256)
        p, i = ctypes.c_void_p, ctypes.c_int
        # layout, trans a, trans b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc
        lib.cblas_sgemm.argtypes = [i] * 6 + [ctypes.c_float, p, i, p, i, ctypes.c_float, p, i]
        self.lib, threads = lib, lib.MKL_Get_Max_Threads()
        self.about = f"{version.value.decode()} via cblas_sgemm, {threads} threads"

    @staticmethod
    def _operand(view):
        """(transpose flag, leading dimension) of a row-major view or its transpose."""
        rows, cols = strides(view)
        return (CBLAS_NO_TRANS, rows) if cols == 1 else (CBLAS_TRANS, cols)

    def gemm(self, a, b, c):
        (ta, lda), (tb, ldb) = self._operand(a), self._operand(b)
        m, k = a.shape
        self.lib.cblas_sgemm(
            CBLAS_ROW_MAJOR, ta, tb, m, c.shape[1], k, 1.0, a.ctypes.data, lda,
            b.ctypes.data, ldb, 0.0, c.ctypes.data, strides(c)[0],
        )  # fmt: skip


def check(library, a, b, c, p) -> None:
    """The product against float64 sums of a few sampled rows; a wrong one ends the worker."""
    import numpy as np

    rows = np.random.default_rng(1).choice(len(c), size=min(4, len(c)), replace=False)
    exact = a[rows].astype(np.float64) @ b.astype(np.float64)
    error = np.abs(c[rows] - exact).max() / max(np.abs(exact).max(), 1e-30)
    if not error < 1e-5:
        raise RuntimeError(f"{library.about}: product {p} off by {error:.1e} (relative)")


def worker(args) -> None:
    """One library in this process: JSON commands on stdin, JSON answers on stdout."""
    out, sys.stdout = sys.stdout, sys.stderr  # library chatter must not reach the answers

    def answer(message):
        out.write(json.dumps(message) + "\n")
        out.flush()

    try:
        kinds = {"openblas": OpenBLAS, "blis": Blis, "blis-zen2": BlisZen2}
        library = Mkl(args.mkl_lib) if args.worker == "mkl" else kinds[args.worker]()
        answer({"about": library.about})
    except Exception as error:  # noqa: BLE001 - reported to the driver, which leaves it out
        answer({"error": f"{type(error).__name__}: {error}"})
        return
    problems = []
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["cmd"] == "setup":
                products = [Product(*p) for p in command["products"]]
                operands = Operands(products)
                problems = [operands.views(p) for p in products]
                for p, views in zip(products, problems):
                    library.gemm(*views)
                    check(library, *views, p)
                    library.gemm(*views)
                answer({"ok": True})
            elif command["cmd"] == "round":
                times = []
                for views in problems:
                    start = time.perf_counter()
                    library.gemm(*views)
                    times.append(time.perf_counter() - start)
                answer({"times": times})
            else:
                return
        except Exception as error:  # noqa: BLE001
            answer({"error": f"{type(error).__name__}: {error}"})


# ================================================================================ driver
def worker_env(lib, threads, mkl_lib) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")  # idle threads sleep, as configure() has them
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if lib == "mkl":  # libmkl_rt loads its threading layer and libiomp5 from beside it
        folder = str(mkl_library(mkl_lib).parent)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [folder, env.get("LD_LIBRARY_PATH")]))
    return env


class Worker(bench_googlenet.Worker):
    """One library at one thread count in its own process, asked as bench_googlenet's are."""

    def __init__(self, lib, threads, args):
        command = [sys.executable, __file__, "--worker", lib]
        command += ["--mkl-lib", args.mkl_lib] if args.mkl_lib else []
        env = worker_env(lib, threads, args.mkl_lib)
        first = self._start(f"{lib} at {threads} thread(s)", command, env)
        self.error, self.about = first.get("error"), first.get("about")


def available(lib, args) -> str | None:
    """Why ``lib`` cannot run here, or None."""
    import importlib.util

    if lib.startswith("blis") and importlib.util.find_spec("blis") is None:
        return f"{lib}: cython-blis is not installed (pip install blis)"
    if lib == "mkl" and mkl_library(args.mkl_lib) is None:
        return "mkl: no libmkl_rt.so (pip install mkl, or --mkl-lib DIR)"
    return None


def print_tables(products, counts, times, threads, libs):
    """Per network row, its products by their share of OpenBLAS's GEMM time, largest first."""
    others = [lib for lib in libs if lib != "openblas" and (lib, threads) in times]
    measured = ["openblas", *others]
    median = {lib: [statistics.median(t) for t in times[lib, threads]] for lib in measured}
    best = {lib: [min(t) for t in times[lib, threads]] for lib in measured}
    base, base_best = median["openblas"], best["openblas"]
    head = (
        f"{'M':>5} {'K':>6} {'N':>6} {'lay':<4} {'n':>3} {'share':>6} {'openblas':>9} {'best':>6}"
    )
    head += "".join(f" {lib:>10} {'x':>5} {'x min':>5}" for lib in others)
    for row in ROWS:
        used = [i for i, p in enumerate(products) if counts[row].get(p)]
        total = sum(counts[row][products[i]] * base[i] for i in used)
        print(
            f"\n{row}, {threads} thread(s): median (and best) GFLOP/s; share = of OpenBLAS's GEMM "
            "time; x = median time / OpenBLAS's, x min = min time / OpenBLAS's"
        )
        print(head)
        print("-" * len(head))
        for i in sorted(used, key=lambda i: -counts[row][products[i]] * base[i]):
            p, n = products[i], counts[row][products[i]]
            line = f"{p.m:>5} {p.k:>6} {p.n:>6} {p.layout:<4} {n:>3}"
            line += f" {100 * n * base[i] / total:>5.1f}% {p.gflops(base[i]):>9.1f}"
            line += f" {p.gflops(base_best[i]):>6.1f}"
            for lib in others:
                line += f" {p.gflops(median[lib][i]):>10.1f} {median[lib][i] / base[i]:>5.2f}"
                line += f" {best[lib][i] / base_best[i]:>5.2f}"
            print(line)


def print_networks(products, counts, times, thread_counts, libs):
    print("\nGEMM time of one network row: sum of count x median (x min) per library, ms")
    head = f"{'row':<16} {'thr':>3}" + "".join(f" {lib:>22}" for lib in libs)
    print(head)
    print("-" * len(head))
    for row in ROWS:
        for threads in thread_counts:
            totals = {}
            for lib in libs:
                if (lib, threads) in times:
                    per = times[lib, threads]
                    weights = [counts[row].get(p, 0) for p in products]
                    totals[lib] = (
                        sum(w * statistics.median(t) for w, t in zip(weights, per)),
                        sum(w * min(t) for w, t in zip(weights, per)),
                    )
            base = totals["openblas"][0]
            cells = []
            for lib in libs:
                if lib not in totals:
                    cells.append(f" {'-':>22}")
                    continue
                median, best = totals[lib]
                cells.append(f" {median * 1e3:7.1f} ({best * 1e3:6.1f}) x{median / base:.2f}")
            print(f"{row:<16} {threads:>3}" + "".join(cells))


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    import machine

    print(machine.describe())
    repeat = args.repeat or (3 if args.quick else 7)
    counts = {row: network_products(*spec) for row, spec in ROWS.items()}
    products = sorted(set().union(*counts.values()))
    print(
        f"{len(products)} distinct products in "
        + ", ".join(f"{row}: {sum(c.values())} GEMMs" for row, c in counts.items())
    )

    notes, workers = [], {}
    libs = []
    for lib in args.lib_list:
        missing = available(lib, args)
        notes.append(missing) if missing else libs.append(lib)
    for threads in args.thread_counts:
        for lib in libs:
            w = Worker(lib, threads, args)
            if not w.error:
                w.error = w.ask(cmd="setup", products=products).get("error")
            if w.error:
                notes.append(f"{lib} at {threads} thread(s): {w.error}")
                w.close()
            else:
                workers[lib, threads] = w
    for (lib, threads), w in workers.items():
        print(f"  {lib:<10} {threads} thread(s): {w.about}")

    times = {key: [[] for _ in products] for key in workers}
    order = random.Random(0)
    for _ in range(repeat):
        for key in order.sample(list(workers), len(workers)):
            answer = workers[key].ask(cmd="round")
            for i, t in enumerate(answer["times"]):
                times[key][i].append(t)
    for w in workers.values():
        w.close()

    libs = [lib for lib in libs if any(key[0] == lib for key in times)]
    for threads in args.thread_counts:
        if ("openblas", threads) in times:
            print_tables(products, counts, times, threads, libs)
    print_networks(
        products, counts, times, [t for t in args.thread_counts if ("openblas", t) in times], libs
    )
    print(
        f"\n{repeat} rounds after a warm-up; layout: op(A) op(B) as N/T, * = a window of a "
        "wider matrix (row length larger than the columns used)"
    )
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
