"""``capture``: the activations (and, after backward, the gradients) of named modules for one
batch, recorded by forward hooks.

    with tinynet.capture(model, ["inception3a.branch1", "inception3a.branch2"]) as record:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    record.activations["inception3a.branch1"]    # the module's output, an ndarray
    record.gradients["inception3a.branch1"]      # dL/d(that output), after backward
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from tinynet.nn.module import Module
from tinynet.tensor import Tensor


@dataclass
class Record:
    """What ``capture`` saw: module name -> a copy of its output, and dL/d(output) once backward
    has reached it. A module run twice in the block keeps its last call."""

    activations: dict[str, np.ndarray] = field(default_factory=dict)
    gradients: dict[str, np.ndarray] = field(default_factory=dict)


@contextlib.contextmanager
def capture(model: Module, names):
    """Record the outputs of ``model``'s modules ``names`` (dotted names, as in
    ``model.named_modules()``) while the block runs; each output that requires grad gets a
    tensor hook that records its gradient. Every hook is removed when the block ends."""
    modules = dict(model.named_modules())
    names = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in names if name not in modules or not name]
    if unknown:
        raise ValueError(
            f"capture: {', '.join(map(repr, unknown))} is not a module of "
            f"{type(model).__name__}; names look like {_examples(modules)}"
        )
    record = Record()
    with contextlib.ExitStack() as hooks:
        for name in names:
            hooks.enter_context(modules[name].register_forward_hook(_recorder(record, name)))
        yield record


def _recorder(record: Record, name: str):
    def hook(module, args, output):
        if not isinstance(output, Tensor):
            raise TypeError(
                f"capture: {name} returned {type(output).__name__}; capture records modules "
                "that return one Tensor"
            )
        record.activations[name] = np.array(output.data, copy=True)
        if output.requires_grad:
            output.register_hook(lambda grad: record.gradients.__setitem__(name, grad.copy()))

    return hook


def _examples(modules: dict) -> str:
    return ", ".join(repr(name) for name in list(modules)[1:4])
