"""The streaming image pipeline on folders of photographs (issue 26): memory, decoding, training.

    python benchmarks/bench_images.py [--counts 2000 20000] [--batches 40] [--root DIR]

Generates JPEG folders of each count (320 x 240 photographs-like images: smooth colour fields
with noise, 4 classes, quality 90) under --root (default: a temporary folder, removed at the
end), then measures:

1. Peak resident memory while a StreamingLoader (2 workers, paper augmentation at 224, batch 64)
   lists the folder and makes --batches batches, in a fresh process per folder: the main
   process's peak (ru_maxrss) and the largest worker's; the larger folder's must stay within
   100 MB of the smaller's (the listing is the only thing that grows with the count).
2. Images per second that one worker decodes and augments (one process, no workers), for each
   recipe at 224, from the JPEG files and from the --cache file.
3. The training step's consumption: images/s of the training step (tinynet.step.training_step,
   SGD, BatchNorm in training mode) for ``small`` at 96 px (batch 32) and ``paper`` at 224 px
   (batch 8), fed by the StreamingLoader with the default number of workers for this machine
   and with 1, with and without --cache; the share of the time the step waited for data.

Every number is printed as a Markdown table after the machine's description.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe

CLASSES = ("bird", "boat", "cat", "tree")
SIZE = (320, 240)  # width, height of the generated photographs


def generate(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs in ``root``'s class folders (kept if already there)."""
    from PIL import Image

    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 12, (8, SIZE[1], SIZE[0], 3)).astype(np.float32)  # reused tiles
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        colour = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        across = np.sin(np.arange(SIZE[0], dtype=np.float32) / rng.uniform(20, 80))
        down = np.cos(np.arange(SIZE[1], dtype=np.float32) / rng.uniform(20, 80))
        t = ((np.outer(down, across) + 1) / 2)[..., None]
        pixels = colour[0] * t + colour[1] * (1 - t) + noise[i % len(noise)]
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        image.save(root / CLASSES[i % len(CLASSES)] / f"{i:06d}.jpg", quality=90)
    done.touch()
    return root


def measure_memory(folder: Path, batches: int, workers: int) -> dict:
    """Run in a fresh process: list ``folder`` and make ``batches`` batches; peak memory."""
    from tinynet.data import StreamingLoader, image_files

    start = time.perf_counter()
    train = image_files(folder, 224).train
    loader = StreamingLoader(train, 64, shuffle=True, seed=0, augment="paper", workers=workers)
    made = 0
    for _ in loader:
        made += 1
        if made == batches:
            break
    loader.close()
    seconds = time.perf_counter() - start
    return {
        "images": len(train),
        "main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "seconds": seconds,
        "images_per_second": made * 64 / seconds,
    }


def decode_rates(folder: Path, count: int, cache_dir: Path) -> dict:
    """Images/s of one process making images at 224, per recipe, from files and from a cache."""
    from tinynet.data import image_files
    from tinynet.data.streaming import attach_cache

    rates = {}
    for cached in (False, True):
        for augment in ("paper", "crop-flip", "none"):
            train = image_files(folder, 224).train
            if cached:
                attach_cache(train, cache_dir, augment, workers=2)
            rng = np.random.default_rng(0)
            out = np.empty((count, *train.image_shape), np.uint8)  # as a batch is filled
            out[0] = train.pixels(0, augment, rng)  # warm
            start = time.perf_counter()
            for index in range(count):
                out[index] = train.pixels(index, augment, rng)
            rates[(augment, cached)] = count / (time.perf_counter() - start)
    return rates


def step_rates(folder: Path, steps: int, cache_dir: Path) -> list[dict]:
    """Training-step consumption fed by the streaming loader (see the module docstring)."""
    from tinynet import _threads, runtime
    from tinynet.data import StreamingLoader, image_files
    from tinynet.data import transforms as T
    from tinynet.data.streaming import attach_cache
    from tinynet.models.registry import model_entry
    from tinynet.optim import SGD
    from tinynet.step import training_step

    runtime.configure()
    rows = []
    for model_name, size, batch in (("small", 96, 32), ("paper", 224, 8)):
        model = model_entry(model_name).build(in_channels=3, num_classes=len(CLASSES))
        entry = model_entry(model_name)
        optimizer = SGD(list(model.parameters()), 0.01, momentum=0.9)

        def loss_fn(outputs, labels, entry=entry):
            return entry.loss(outputs, labels, 0.3, 0.0)

        for workers in sorted({_threads.default_workers(), 1}):
            for cached in (False, True):
                train = image_files(folder, size).train
                if cached:
                    attach_cache(train, cache_dir, "crop-flip", workers=2)
                normalize = T.Normalize(0.5, 0.25)
                loader = StreamingLoader(train, batch, shuffle=True, seed=0, augment="crop-flip",
                                         workers=workers, transform=normalize)  # fmt: skip
                with _threads.reserve_for_workers(workers):
                    iterator = iter(loader)
                    images, labels = next(iterator)  # warm: numba kernels, the first batches
                    training_step(model, images, labels, loss_fn, optimizer)
                    waited, start = loader.data_wait, time.perf_counter()
                    for _ in range(steps):
                        images, labels = next(iterator)
                        training_step(model, images, labels, loss_fn, optimizer)
                    seconds = time.perf_counter() - start
                    waited = loader.data_wait - waited
                    iterator.close()
                loader.close()
                rows.append({
                    "model": f"{model_name} @ {size}", "batch": batch, "workers": workers,
                    "cache": cached, "images_per_second": steps * batch / seconds,
                    "wait_share": waited / seconds,
                })  # fmt: skip
                print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--batches", type=int, default=40, help="batches of 64 per memory run")
    parser.add_argument("--decode", type=int, default=200, help="images per decoding rate")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per row")
    parser.add_argument("--root", help="where the folders go (kept); default: a temporary one")
    parser.add_argument("--measure-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_memory:
        print(json.dumps(measure_memory(Path(args.measure_memory), args.batches, 2)))
        return
    print(describe())
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="bench-images-"))
    try:
        folders = {}
        for count in args.counts:
            start = time.perf_counter()
            folders[count] = generate(root / f"images-{count}", count)
            print(f"{count} JPEGs of {SIZE[0]}x{SIZE[1]} in {time.perf_counter() - start:.0f} s",
                  file=sys.stderr)  # fmt: skip
        print("\n| images | main process peak MB | largest worker peak MB | batches/s (64) |")
        print("|---:|---:|---:|---:|")
        peaks = []
        for folder in folders.values():
            out = subprocess.run(
                [sys.executable, __file__, "--measure-memory", str(folder), "--batches",
                 str(args.batches)], capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            m = json.loads(out.strip().splitlines()[-1])
            peaks.append(m["main_mb"] + m["worker_mb"])
            print(f"| {m['images']:,} | {m['main_mb']:.0f} | {m['worker_mb']:.0f} | "
                  f"{m['images_per_second'] / 64:.2f} |")  # fmt: skip
        if len(peaks) > 1:
            print(f"\nlargest minus smallest folder (main + worker peaks): "
                  f"{peaks[-1] - peaks[0]:+.0f} MB (target: within 100 MB)")  # fmt: skip
        smallest = folders[min(folders)]
        cache_dir = root / "cache"
        rates = decode_rates(smallest, args.decode, cache_dir)
        print("\n| recipe at 224 | one worker, from JPEG (img/s) | from --cache (img/s) |")
        print("|---|---:|---:|")
        for augment in ("paper", "crop-flip", "none"):
            print(f"| {augment} | {rates[(augment, False)]:.0f} | {rates[(augment, True)]:.0f} |")
        rows = step_rates(smallest, args.steps, cache_dir)
        print("\n| model | batch | workers | --cache | step consumes (img/s) | waiting for data |")
        print("|---|---:|---:|---|---:|---:|")
        for r in rows:
            print(f"| {r['model']} | {r['batch']} | {r['workers']} | "
                  f"{'yes' if r['cache'] else 'no'} | {r['images_per_second']:.1f} | "
                  f"{100 * r['wait_share']:.0f}% |")  # fmt: skip
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
