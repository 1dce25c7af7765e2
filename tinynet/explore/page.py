"""What the explorer page shows, collected from one forward and one backward pass.

    loss = F.cross_entropy(model(x), label)
    data = page_data(loss, model, title="small GoogLeNet")   # before loss.backward()

``page_data`` reads the graph behind ``output`` with ``tinynet.trace``, then:

- replays the forward op by op (each op's own ``Function.forward`` on the recorded inputs), so
  every op's output is at hand: the real forward keeps only what backward needs (see
  ``tinynet.tensor.GraphNode``); a replay that does not reproduce ``output`` (a dropout mask
  drawn anew, say) is refused;
- runs the real ``output.backward()`` with a hook on every value, recording dL/d(value);
- steps through the backward in the order ``Tensor.backward`` walks it, asking each op's
  ``Function.backward`` for what it sends to each input: the contributions whose sum, where a
  value feeds several ops, is the gradient the hooks recorded;
- summarises each value and gradient: statistics, a histogram, a few feature maps (the
  channels of largest mean magnitude, downsampled), and each op's backward rule written out
  with the numbers of one element (``tinynet.explore.rules``).

The dict holds lists, numbers and strings (statistics of non-finite values are None, a rule's
numbers may be NaN); ``render_html`` turns it into the page.
"""

from __future__ import annotations

import base64

import numpy as np

from tinynet.explore.rules import backward_rule
from tinynet.function import Context
from tinynet.inspect_activations import top_channels
from tinynet.nn.module import Module
from tinynet.tensor import Tensor, _topological_order, as_array
from tinynet.trace import LeafRecord, OpRecord, trace

HISTOGRAM_BINS = 24


def page_data(
    output,
    model: Module | None = None,
    *,
    title: str = "tinynet explorer",
    names: dict | None = None,
    info: dict | None = None,
    channels: int = 8,
    map_size: int = 32,
) -> dict:
    """The explorer's data for the graph behind the one-element Tensor ``output`` (a loss),
    before its backward: this runs the backward itself, from dL/d(output) = 1, so the leaves'
    ``.grad`` accumulate as after ``output.backward()``.

    model:     names the modules, parameters and buffers (without it: one flat graph)
    names:     name -> Tensor, for inputs worth a name on the page (lesson 1's a, b, c, d)
    info:      extra facts shown in the header (input shape, label, predicted class, ...)
    channels:  at most this many feature maps per value
    map_size:  feature maps are downsampled to at most map_size x map_size pixels
    """
    if not isinstance(output, Tensor) or output.size != 1:
        shape = output.shape if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(
            f"page_data: output must be a one-element Tensor (a loss) whose graph is recorded; "
            f"got {shape}"
        )
    for argument, value in (("channels", channels), ("map_size", map_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"page_data: {argument} must be a positive int; got {value!r}")
    record = trace(output, model)
    named = {id(tensor): name for name, tensor in (names or {}).items()}
    differentiable = {op.id for op in record.ops} | {
        leaf.id for leaf in record.leaves if getattr(leaf.value, "requires_grad", False)
    }
    values, contexts = _replay(record, differentiable)
    final = values[record.outputs[0]]
    if not np.allclose(final, output.data, rtol=1e-5, atol=1e-6, equal_nan=True):
        raise ValueError(
            f"page_data: replaying the recorded ops gives {final.item()!r}, not the output's "
            f"{output.item()!r}: the forward is not deterministic (put the model in eval mode, "
            "so that dropout draws no mask)"
        )
    order = _backward_order(output, record)  # before backward frees the graph
    gradients = _run_backward(output, record)
    summary = ValueSummary(channels, map_size)
    steps = _backward_steps(record, differentiable, values, contexts, gradients, order)
    return {
        "title": title,
        "info": info or {},
        "modules": [
            {"name": name, "type": kind} for name, kind in record.module_types.items()
        ],
        "ops": [_op_entry(op, values, gradients, summary) for op in record.ops],
        "leaves": [
            _leaf_entry(leaf, values, gradients, summary, named) for leaf in record.leaves
        ],
        "output": record.outputs[0],
        "backward": steps,
    }


def _replay(record, differentiable: set[str]) -> tuple[dict[str, np.ndarray], dict[str, Context]]:
    """Every leaf's and op's value, by id, and each op's context (what its forward saved for
    its backward): each op's ``Function.forward`` run again on its recorded inputs (in-place
    updates, such as BatchNorm's running statistics in training, go to copies)."""
    values = {leaf.id: np.asarray(as_array(leaf.value)) for leaf in record.leaves}
    contexts = {}
    for op in record.ops:
        arrays = [None if key is None else values[key] for key in op.inputs]
        needs = tuple(key in differentiable for key in op.inputs)
        ctx = Context(needs)
        ctx.fn = op.fn
        params = {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in op.params.items()}
        values[op.id] = np.asarray(op.fn.forward(ctx, *arrays, **params))
        contexts[op.id] = ctx
    return values, contexts


def _backward_order(output: Tensor, record) -> list[str]:
    """The ids of the ops and leaves in the order ``Tensor.backward`` visits them."""
    ids = {id(op.tensor): op.id for op in record.ops}
    ids.update({id(leaf.value): leaf.id for leaf in record.leaves})
    walk = reversed(_topological_order([output._grad_node]))
    return [ids[id(node)] for node in walk if id(node) in ids]


def _run_backward(output: Tensor, record) -> dict[str, np.ndarray]:
    """dL/d(value) of every op output and every leaf that requires grad, from the real
    backward, recorded by tensor hooks (removed afterwards)."""
    gradients: dict[str, np.ndarray] = {}
    handles = []
    try:
        for rec in (*record.ops, *record.leaves):
            value = rec.tensor if isinstance(rec, OpRecord) else rec.value
            if getattr(value, "requires_grad", False):
                store = lambda grad, key=rec.id: gradients.__setitem__(key, np.array(grad))
                handles.append(value.register_hook(store))
        output.backward()
    finally:
        for handle in handles:
            handle.remove()
    return gradients


def _backward_steps(record, differentiable, values, contexts, gradients, order) -> list[dict]:
    """One step per op (and per input leaf) in backward order: the gradient that arrived, and
    what the op's ``Function.backward`` sends to each input, with the running sum where an
    input feeds several ops."""
    consumers: dict[str, int] = {}
    for op in record.ops:
        for key in op.inputs:
            if key in differentiable:
                consumers[key] = consumers.get(key, 0) + 1
    partial: dict[str, np.ndarray] = {}
    arrived: dict[str, int] = {}
    steps = []
    nodes = {node.id: node for node in (*record.ops, *record.leaves)}
    for key in order:
        node = nodes[key]
        if isinstance(node, LeafRecord):
            if node.kind == "input" and key in gradients:
                steps.append({"node": key, "grad_norm": _norm(gradients[key]), "sends": []})
            continue
        if key not in gradients:
            continue
        ctx = contexts.pop(key)  # popped: its saved arrays go once used, as in backward
        grad_out = gradients[key]
        grads = node.fn.backward(ctx, grad_out)
        grads = grads if isinstance(grads, tuple) else (grads,)
        sends = []
        for index, (source, grad) in enumerate(zip(node.inputs, grads)):
            if source not in differentiable or grad is None:
                continue
            grad = np.asarray(grad)
            partial[source] = grad.copy() if source not in partial else partial[source] + grad
            arrived[source] = arrived.get(source, 0) + 1
            sends.append(
                {
                    "to": source,
                    "input": index,
                    "norm": _norm(grad),
                    "arrived": arrived[source],
                    "of": consumers[source],
                    "sum_norm": _norm(partial[source]),
                }
            )
            if arrived[source] == consumers[source]:
                del partial[source]  # complete: the hooks recorded the same sum
        inputs = [None if k is None else values[k] for k in node.inputs]
        rule = backward_rule(node, inputs, values[key], grad_out, grads)
        steps.append({"node": key, "grad_norm": _norm(grad_out), "sends": sends, "rule": rule})
    return steps


def _norm(array: np.ndarray) -> float:
    return _number(np.linalg.norm(np.asarray(array, np.float64)))


def _number(value) -> float | None:
    """A float for JSON (which has no NaN or infinity: those become None, shown as such)."""
    value = float(value)
    return value if np.isfinite(value) else None


def _op_entry(op: OpRecord, values, gradients, summary) -> dict:
    return {
        "id": op.id,
        "op": op.op,
        "inputs": list(op.inputs),
        "shape": list(op.shape),
        "scope": list(op.scope),
        "params": {key: _param_text(value) for key, value in op.params.items()},
        "value": summary(values[op.id], signed=False),
        "grad": summary(gradients[op.id], signed=True) if op.id in gradients else None,
    }


def _leaf_entry(leaf: LeafRecord, values, gradients, summary, named) -> dict:
    name = named.get(id(leaf.value), leaf.name)
    entry = {"id": leaf.id, "kind": leaf.kind, "name": name, "shape": list(leaf.shape)}
    if leaf.kind in ("input", "constant"):
        value = values[leaf.id]
        if leaf.kind == "input" or value.dtype.kind == "f":
            entry["value"] = summary(value, signed=False)
        if leaf.id in gradients:
            entry["grad"] = summary(gradients[leaf.id], signed=True)
    else:  # parameters and buffers: statistics only, no maps
        entry["value"] = summary.statistics(values[leaf.id])
        if leaf.id in gradients:
            entry["grad"] = summary.statistics(gradients[leaf.id])
    return entry


def _param_text(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array{value.shape}"
    if isinstance(value, tuple) and any(isinstance(v, np.ndarray) for v in value):
        return "window table"
    return repr(value)


class ValueSummary:
    """A value's statistics, histogram and feature maps, as JSON."""

    def __init__(self, channels: int, map_size: int):
        self.channels, self.map_size = channels, map_size

    def __call__(self, array: np.ndarray, signed: bool) -> dict:
        array = np.asarray(array)
        entry = self.statistics(array)
        finite = array[np.isfinite(array)].astype(np.float64)
        if array.size > 1 and finite.size:
            lo, hi = finite.min(), finite.max()
            if hi - lo < 1000 * np.spacing(max(abs(lo), abs(hi))):  # one value, up to rounding:
                lo, hi = lo - 0.5, hi + 0.5  # one bar, as NumPy draws a constant array
            counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS, range=(lo, hi))
            entry["histogram"] = {"lo": float(edges[0]), "hi": float(edges[-1]),
                                  "counts": counts.tolist()}  # fmt: skip
        if array.ndim == 4:
            entry["maps"] = self.feature_maps(array[0], signed)
        if array.size == 1:
            entry["scalar"] = _number(array.reshape(()))
        return entry

    @staticmethod
    def statistics(array: np.ndarray) -> dict:
        a = np.asarray(array, np.float64)
        finite = a[np.isfinite(a)]
        stat = (lambda f: _number(f(finite))) if finite.size else (lambda f: None)
        return {
            "shape": list(a.shape),
            "min": stat(np.min),
            "max": stat(np.max),
            "mean": stat(np.mean),
            "std": stat(np.std),
            "norm": _norm(a),
            "zeros": _number(np.mean(a == 0)) if a.size else None,
            "nonfinite": int(a.size - finite.size),
        }

    def feature_maps(self, planes: np.ndarray, signed: bool) -> dict:
        """Up to ``channels`` (C, H, W) planes of largest mean magnitude, every ``step``-th pixel
        so that none is larger than map_size, as bytes: 0..255 over [lo, hi] (signed: hi = -lo,
        so 128 is zero)."""
        planes = np.nan_to_num(np.asarray(planes, np.float64), posinf=0.0, neginf=0.0)
        chosen = top_channels(np.abs(planes), self.channels)
        step = -(-max(planes.shape[1:]) // self.map_size)
        picked = planes[chosen, ::step, ::step]
        lo, hi = float(picked.min(initial=0.0)), float(picked.max(initial=0.0))
        if signed:
            hi = max(abs(lo), abs(hi))
            lo = -hi
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        pixels = np.clip(np.rint((picked - lo) * scale), 0, 255).astype(np.uint8)
        return {
            "channels": chosen.tolist(),
            "height": picked.shape[1],
            "width": picked.shape[2],
            "step": step,
            "lo": lo,
            "hi": hi,
            "signed": signed,
            "pixels": base64.b64encode(pixels.tobytes()).decode("ascii"),
        }
