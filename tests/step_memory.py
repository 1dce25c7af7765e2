"""Measure, in a process of its own, the peak memory of one training step and print it beside
tinynet.memory_estimate's estimate, as JSON (tests/test_memory_estimate.py runs it):

    python step_memory.py MODEL WIDTH SIZE BATCH

The peak is the resident set's high-water mark (VmHWM, reset through /proc/self/clear_refs)
during a second step (the first made the optimizer's state), less the resident set before the
model was built; the kernels are compiled
first by a step of another copy of the network, and glibc is told to hand every array of 128 KB
or more straight back to the system when it is freed, so the resident set follows the arrays
alive (MALLOC_MMAP_THRESHOLD_, set by the caller)."""

import gc
import json
import sys

import numpy as np

from tinynet.memory_estimate import estimate_training_memory
from tinynet.models.registry import model_entry
from tinynet.optim import SGD
from tinynet.step import training_step


def resident(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main(name: str, width: float, size: int, batch: int) -> None:
    entry = model_entry(name)

    def build():
        return entry.build(in_channels=3, num_classes=10, width=width)

    def loss(outputs, labels):
        return entry.loss(outputs, labels, 0.3, 0.0)

    def optimizer(params):
        return SGD(params, 0.01, momentum=0.9, weight_decay=5e-4)

    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    warm = build()  # compiles every kernel the step runs, at a batch of 2
    training_step(warm, images[:2], labels[:2], loss, optimizer(warm.parameters()))
    estimate = estimate_training_memory(warm, (3, size, size), batch, loss, optimizer)
    del warm
    gc.collect()
    before = resident("VmRSS")
    model = build()
    sgd = optimizer(model.parameters())
    training_step(model, images, labels, loss, sgd)  # the first step makes the momentum
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # VmHWM := VmRSS
    training_step(model, images, labels, loss, sgd)  # a step as every later one
    peak = resident("VmHWM") - before
    print(json.dumps({"estimate": estimate.total, "measured": peak, "process": before,
                      "parts": str(estimate)}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
