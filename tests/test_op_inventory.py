"""Every op is accounted for in each place an op must be known: adding a ``Function`` without
deciding its reference twin, its ONNX translation and its cost in ``summary`` fails here, naming
the op and the place ("Adding an op" in docs/core.md lists the places).

- The twin: a fused op's docstring names its composed twin (``Reference twin:
  ``tinynet.reference.NAME````), which exists; or the op is one of ``tinynet.reference``'s
  primitives, the ops every twin is built from (and a real run of the twins records no other).
- Export: an entry in the ONNX writer's op table, or a reason in ``NOT_EXPORTED``.
- Cost: a layer ``summary`` counts (``MACS``), or listed as counted as nothing (``UNCOUNTED``).
"""

import importlib
import pkgutil
import re

import numpy as np
import pytest

import tinynet
from tinynet import reference
from tinynet.function import Function
from tinynet.models import googlenet_paper, googlenet_small
from tinynet.models.googlenet import googlenet_loss
from tinynet.summary import MACS, UNCOUNTED

writer = pytest.importorskip("tinynet.onnx.writer", reason="the ONNX writer needs onnx")

# Functions that are plumbing between processes or around hooks, not a computation with a twin:
MACHINERY = {
    "AllReduce": "sums a tensor over MPI ranks: the communication its twin is built with",
    "BackwardHookIdentity": "the identity, inserted so a module's backward hooks see gradients",
}


def every_function() -> dict[str, type]:
    """Every Function subclass in the installed package, by op name (its name less Function)."""
    for module in pkgutil.walk_packages(tinynet.__path__, "tinynet."):
        if module.name == "tinynet.__main__":  # running it runs the command
            continue
        try:
            importlib.import_module(module.name)
        except ImportError:  # an optional dependency (mpi4py) is missing: its ops are not there
            continue

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    found = {}
    for cls in subclasses(Function):
        if cls.__module__.startswith("tinynet."):
            found[cls.__name__.removesuffix("Function")] = cls
    return found


FUNCTIONS = every_function()


def test_the_inventory_found_the_ops():
    assert {"Conv2d", "MaxPool2d", "BatchNorm", "ReLU", "Concat", "Add"} <= FUNCTIONS.keys()


@pytest.mark.parametrize("op", sorted(FUNCTIONS))
def test_each_op_has_a_twin_or_is_a_primitive(op):
    if op in MACHINERY:
        return
    doc = FUNCTIONS[op].__doc__ or ""
    twin = re.search(r"twin: ``([\w.]+)``", doc)
    if op in reference.PRIMITIVES:
        assert not twin, f"{op} is a primitive and names a twin"
        return
    assert twin, f"{op}: its docstring names no twin, and it is not in reference.PRIMITIVES"
    module_name, _, name = twin[1].rpartition(".")
    owner = importlib.import_module(module_name or FUNCTIONS[op].__module__)
    assert callable(getattr(owner, name, None)), f"{op}'s twin {twin[1]} does not exist"


@pytest.mark.parametrize("op", sorted(FUNCTIONS))
def test_each_op_is_exported_or_says_why_not(op):
    exported, refused = op in writer.WRITERS, op in writer.NOT_EXPORTED
    assert exported != refused, f"{op}: exported {exported}, listed as not exported {refused}"


@pytest.mark.parametrize("op", sorted(FUNCTIONS))
def test_each_op_has_a_summary_cost_or_says_it_has_none(op):
    counted = op in {layer.__name__ for layer in MACS}
    assert counted != (op in UNCOUNTED), f"{op}: counted {counted}, or twice"


def test_the_twins_are_built_from_the_primitives_alone():
    """Run the networks' forward and loss with every fused op replaced by its twin: the ops
    recorded are all primitives (a twin calling a fused op would prove nothing)."""
    recorded = set()
    networks = ((googlenet_paper(num_classes=4, width=1 / 16), 224), (googlenet_small(), 32))
    for model, size in networks:
        tinynet.manual_seed(0)
        x = tinynet.tensor(np.random.default_rng(0).normal(size=(2, 3, size, size)))
        with tinynet.use_reference():  # training mode: aux heads, dropout, batch statistics
            loss = googlenet_loss(model(x), np.array([1, 2]), label_smoothing=0.1)
        recorded |= {op.op for op in tinynet.trace(loss, model).ops}
    assert "Conv2d" not in recorded and "MatMul" in recorded  # the twins ran
    assert recorded <= set(reference.PRIMITIVES), recorded - set(reference.PRIMITIVES)
