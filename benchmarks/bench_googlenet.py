"""GoogLeNet end to end: tinynet against PyTorch and ONNX Runtime, in the same run.

    python benchmarks/bench_googlenet.py [--quick] [--threads T] [--repeat R] [--only ROWS]
                                         [--library]
    python benchmarks/bench_googlenet.py --profile [--only ROWS]   # where tinynet's time goes

The networks are the paper's GoogLeNet (``googlenet_paper``: LRN, 5x5 branches, aux heads, 224x224)
and tinynet's small preset (``googlenet_small``: BatchNorm, width 0.25, 32x32), built in tinynet
and in PyTorch (``tests/torch_googlenet.py``'s ``TorchGoogLeNet``) with the same weights.

Each framework runs in its own worker process, started with the same thread count (OMP, OpenBLAS,
MKL and numba variables set before any import; ``torch.set_num_threads``; ORT's intra-op threads)
and its own defaults otherwise. The tinynet workers apply tinynet's runtime policy as its commands
do (``tinynet.runtime.configure()``: OPENBLAS_THREAD_TIMEOUT, OMP_WAIT_POLICY=PASSIVE, malloc's
thresholds), except ``tinynet-library``, which imports tinynet as a library and changes nothing;
importing tinynet changes nothing in the PyTorch worker either. Of the configured workers,
``tinynet`` imports NumPy first, as most users' code does, ``tinynet-first`` imports tinynet
first; the ratio of the two is printed after the table (no import-order rule: <= 1.03). Both run
the eval rows through an inference plan (``tinynet.inference(model, x)``, as ``tinynet predict``
and ``tinynet evaluate`` do); ``tinynet-eager`` runs them op by op under ``no_grad()``, as every
eval ran before issue 28, and the ratio plan / eager is printed too. With
``--library`` the library worker runs too and its time over the configured one's is printed
(what the policy is worth); its spinning BLAS threads slow the worker after it, so the other
rows of such a run are not compared with anything. The workers
are driven in turns, one repetition of each per round, so a burst of load from elsewhere on the
machine hits every framework alike; each round in a new seeded order, so that each follows every
other about equally often (ONNX
Runtime's and PyTorch's threads spin for a while after a run, slowing whichever worker runs
next: in a fixed order the worker after ONNX Runtime's, tinynet with NumPy imported first, took
1.08-1.27x the time of the tinynet worker after it; three tinynet workers alone, two of them
NumPy-first, took 0.96-1.00x of each other's). Every row is
warmed up first (numba cache loads, allocator, BLAS buffers), then timed ``--repeat`` times; the
table gives the median and the min/max.

Rows: eval forward at 224 (batch 1 and 8, no_grad / torch.no_grad / ORT), a training step at 224
batch 32 (train-mode forward with the aux heads, main + 0.3 x aux cross-entropies, backward, SGD
with momentum 0.9), and the small network at 32x32 batch 64 (eval forward, training step). Peak
memory of the training steps is measured in a fresh process per framework as ru_maxrss, and
reported both as the whole peak and as the peak minus the process's ru_maxrss right after its
imports. The GEMM fraction divides tinynet's achieved FLOP rate (2 x conv and linear
multiply-adds; a training step counts three GEMMs per layer, two for the stem, whose input needs
no gradient) by the best np.matmul float32 rate on representative im2col shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"

# row name -> (network, image side, batch, what); a Framework sets up any such tuple, so other
# benchmarks (bench_curves.py) build their rows on the fly.
ROWS = {
    "eval224_b1": ("paper", 224, 1, "eval"),
    "eval224_b8": ("paper", 224, 8, "eval"),
    "train224_b32": ("paper", 224, 32, "train"),
    "small_eval_b64": ("small", 32, 64, "eval"),
    "small_train_b64": ("small", 32, 64, "train"),
}
ROW_LABELS = {
    "eval224_b1": "eval fwd 224 b1",
    "eval224_b8": "eval fwd 224 b8",
    "train224_b32": "train step 224 b32",
    "small_eval_b64": "small eval fwd 32 b64",
    "small_train_b64": "small train step 32 b64",
}
DEFAULT_REPEAT = {
    "eval224_b1": 20,
    "eval224_b8": 10,
    "train224_b32": 5,
    "small_eval_b64": 10,
    "small_train_b64": 10,
}
ORT_ROWS = ("eval224_b1", "eval224_b8")
PROFILE_ROWS = ("eval224_b8", "train224_b32", "small_eval_b64", "small_train_b64")
# (M, K, N): output channels, C_in*kh*kw, N*OH*OW of GoogLeNet's im2col GEMMs.
GEMM_SHAPES = [
    (192, 576, 3136 * 8),
    (256, 1152, 784 * 8),
    (384, 1728, 784 * 8),
    (512, 4800, 784 * 8),
]
LR, MOMENTUM, AUX_WEIGHT = 1e-3, 0.9, 0.3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions, for a smoke run")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="default: all cores")
    parser.add_argument("--repeat", type=int, help="timed repetitions per row (default per row)")
    parser.add_argument(
        "--library",
        action="store_true",
        help="also time tinynet imported as a library, without tinynet.runtime.configure(); its "
        "idle OpenBLAS threads spin after each GEMM and slow whichever worker runs next, so the "
        "other rows of such a run are not comparable with a run without it",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated rows and extras to run, from: "
        + ", ".join([*ROWS, "memory", "ort", "gemm"])
        + " (default: all)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only the per-category profile of tinynet (of the --only rows, default: "
        + ", ".join(PROFILE_ROWS)
        + ")",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def set_thread_env(threads: int) -> None:
    """Pin every thread pool before anything that reads these is imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)


# ================================================================================ workers
class Framework:
    """One framework's models and steps; a worker process holds one."""

    name = ""

    def setup(self, network: str, side: int, batch: int, what: str):
        """Build one iteration of ``what`` ('eval' or 'train') on ``network`` ('paper' or 'small')
        for a batch of ``batch`` side x side images, and return it as a zero-argument callable
        (None if this framework does not run it)."""
        raise NotImplementedError


def _data(side, batch, classes):
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, side, side), dtype=np.float32)
    return x, rng.integers(0, classes, batch)


class TinynetFramework(Framework):
    name = "tinynet"

    def __init__(self, weights, configure=True, plan=True):
        import tinynet
        from tinynet.models import googlenet_paper, googlenet_small

        if configure:  # as tinynet's commands and Trainer run; without: a library user's process
            tinynet.runtime.configure()
        self.tinynet, self.plan = tinynet, plan
        self.last_plan = None  # the plan setup() made last (for --profile)
        self.models = {}
        for net, build in (("paper", googlenet_paper), ("small", googlenet_small)):
            tinynet.manual_seed(0)
            self.models[net] = build()
        if weights:
            self.save_weights(weights)

    def save_weights(self, folder):
        import numpy as np

        for net, model in self.models.items():
            np.savez(Path(folder) / f"{net}.npz", **model.state_dict())

    def setup(self, network, side, batch, what):
        import tinynet
        from tinynet.models import googlenet_loss
        from tinynet.optim import SGD

        model = self.models[network]
        x, target = _data(side, batch, model.config.num_classes)
        if what == "eval":
            model.eval()
            if self.plan:  # as tinynet predict and evaluate run a network
                plan = self.last_plan = tinynet.inference(model, x)
                return lambda: plan(x)

            def run():
                with tinynet.no_grad():
                    model(x)

            return run
        if not self.plan:
            return None  # the eager worker is only for the eval rows: training has no plan
        model.train()
        optimizer = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

        def run():
            optimizer.zero_grad()
            googlenet_loss(model(x), target, AUX_WEIGHT).backward()
            optimizer.step()

        return run

    def flops(self, network, side, batch, what):
        """2 x the conv and linear multiply-adds of one iteration of ``setup``'s row."""
        import numpy as np

        import tinynet
        from tinynet import nn

        model = self.models[network]
        macs, stem = [0], [0]

        def hook(module, inputs, output):
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                count = output.size * module.in_channels * kh * kw
            else:
                count = output.size * module.in_features
            macs[0] += count
            if module is model.conv1.conv:
                stem[0] += count

        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        handles = [m.register_forward_hook(hook) for m in layers]
        was_training = model.training
        model.train(what == "train")
        try:
            with tinynet.no_grad():
                model(np.zeros((2, 3, side, side), dtype=np.float32))
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        per_image, stem_per_image = macs[0] / 2, stem[0] / 2
        if what == "eval":
            return 2 * per_image * batch
        # forward, weight gradient, input gradient (none for the stem: its input is the image)
        return 2 * (3 * per_image - stem_per_image) * batch

    @staticmethod
    def gemm_peak(repeat):
        """Best GFLOP/s of np.matmul float32 over GEMM_SHAPES: {shape: GFLOP/s}."""
        import numpy as np

        rng = np.random.default_rng(0)
        rates = {}
        for m, k, n in GEMM_SHAPES:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            out = np.empty((m, n), dtype=np.float32)
            np.matmul(a, b, out=out)
            best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(repeat))
            rates[f"{m}x{k}x{n}"] = 2 * m * k * n / best / 1e9
        return rates


class TorchFramework(Framework):
    name = "torch"

    def __init__(self, weights, threads):
        import torch  # before tinynet (via torch_googlenet): its OpenMP keeps its own defaults

        torch.set_num_threads(threads)
        sys.path.insert(0, str(TESTS))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tinynet after NumPy: irrelevant in this worker
            from torch_googlenet import TorchGoogLeNet

        from tinynet.models.googlenet import PAPER, SMALL

        self.torch = torch
        self.models = {}
        for net, config in (("paper", PAPER), ("small", SMALL)):
            model = TorchGoogLeNet(config)
            state = np_load(Path(weights) / f"{net}.npz")
            model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
            self.models[net] = model

    def setup(self, network, side, batch, what):
        torch = self.torch
        model = self.models[network]
        x, target = _data(side, batch, model.config.num_classes)
        x, target = torch.from_numpy(x), torch.from_numpy(target)
        if what == "eval":
            model.eval()

            def run():
                with torch.no_grad():
                    model(x)

            return run
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        ce = torch.nn.functional.cross_entropy

        def run():
            optimizer.zero_grad()
            logits, aux2, aux1 = model(x)
            loss = ce(logits, target) + AUX_WEIGHT * (ce(aux1, target) + ce(aux2, target))
            loss.backward()
            optimizer.step()

        return run


class OrtFramework(Framework):
    name = "onnxruntime"

    def __init__(self, weights, threads):
        import onnxruntime

        self.ort = onnxruntime
        self.weights, self.threads, self.sessions = weights, threads, {}
        self.model = None

    def _session(self, side):
        """A session of the paper's network for side x side images and any batch size: exported
        from the PyTorch model once per side, with a dynamic batch axis."""
        if side not in self.sessions:
            import torch

            if self.model is None:
                self.model = TorchFramework(self.weights, self.threads).models["paper"].eval()
            path = Path(self.weights) / f"paper_{side}.onnx"
            example = torch.zeros(2, 3, side, side)
            import contextlib
            import io
            import warnings

            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the legacy exporter's notices
                torch.onnx.export(
                    self.model,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=17,
                    input_names=["image"],
                    output_names=["logits"],
                    dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                )
            options = self.ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.sessions[side] = self.ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        return self.sessions[side]

    def setup(self, network, side, batch, what):
        if (network, what) != ("paper", "eval"):
            return None  # inference only, and only the paper's network is exported
        session = self._session(side)
        x, _ = _data(side, batch, 1000)
        name = session.get_inputs()[0].name
        return lambda: session.run(None, {name: x})


def np_load(path):
    import numpy as np

    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def serve(framework_factory):
    """A worker's loop: one JSON command per stdin line, one JSON answer per stdout line."""
    out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not reach the answers
    try:
        framework = framework_factory()
        answer = {"ok": True}
    except Exception as error:  # noqa: BLE001 - reported to the driver, which skips the framework
        framework, answer = None, {"error": f"{type(error).__name__}: {error}"}
    out.write(json.dumps(answer) + "\n")
    out.flush()
    run = None
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["cmd"] == "setup":
                run = framework.setup(*command["row"])
                if run is None:
                    answer = {"skip": True}
                else:
                    for _ in range(command["warmup"]):
                        run()
                    answer = {"ok": True}
            elif command["cmd"] == "run":
                answer = {"t": _timed(run)}
            elif command["cmd"] == "flops":
                answer = {"flops": framework.flops(*command["row"])}
            elif command["cmd"] == "gemm":
                answer = {"rates": framework.gemm_peak(command["repeat"])}
            elif command["cmd"] == "quit":
                break
        except Exception as error:  # noqa: BLE001
            answer = {"error": f"{type(error).__name__}: {error}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def memory_worker(framework: str, weights: str, row: tuple) -> None:
    """Peak RSS of two iterations of ``row`` (network, side, batch, what) in this fresh process,
    and the RSS after the imports."""
    import resource

    if framework == "torch":
        import torch  # noqa: F401

    import numpy as np  # noqa: F401

    import tinynet  # noqa: F401

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    threads = int(os.environ["OMP_NUM_THREADS"])
    fw = TorchFramework(weights, threads) if framework == "torch" else TinynetFramework(None)
    if framework == "tinynet":
        # The same weights as the torch worker's, loaded the same way.
        for net, model in fw.models.items():
            model.load_state_dict(np_load(Path(weights) / f"{net}.npz"))
    del fw.models["paper" if row[0] == "small" else "small"]  # only the measured network stays
    run = fw.setup(*row)
    run()
    run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_mb": baseline / 1024, "peak_mb": peak / 1024}))


# ================================================================================ driver
class Worker:
    def __init__(self, kind, args, weights):
        command = [sys.executable, __file__, "--worker", kind, "--weights", weights]
        command += ["--threads", str(args.threads)]
        self.error = self._start(kind, command, dict(os.environ)).get("error")

    def _start(self, kind, command, env) -> dict:
        """Start the worker process ``command`` with ``env``; its first answer."""
        self.kind = kind
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env
        )
        return self._read()

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            return {"error": "worker exited"}
        return json.loads(line)

    def ask(self, **command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.flush()
            except BrokenPipeError:
                pass
        self.process.wait()


def installed(module) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# worker kind -> (the modules it imports, the note printed when one is missing)
REQUIRES = {
    "torch": (("torch",), "PyTorch is not installed: no torch column."),
    "onnxruntime": (
        ("onnxruntime", "onnx", "torch"),
        "onnx/onnxruntime/torch not importable: no ONNX Runtime rows.",
    ),
}


def missing(kind) -> str | None:
    """The note saying why a ``kind`` worker cannot run here (a module is not installed), or
    None if it can."""
    modules, note = REQUIRES.get(kind, ((), None))
    return None if all(installed(module) for module in modules) else note


def start_workers(kinds, args, weights, notes) -> dict:
    """A Worker per kind in ``kinds`` whose modules are installed and that started; a note in
    ``notes`` for each of the others."""
    workers = {}
    for kind in kinds:
        if missing(kind):
            notes.append(missing(kind))
            continue
        worker = Worker(kind, args, weights)
        if worker.error:
            notes.append(f"{kind} worker failed to start: {worker.error}")
            worker.close()
        else:
            workers[kind] = worker
    return workers


def save_weights(folder) -> None:
    """tinynet's networks built once (seed 0), their weights saved into ``folder`` as
    <network>.npz by a fresh process; every worker loads them from there."""
    saver = subprocess.run(
        [sys.executable, __file__, "--worker", "save-weights", "--weights", str(folder)],
        capture_output=True,
        text=True,
    )
    if saver.returncode:
        sys.exit(saver.stderr)


def time_row(workers, row, repeat, warmup, notes, label) -> dict:
    """Set ``row`` (network, side, batch, what) up in every worker, warm it up ``warmup`` times,
    then time it ``repeat`` times, the workers in turns: {kind: [seconds]}, for the workers
    that run it (an error becomes a note naming ``label``)."""
    active = []
    for kind, worker in workers.items():
        answer = worker.ask(cmd="setup", row=row, warmup=warmup)
        if answer.get("error"):
            notes.append(f"{kind} {label}: {answer['error']}")
        elif not answer.get("skip"):
            active.append(kind)
    times = {kind: [] for kind in active}
    order = random.Random(0)
    for _ in range(repeat):
        # In turns, so load from elsewhere hits every framework alike; in a new (seeded) order
        # each round, so each follows every other about equally often.
        for kind in order.sample(active, len(active)):
            times[kind].append(workers[kind].ask(cmd="run")["t"])
    return times


def measure_memory(kind, row, weights, threads) -> dict:
    """Peak memory of two iterations of ``row`` in a fresh ``kind`` process: {"peak_mb",
    "baseline_mb" (ru_maxrss right after the imports)}, or {"error": the end of its stderr}."""
    command = [sys.executable, __file__, "--worker", f"memory-{kind}"]
    command += ["--row", ",".join(map(str, row)), "--weights", weights, "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode:
        return {"error": done.stderr.strip()[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_row(text) -> tuple:
    """'paper,224,32,train' -> ('paper', 224, 32, 'train'), as ``measure_memory`` passes it."""
    network, side, batch, what = text.split(",")
    return network, int(side), int(batch), what


def fmt_ms(times):
    med = statistics.median(times) * 1e3
    return f"{med:9.1f} {min(times) * 1e3:8.1f} {max(times) * 1e3:8.1f}"


def run_table(args, selected, weights):
    notes = []
    # NumPy imported before tinynet, and after; with --library, tinynet without the policy
    kinds = ["tinynet", "tinynet-first", "tinynet-eager"]
    kinds += [*(["tinynet-library"] if args.library else []), "torch"]
    if "ort" in selected and any(r in selected for r in ORT_ROWS):
        kinds.append("onnxruntime")
    workers = start_workers(kinds, args, weights, notes)

    peak = None
    if "gemm" in selected:
        rates = workers["tinynet"].ask(cmd="gemm", repeat=3 if args.quick else 10)["rates"]
        peak = max(rates.values())
        print("np.matmul float32 GFLOP/s (M x K x N, best of runs):")
        for shape, rate in rates.items():
            print(f"  {shape:<20} {rate:7.1f}")
        print(f"  GEMM peak taken as {peak:.1f} GFLOP/s\n")

    results = {}
    for row in [r for r in ROWS if r in selected]:
        repeat = args.repeat or (3 if args.quick else DEFAULT_REPEAT[row])
        warmup = 1 if args.quick else 2
        running = {k: w for k, w in workers.items() if k != "onnxruntime" or row in ORT_ROWS}
        times = time_row(running, ROWS[row], repeat, warmup, notes, row)
        flops = workers["tinynet"].ask(cmd="flops", row=ROWS[row])["flops"]
        results[row] = (times, flops, repeat)
        print_row(row, times, flops, peak, ROWS[row][2], header=not results.keys() - {row})
    for worker in workers.values():
        worker.close()
    return results, peak, notes


HEADER = (
    f"{'row':<24} {'framework':<13} {'median ms':>9} {'min':>8} {'max':>8} {'img/s':>8} "
    f"{'x torch':>7} {'GEMM%':>6}"
)


def print_row(row, times, flops, peak, batch, header):
    if header:
        print(HEADER)
        print("-" * len(HEADER))
    ref = statistics.median(times["torch"]) if "torch" in times else None
    for kind, ts in times.items():
        med = statistics.median(ts)
        ratio = f"{med / ref:7.2f}" if ref else f"{'-':>7}"
        counted = peak and kind in ("tinynet", "tinynet-eager")
        gemm = f"{100 * flops / med / 1e9 / peak:5.0f}%" if counted else ""
        print(f"{ROW_LABELS[row]:<24} {kind:<13} {fmt_ms(ts)} {batch / med:8.1f} {ratio} {gemm:>6}")


def print_import_order(results):
    """tinynet's median with NumPy imported first over its median imported first (target of
    issue 15: <= 1.03, no import-order rule)."""
    print("\nImport order: tinynet (NumPy imported first) / tinynet-first (tinynet imported first)")
    for row, (times, _, _) in results.items():
        if "tinynet" in times and "tinynet-first" in times:
            ratio = statistics.median(times["tinynet"]) / statistics.median(times["tinynet-first"])
            print(f"  {ROW_LABELS[row]:<24} {ratio:5.2f}")
    print("\nInference plan: tinynet (tinynet.inference) / tinynet-eager (op by op, no_grad)")
    for row, (times, _, _) in results.items():
        if "tinynet" in times and "tinynet-eager" in times:
            ratio = statistics.median(times["tinynet"]) / statistics.median(times["tinynet-eager"])
            print(f"  {ROW_LABELS[row]:<24} {ratio:5.2f}")
    print("\nAgainst ONNX Runtime: tinynet (plan) / onnxruntime, and tinynet-eager / onnxruntime")
    for row, (times, _, _) in results.items():
        if "onnxruntime" in times:
            ort = statistics.median(times["onnxruntime"])
            ratios = [f"{k} {statistics.median(times[k]) / ort:5.2f}x"
                      for k in ("tinynet", "tinynet-eager") if k in times]  # fmt: skip
            print(f"  {ROW_LABELS[row]:<24} {', '.join(ratios)}")
    print("\nRuntime policy: tinynet-library (no tinynet.runtime.configure()) / tinynet (with it)")
    for row, (times, _, _) in results.items():
        if "tinynet" in times and "tinynet-library" in times:
            library, configured = times["tinynet-library"], times["tinynet"]
            ratio = statistics.median(library) / statistics.median(configured)
            print(f"  {ROW_LABELS[row]:<24} {ratio:5.2f}")


def run_memory(args, weights, rows):
    print("\nPeak memory of two training steps, each framework in a fresh process (ru_maxrss):")
    print(f"{'row':<24} {'framework':<11} {'peak MB':>8} {'after import':>12} {'peak-import':>11}")
    kinds = [kind for kind in ("tinynet", "torch") if not missing(kind)]
    results = {}
    for row in rows:
        for kind in kinds:
            m = measure_memory(kind, ROWS[row], weights, args.threads)
            if "error" in m:
                print(f"{ROW_LABELS[row]:<24} {kind:<11} failed: {m['error']}")
                continue
            results[(row, kind)] = m
            print(
                f"{ROW_LABELS[row]:<24} {kind:<11} {m['peak_mb']:8.0f} {m['baseline_mb']:12.0f} "
                f"{m['peak_mb'] - m['baseline_mb']:11.0f}"
            )
    return results


def describe(args):
    from machine import describe as machine

    print(f"{machine()}; {args.threads} threads per framework, float32")


def main():
    args = parse_args()
    set_thread_env(args.threads)
    if args.worker:
        return worker_main(args)
    if args.profile:
        return profile_main(args)
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    selected = wanted or {*ROWS, "memory", "ort", "gemm"}
    unknown = selected - {*ROWS, "memory", "ort", "gemm"}
    if unknown:
        sys.exit(f"--only: unknown rows {sorted(unknown)}; choose from {[*ROWS, 'memory', 'ort']}")
    describe(args)
    with tempfile.TemporaryDirectory() as weights:
        save_weights(weights)
        results, _, notes = run_table(args, selected, weights)
        print_import_order(results)
        if "memory" in selected:
            rows = [r for r in ("train224_b32", "small_train_b64") if r in selected or not wanted]
            run_memory(args, weights, rows or ["train224_b32"])
    print(
        "\nx torch: this row's median / PyTorch's median in this run (< 1: tinynet faster). "
        "GEMM%: tinynet's conv+linear FLOP rate / the np.matmul peak above."
    )
    for note in notes:
        print("note:", note)


def worker_main(args):
    kind = args.worker
    if kind == "save-weights":
        TinynetFramework(args.weights)
    elif kind.startswith("memory-"):
        memory_worker(kind.removeprefix("memory-"), args.weights, parse_row(args.row))
    elif kind == "tinynet":
        import numpy  # noqa: F401 - before tinynet, as most users' code does

        serve(lambda: TinynetFramework(None))
    elif kind == "tinynet-first":
        serve(lambda: TinynetFramework(None))  # tinynet imports NumPy itself
    elif kind == "tinynet-eager":
        import numpy  # noqa: F401

        serve(lambda: TinynetFramework(None, plan=False))  # eval op by op, as before issue 28
    elif kind == "tinynet-library":
        import numpy  # noqa: F401

        serve(lambda: TinynetFramework(None, configure=False))  # no runtime policy
    elif kind == "torch":
        serve(lambda: TorchFramework(args.weights, args.threads))
    elif kind == "onnxruntime":
        serve(lambda: OrtFramework(args.weights, args.threads))


# ================================================================================ profile
# Exclusive time per category: a wrapped call's time minus that of wrapped calls inside it.
# Function classes by op name (forward and backward both; "Conv2d" for Conv2dFunction, as older
# versions named the class), then module-level callables.
OP_CATEGORIES = {
    "Conv2d": "GEMM",
    "Linear": "GEMM",
    "MatMul": "GEMM",
    "MaxPool2d": "pooling",
    "AvgPool2d": "pooling",
    "AdaptiveAvgPool2d": "pooling",
    "LocalResponseNorm": "LRN",
    "ReLU": "ReLU/bias",
    "Concat": "concat",
    "BatchNorm": "BatchNorm",
    "Dropout": "dropout/loss/softmax",
    "CrossEntropy": "dropout/loss/softmax",
    "LogSoftmax": "dropout/loss/softmax",
    "Softmax": "dropout/loss/softmax",
}
# (module, attribute): category; the attribute is wrapped where the op code looks it up, and
# names that a version of tinynet does not have are skipped.
CALLABLE_CATEGORIES = {
    ("tinynet.ops.conv", "im2col"): "im2col/col2im",
    ("tinynet.ops.conv", "col2im"): "im2col/col2im",
    ("tinynet.ops.conv", "bias_relu"): "ReLU/bias",
    ("tinynet.ops.conv", "add_bias"): "ReLU/bias",
    ("tinynet.ops.elementwise", "relu_forward"): "ReLU/bias",
    ("tinynet.ops.elementwise", "relu_backward"): "ReLU/bias",
    ("tinynet.kernels.activation", "relu_forward"): "ReLU/bias",
    ("tinynet.kernels.activation", "relu_backward"): "ReLU/bias",
    # the inference plan's steps call these by their module's names
    ("tinynet.inference.program", "im2col"): "im2col/col2im",
    ("tinynet.inference.program", "bias_relu"): "ReLU/bias",
    ("tinynet.inference.winograd", "winograd_conv3x3"): "Winograd conv",
    ("tinynet.inference.winograd", "winograd_conv3x3_unchecked"): "Winograd conv",
}
CATEGORY_ORDER = [
    "GEMM",
    "Winograd conv",
    "im2col/col2im",
    "pooling",
    "LRN",
    "BatchNorm",
    "ReLU/bias",
    "concat",
    "dropout/loss/softmax",
    "other ops",
    "optimiser",
]


class CategoryTimer:
    def __init__(self):
        from collections import defaultdict

        self.totals = defaultdict(float)
        self.stack = [0.0]

    def wrap(self, category, fn):
        clock, stack, totals = time.perf_counter, self.stack, self.totals

        def timed(*args, **kwargs):
            stack.append(0.0)
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = clock() - start
                inner = stack.pop()
                totals[category] += elapsed - inner
                stack[-1] += elapsed

        return timed


def install_profiler(timer):
    """Wrap tinynet's ops and kernels (in this process only) so that ``timer`` sees them."""
    import importlib

    from tinynet.function import Function
    from tinynet.optim.optimizer import Optimizer

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    def patch(owner, name, new):
        _ORIGINALS[(owner, name)] = vars(owner)[name]
        setattr(owner, name, new)

    for cls in set(subclasses(Function)):
        category = OP_CATEGORIES.get(cls.__name__.removesuffix("Function"), "other ops")
        for method in ("forward", "backward"):
            if method in vars(cls):
                patch(cls, method, staticmethod(timer.wrap(category, getattr(cls, method))))
    for (module_name, attribute), category in CALLABLE_CATEGORIES.items():
        module = importlib.import_module(module_name)
        if hasattr(module, attribute):
            patch(module, attribute, timer.wrap(category, getattr(module, attribute)))
    for method in ("step", "zero_grad"):
        patch(Optimizer, method, timer.wrap("optimiser", getattr(Optimizer, method)))


def install_plan_profiler(timer, plan):
    """Wrap each step of ``plan``'s program for its example shape, by the step's op: a conv
    step's time less its im2col, epilogue and Winograd calls (``install_profiler``) is its GEMM."""
    program = plan._programs[plan.example_shape]
    _PLAN_RUNNERS.append((program, program.runners))
    program.runners = [
        timer.wrap(OP_CATEGORIES.get(step.op, "other ops"), runner)
        for step, runner in zip(program.graph.steps, program.runners)
    ]


def profile_main(args):
    describe(args)
    import tinynet  # noqa: F401  (before NumPy)

    frameworks = {"plan": TinynetFramework(None), "eager": TinynetFramework(None, plan=False)}
    repeat = args.repeat or (1 if args.quick else 3)
    print(
        f"tinynet time by category, mean of {repeat} runs after a warm-up (exclusive time: a "
        "category's calls minus the categorised calls inside them; 'Python overhead' is the "
        "rest: module calls, autograd bookkeeping and gradient sums, argument checks)\n"
    )
    wanted = [r for r in (s.strip() for s in args.only.split(",")) if r in ROWS]
    columns = {}
    for row in wanted or PROFILE_ROWS:
        # an eval row twice: op by op (as before issue 28) and through the inference plan
        ways = ("eager", "plan") if ROWS[row][3] == "eval" else ("plan",)
        for way in ways:
            framework = frameworks[way]
            framework.last_plan = None
            run = framework.setup(*ROWS[row])
            run()  # warm-up, unprofiled
            plain = statistics.median(_timed(run) for _ in range(repeat))
            timer = CategoryTimer()
            install_profiler(timer)
            if framework.last_plan is not None:
                install_plan_profiler(timer, framework.last_plan)
            total = sum(_timed(run) for _ in range(repeat)) / repeat
            uninstall_profiler()
            label = ROW_LABELS[row] + (f" {way}" if len(ways) > 1 else "")
            columns[label] = ({k: v / repeat for k, v in timer.totals.items()}, total, plain)
    header = f"{'category':<22}" + "".join(f"{label:>30}" for label in columns)
    print(header)
    print("-" * len(header))
    for category in CATEGORY_ORDER + ["Python overhead"]:
        cells = []
        for totals, total, _ in columns.values():
            if category == "Python overhead":
                value = total - sum(totals.values())
            else:
                value = totals.get(category, 0.0)
            cells.append(f"{value * 1e3:15.1f} ms {100 * value / total:5.1f}%")
        print(f"{category:<22}" + "".join(f"{c:>30}" for c in cells))
    print("-" * len(header))
    print(
        f"{'total (profiled)':<22}"
        + "".join(f"{t * 1e3:20.1f} ms{'':7}" for _, t, _ in columns.values())
    )
    print(
        f"{'total (not profiled)':<22}"
        + "".join(f"{p * 1e3:20.1f} ms{'':7}" for *_, p in columns.values())
    )


_ORIGINALS = {}
_PLAN_RUNNERS = []  # (program, its runners before install_plan_profiler)


def uninstall_profiler():
    """Put back every attribute ``install_profiler`` wrapped."""
    for (owner, name), value in _ORIGINALS.items():
        setattr(owner, name, value)
    _ORIGINALS.clear()
    for program, runners in _PLAN_RUNNERS:
        program.runners = runners
    _PLAN_RUNNERS.clear()


if __name__ == "__main__":
    main()
