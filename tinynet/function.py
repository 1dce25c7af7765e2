"""The contract every differentiable op follows, and the switch that turns recording off.

An op is a ``Function`` subclass with two static methods side by side:

    forward(ctx, *inputs, **params) -> ndarray      computes the output from plain ndarrays
    backward(ctx, grad_output)      -> grads        dL/dinput for each positional input

``forward`` stores on ``ctx`` what ``backward`` will need (``ctx.save_for_backward(...)`` or plain
attributes); ``backward`` returns one gradient per positional input of ``forward`` (a tuple, or a
single array for one input), ``None`` where an input is not differentiable or where
``ctx.needs_input_grad[i]`` is False. ``Function.apply`` unwraps Tensors, runs ``forward`` and, if
any input requires grad, links the output to its inputs through ``ctx``.

Each op's class is its name with a ``Function`` suffix (``Conv2dFunction``, ``ReLUFunction``),
so it never shares a name with the ``tinynet.nn`` layer that calls it (``nn.Conv2d``).
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from tinynet import anomaly
from tinynet.tensor import Tensor, as_array

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self.previous = is_grad_enabled()
        _state.grad_enabled = self.enabled

    def __exit__(self, *exc):
        _state.grad_enabled = self.previous
        return False


def no_grad() -> _GradMode:
    """Context manager (or decorator) under which ops record no graph: for inference."""
    return _GradMode(False)


def enable_grad() -> _GradMode:
    """Turn recording back on inside a ``no_grad()`` block."""
    return _GradMode(True)


def current_module_scope() -> tuple:
    """The modules whose ``forward`` is running, outermost first (``Module.__call__`` keeps it)."""
    return getattr(_state, "module_scope", ())


@contextlib.contextmanager
def module_scope(module):
    """Run a block with ``module`` innermost in ``current_module_scope()``: each op recorded
    inside remembers it in ``ctx.scope``, which is how a trace knows which module ran an op."""
    outer = current_module_scope()
    _state.module_scope = outer + (module,)
    try:
        yield
    finally:
        _state.module_scope = outer


class Context:
    """What one op application remembers between its forward and its backward."""

    def __init__(self, needs_input_grad: tuple[bool, ...]):
        self.needs_input_grad = needs_input_grad
        self.saved_tensors: tuple[np.ndarray, ...] = ()
        self.fn: type[Function] | None = None
        # The graph node (tinynet.tensor.GraphNode, or a leaf Tensor) of each input that needs
        # a gradient, None for the others.
        self.parents: tuple = ()
        # For tracing (tinynet.trace), not for backward: every positional input (the graph node
        # of a Tensor, constants as given), the keyword parameters, the modules the op ran in.
        self.inputs: tuple = ()
        self.params: dict = {}
        self.scope: tuple = ()
        self.released = False

    def save_for_backward(self, *arrays: np.ndarray) -> None:
        self.saved_tensors = arrays

    def release(self) -> None:
        """Free what forward saved (after backward, unless the graph is retained)."""
        self.__dict__ = {"fn": self.fn, "parents": (), "released": True}


class Function:
    """Base class of every differentiable op; see the module docstring for the contract."""

    @staticmethod
    def forward(ctx: Context, *inputs, **params) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params) -> Tensor:
        """Run the op on Tensors (or constants) and record it if any input requires grad."""
        arrays = [as_array(x) for x in inputs]
        enabled = is_grad_enabled()
        needs_input_grad = tuple(
            enabled and isinstance(x, Tensor) and x.requires_grad for x in inputs
        )
        ctx = Context(needs_input_grad)
        output = cls.forward(ctx, *arrays, **params)
        watch = anomaly.state.mode  # detect_anomaly(): None when off, and nothing else runs
        if watch is not None:
            watch.check_forward(cls, ctx, inputs, arrays, params, output, current_module_scope())
        if not any(needs_input_grad):
            return Tensor._from_op(output, None)
        ctx.fn = cls
        # The graph holds the inputs' nodes, not the Tensors: their values stay alive only if
        # forward saved them (see tinynet.tensor.GraphNode).
        nodes = tuple(x._grad_node if isinstance(x, Tensor) else x for x in inputs)
        ctx.parents = tuple(x if needed else None for x, needed in zip(nodes, needs_input_grad))
        ctx.inputs, ctx.params, ctx.scope = nodes, params, current_module_scope()
        return Tensor._from_op(output, ctx)
