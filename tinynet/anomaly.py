"""Anomaly detection: stop at the first op whose values become NaN or infinite, naming its module.

    with tinynet.detect_anomaly():
        loss = F.cross_entropy(model(x), labels)
        loss.backward()

Inside the block (in this thread) every op's output is checked as the forward makes it, and
every gradient as the backward passes it on. The first NaN or infinity raises
:class:`AnomalyError`, which names the op, the module it ran in (the dotted path of
``named_modules()`` and ``state_dict()``, e.g. ``inception4a.branch3.1.conv``, or "outside any
module" for a functional call), the direction, the training step (the trainer announces it with
:func:`at_step`; plain use has none and says so) and statistics of what the op was given: each
input's shape, dtype, min, max and mean of its finite values and its count of NaN and inf.
``tinynet train --detect-anomaly`` runs a whole training under it.

Where it points:
  forward   the first op whose output holds a NaN or an infinity. If an input already held one
            (a leaf: the data, or a parameter a bad update left non-finite), the report says
            which input, by its parameter name where it is one of the module's own.
  backward  the first op, in backward order, whose backward turns a finite gradient into a
            NaN or an infinity for one of its inputs; or, where the gradient an op receives went
            bad outside any op (a tensor hook or a module's full backward hook returned it, the
            gradient ``backward()`` was started with, or the sum of the gradients of a tensor's
            consumers overflowed), the op that receives it, saying where it came from.

PyTorch's anomaly mode (``torch.autograd.detect_anomaly``) checks the backward only, for NaN
only, and reports the first backward node that returns one together with the traceback of the
*forward* line that created it: the NaN is found where it became visible in the backward, and
the user is pointed at forward code that is often innocent (a NaN returned by a hook, or made of
an infinity from a forward overflow, is blamed on whichever op's backward first passed it on).
tinynet names the module where the value first went bad, forward or backward, and the step.

An infinity that an op is asked for by a constant argument (max pooling's composed twin pads its
input with -inf) is no anomaly: it is carried through the ops that take it without an error,
until an op makes a NaN of it. A NaN is always an anomaly.

Cost: off, ``Function.apply`` and ``Tensor.backward`` read one thread-local attribute (per op,
per backward call); nothing else runs. On, every op's output and every gradient get an
``isfinite`` pass, and each recorded op keeps its inputs until its backward (for the backward
report's statistics), so a training step holds every activation as a graph without
``GraphNode``'s savings would. ``benchmarks/bench_anomaly.py`` measures both.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from dataclasses import dataclass

import numpy as np


class _ThreadState(threading.local):
    mode: detect_anomaly | None = None  # the innermost enabled detect_anomaly() of this thread
    step: tuple[int, str] | None = None  # the training step running (at_step), and its detail


state = _ThreadState()


def is_anomaly_enabled() -> bool:
    """True inside an enabled ``detect_anomaly()`` block of this thread."""
    return state.mode is not None


@contextlib.contextmanager
def at_step(number: int, detail: str = ""):
    """Run a block as training step ``number`` (``detail``: e.g. "epoch 2, batch 5"), so that an
    anomaly found in it names the step; the trainer's seam, free when detection is off."""
    outer = state.step
    state.step = (number, detail)
    try:
        yield
    finally:
        state.step = outer


class AnomalyError(RuntimeError):
    """A NaN or an infinity found by ``detect_anomaly()``.

    op:        the op's name (its Function class less "Function": "Conv2d"), or None for a leaf
               tensor's gradient
    module:    dotted path of the module the op ran in ("inception4a.branch3.1.conv"; "" for the
               top-level module's own forward), or None outside any module
    direction: "forward" or "backward"
    step:      the training step (counted from 1) under the trainer, else None
    inputs:    ArrayStats of what the op was given (its inputs; in backward also the gradient
               that arrived and the gradients it computed)
    """

    def __init__(self, message, op, module, direction, step, inputs):
        super().__init__(message)
        self.op, self.module, self.direction = op, module, direction
        self.step, self.inputs = step, inputs


@dataclass(frozen=True)
class ArrayStats:
    """What an array held: min, max and mean of its finite values (NaN if it has none)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    min: float
    max: float
    mean: float
    nans: int
    infs: int

    @classmethod
    def of(cls, name: str, array) -> ArrayStats:
        array = np.asarray(array)
        values = array.astype(np.float64) if array.dtype.kind in "biu" else array
        finite = values[np.isfinite(values)] if values.dtype.kind in "fc" else values
        low, high, mean = (
            (float(finite.min()), float(finite.max()), float(finite.mean(dtype=np.float64)))
            if finite.size
            else (math.nan,) * 3
        )
        nans = int(np.isnan(values).sum()) if values.dtype.kind in "fc" else 0
        infs = int(np.isinf(values).sum()) if values.dtype.kind in "fc" else 0
        return cls(name, array.shape, array.dtype, low, high, mean, nans, infs)

    def __str__(self) -> str:
        values = (
            "no finite value"  # not "min nan": a reader would count a NaN that is not there
            if math.isnan(self.min)
            else f"min {self.min:.4g}, max {self.max:.4g}, mean {self.mean:.4g}"
        )
        return (
            f"{self.name}: shape {self.shape} {self.dtype}, {values}, {self.nans:,} NaN, "
            f"{self.infs:,} inf"
        )


def _is_finite(array) -> bool:
    array = np.asarray(array)
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())


def _has_nan(array) -> bool:
    array = np.asarray(array)
    return array.dtype.kind in "fc" and bool(np.isnan(array).any())


def _is_array(value) -> bool:
    return isinstance(value, (np.ndarray, np.generic, float, int)) and not isinstance(value, bool)


class detect_anomaly(contextlib.ContextDecorator):  # noqa: N801 - PyTorch's name, used as a call
    """Context manager (or decorator): within it, in this thread, the first op whose output or
    whose gradient holds a NaN or an infinity raises :class:`AnomalyError` naming the op, its
    module, the direction, the step and its inputs' statistics (see the module docstring, also
    for how this differs from PyTorch's anomaly mode). ``enabled=False`` turns it off within an
    outer block; the previous setting comes back on exit, also after an exception."""

    def __init__(self, enabled: bool = True):
        self.enabled = bool(enabled)
        self._outer: list = []  # the setting each (possibly nested) entry replaced
        # Arrays holding an infinity an op was asked for (see the module docstring), by id; an
        # entry goes when its array does.
        self._intended: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def __enter__(self):
        self._outer.append(state.mode)
        state.mode = self if self.enabled else None
        return self

    def __exit__(self, *exc):
        state.mode = self._outer.pop()
        return False

    # ------------------------------------------------------------------ forward
    def check_forward(self, fn, ctx, inputs, arrays, params, output, scope) -> None:
        """Called by ``Function.apply`` after ``fn.forward``: raise if ``output`` went bad."""
        ctx.anomaly_inputs = (arrays, params)  # for a report of its backward
        if _is_finite(output):
            return
        if not _has_nan(output) and self._asked_for_infinity(inputs, arrays, params):
            if isinstance(output, np.ndarray):
                self._intended[id(output)] = output
            return
        module = _module_path(scope)
        stats = _forward_stats(inputs, arrays, params, scope)
        came_in = [s for s in stats if s.name.startswith("input") and (s.nans or s.infs)]
        if came_in:
            why = (
                f"{came_in[0].name} already held {_counts(came_in[0])}: it came from outside "
                f"the ops watched (the data, a parameter, or an op run before detect_anomaly())"
            )
        else:
            why = "its inputs are finite: the value went bad here"
        output_stats = ArrayStats.of("output", output)
        headline = (
            f"{_op_phrase(fn)} {_module_phrase(module, scope)} made {_counts(output_stats)} in "
            f"its output of shape {output_stats.shape} (forward; {_step_phrase()}); {why}"
        )
        raise self._error(headline, fn, module, "forward", stats + [output_stats], params)

    def _asked_for_infinity(self, inputs, arrays, params) -> bool:
        """Whether an infinity in the output was asked for: a constant argument holds one, or
        an input carries one that an earlier op was asked for."""
        from tinynet.tensor import Tensor  # here: tinynet.tensor imports this module

        for value, array in zip(inputs, arrays):
            if isinstance(value, Tensor):
                if self._intended.get(id(array)) is array:
                    return True
            elif _is_array(value) and not _is_finite(value):
                return True
        return any(_is_array(v) and not _is_finite(v) for v in params.values())

    # ------------------------------------------------------------------ backward
    def check_arriving(self, node, arrived, grad, is_root: bool) -> None:
        """Called by ``Tensor.backward`` with the gradient that reached ``node`` before
        (``arrived``) and after (``grad``) the node's hooks: raise if it is not finite. An op's
        own backward is checked when it runs (``check_backward``), so a bad gradient here was
        made outside any op."""
        if _is_finite(grad):
            return
        if _is_finite(arrived):
            source = "a hook registered on that tensor returned it"
        elif is_root:
            source = "it is the gradient backward() was started with"
        else:
            source = (
                "it is the sum of the finite gradients of the ops that use that tensor, which "
                "overflowed"
            )
        raise self._received(node, grad, source)

    def check_backward(self, node, grad, input_grads) -> None:
        """Called by ``Tensor.backward`` after ``node``'s op computed ``input_grads`` from the
        finite ``grad``: raise if one of them is not finite."""
        bad = [i for i, g in enumerate(input_grads) if g is not None and not _is_finite(g)]
        if not bad:
            return
        from tinynet.nn.hooks import BackwardHookIdentityFunction  # nn is built on this module

        ctx = node._ctx
        if ctx.fn is BackwardHookIdentityFunction:  # a module's full backward hook returned it
            hooked = ctx.on_grad.__self__.module  # the FullBackwardHookCall's
            path = _module_path(ctx.scope + (hooked,))
            source = f"the full backward hook of module {path} ({type(hooked).__name__})"
            source += " returned it"
            raise self._received(ctx.parents[0], input_grads[0], source)
        scope = ctx.scope
        module = _module_path(scope)
        stats = _backward_stats(ctx, scope) + [ArrayStats.of("gradient arriving", grad)]
        stats += [ArrayStats.of(f"gradient for input {i}", input_grads[i]) for i in bad]
        headline = (
            f"{_op_phrase(ctx.fn)} {_module_phrase(module, scope)} turned a finite gradient "
            f"into {_counts(stats[-len(bad)])} in its gradient for input {bad[0]} (backward; "
            f"{_step_phrase()})"
        )
        raise self._error(headline, ctx.fn, module, "backward", stats, ctx.params)

    def _received(self, node, grad, source: str) -> AnomalyError:
        """The error for a non-finite gradient that reached ``node`` from outside any op."""
        received = ArrayStats.of("gradient arriving", grad)
        ctx = node._ctx
        what = _counts(received)
        if ctx is None:  # a leaf: a parameter or an input, which belongs to no op
            headline = (
                f"the gradient of a leaf tensor of shape {received.shape} holds {what} "
                f"(backward; {_step_phrase()}): {source}"
            )
            return self._error(headline, None, None, "backward", [received], {})
        module = _module_path(ctx.scope)
        headline = (
            f"the gradient received by {_op_phrase(ctx.fn)} "
            f"{_module_phrase(module, ctx.scope)} at its output holds {what} (backward; "
            f"{_step_phrase()}): {source}"
        )
        stats = _backward_stats(ctx, ctx.scope) + [received]
        return self._error(headline, ctx.fn, module, "backward", stats, ctx.params)

    def _error(self, headline, fn, module, direction, stats, params) -> AnomalyError:
        lines = [f"anomaly: {headline}", "  what the op was given:" if fn else ""]
        lines += [f"    {s}" for s in stats]
        shown = {k: v for k, v in params.items() if _is_plain(v)}
        if shown:
            lines.append("  parameters: " + ", ".join(f"{k}={_short(v)}" for k, v in shown.items()))
        step = state.step[0] if state.step else None
        return AnomalyError(
            "\n".join(line for line in lines if line), _op_name(fn), module, direction, step,
            tuple(stats),
        )  # fmt: skip


# ---------------------------------------------------------------------- the report's pieces
def _op_name(fn) -> str | None:
    if fn is None:
        return None
    name = fn.__name__
    return name[: -len("Function")] if name.endswith("Function") else name


def _op_phrase(fn) -> str:
    return f"op {_op_name(fn)} ({fn.__name__})"


def _module_phrase(module: str | None, scope: tuple) -> str:
    if module is None:
        return "outside any module"
    if module == "":
        return f"in the top-level module's own forward ({type(scope[0]).__name__})"
    aliases = [name for name, m in scope[0].named_modules() if m is scope[-1] and name != module]
    also = f", also registered as {', '.join(aliases)}" if aliases else ""
    return f"in module {module} ({type(scope[-1]).__name__}{also})"


def _step_phrase() -> str:
    if state.step is None:
        return "outside any training step: plain use, or the trainer's evaluation"
    number, detail = state.step
    return f"training step {number}" + (f": {detail}" if detail else "")


def _module_path(scope: tuple) -> str | None:
    """The dotted name of the innermost module of ``scope`` (the modules whose forward was
    running, outermost first) relative to the outermost: each module is looked up among the
    descendants of the one that called it, so a module registered twice is named as it was
    reached. None for an empty scope."""
    if not scope:
        return None
    root, path, caller = scope[0], "", scope[0]
    for module in scope[1:]:
        name = _name_in(caller, module)
        if name is not None:
            path = f"{path}.{name}" if path else name
        else:  # called from a module that does not hold it: its name in the whole model
            path = _name_in(root, module) or f"<{type(module).__name__} not registered>"
        caller = module
    return path


def _name_in(parent, module) -> str | None:
    return next((n for n, m in parent.named_modules() if m is module and n), None)


def _forward_stats(inputs, arrays, params, scope) -> list[ArrayStats]:
    names = _parameter_names(scope)
    stats = [
        ArrayStats.of(_input_name(i, value, names), array)
        for i, (value, array) in enumerate(zip(inputs, arrays))
        if _is_array(array)
    ]
    return stats + _array_parameters(params)


def _array_parameters(params: dict) -> list[ArrayStats]:
    """The arrays among an op's keyword parameters (BatchNorm's running statistics), as the
    forward left them: it may update them in place."""
    return [
        ArrayStats.of(f"{k} (after the forward)", v)
        for k, v in params.items()
        if isinstance(v, np.ndarray)
    ]


def _backward_stats(ctx, scope) -> list[ArrayStats]:
    """The statistics of what the op's forward was given, if it ran under detect_anomaly()."""
    kept = getattr(ctx, "anomaly_inputs", None)
    if kept is None:
        return []
    arrays, params = kept
    names = _parameter_names(scope)
    stats = [
        ArrayStats.of(_input_name(i, parent, names), array)
        for i, (parent, array) in enumerate(zip(ctx.inputs, arrays))
        if _is_array(array)
    ]
    return stats + _array_parameters(params)


def _parameter_names(scope) -> dict[int, str]:
    """Full dotted names of the innermost module's own parameters, by identity."""
    if not scope:
        return {}
    path = _module_path(scope)
    prefix = f"{path}." if path else ""
    return {id(p): prefix + name for name, p in scope[-1]._parameters.items() if p is not None}


def _input_name(index: int, value, names: dict[int, str]) -> str:
    name = names.get(id(value))
    return f"input {index} ({name})" if name else f"input {index}"


def _is_plain(value) -> bool:
    """A parameter worth printing: a number, a string, None, or a tuple or list of them."""
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, np.number))


def _counts(stats: ArrayStats) -> str:
    """'3 NaN', '1 inf' or '3 NaN and 1 inf'."""
    counts = [f"{n:,} {what}" for n, what in ((stats.nans, "NaN"), (stats.infs, "inf")) if n]
    return " and ".join(counts)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
