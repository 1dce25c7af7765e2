"""How a module's full backward hooks see the gradients that cross its boundary.

``Module.__call__`` wraps each call of a module that has ``register_full_backward_hook`` hooks in
a :class:`FullBackwardHookCall`: its input and outputs pass through an identity op
(:class:`BackwardHookIdentityFunction`) whose backward reports the gradient arriving there, so
the hooks get ``(module, grad_input, grad_output)`` as PyTorch gives them, and may replace
grad_input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tinynet.function import Function
from tinynet.tensor import Tensor, as_array

if TYPE_CHECKING:
    from tinynet.nn.module import Module


class BackwardHookIdentityFunction(Function):
    """y = x; dL/dx = on_grad(dL/dy), or dL/dy where on_grad returns None. Marks a module's
    inputs and outputs so that its full backward hooks see the gradients that cross its
    boundary (after any tensor hooks on y, as in PyTorch), and no other consumer's."""

    @staticmethod
    def forward(ctx, x, on_grad=None):
        ctx.on_grad = on_grad
        return x

    @staticmethod
    def backward(ctx, grad_output):
        replaced = ctx.on_grad(grad_output)
        return grad_output if replaced is None else replaced


class FullBackwardHookCall:
    """One forward call of a module with full backward hooks: the gradients of its outputs are
    gathered as backward reaches them; when the gradient of its input is ready, each hook is
    called as ``hook(module, grad_input, grad_output)`` and may return a new grad_input.

    grad_input has one entry per positional Tensor argument (None where no gradient flows); at
    most one of them may require grad. If none does, the hooks run once every output's
    gradient is in, with grad_input all None (as in PyTorch)."""

    def __init__(self, module: Module, hooks: tuple):
        self.module, self.hooks = module, hooks
        self.input_count, self.input_index = 0, None
        self.grad_outputs: list = []
        self.pending = 0  # outputs whose gradient has not arrived yet

    def wrap_inputs(self, args: tuple) -> tuple:
        positions = [i for i, arg in enumerate(args) if isinstance(arg, Tensor)]
        self.input_count = len(positions)
        differentiable = [k for k, i in enumerate(positions) if args[i].requires_grad]
        if len(differentiable) > 1:
            raise NotImplementedError(
                f"register_full_backward_hook: {type(self.module).__name__} was called with "
                f"{len(differentiable)} inputs that require grad; tinynet supports one"
            )
        if not differentiable:
            return args
        self.input_index = differentiable[0]
        position = positions[self.input_index]
        wrapped = BackwardHookIdentityFunction.apply(args[position], on_grad=self._on_grad_input)
        return args[:position] + (wrapped,) + args[position + 1 :]

    def wrap_outputs(self, output):
        outputs = output if isinstance(output, tuple) else (output,)
        self.grad_outputs = [None] * len(outputs)
        wrapped = list(outputs)
        for k, value in enumerate(outputs):
            if isinstance(value, Tensor) and value.requires_grad:
                on_grad = lambda grad, k=k: self._on_grad_output(k, grad)
                wrapped[k] = BackwardHookIdentityFunction.apply(value, on_grad=on_grad)
        self.pending = sum(w is not o for w, o in zip(wrapped, outputs))
        if not isinstance(output, tuple):
            return wrapped[0]
        return type(output)(*wrapped) if hasattr(output, "_fields") else tuple(wrapped)

    def _on_grad_output(self, k: int, grad: np.ndarray) -> None:
        self.grad_outputs[k] = grad
        self.pending -= 1
        if self.input_index is None and self.pending == 0:
            self._call_hooks([None] * self.input_count)

    def _on_grad_input(self, grad: np.ndarray) -> np.ndarray:
        grad_input = [None] * self.input_count
        grad_input[self.input_index] = grad
        return self._call_hooks(grad_input)[self.input_index]

    def _call_hooks(self, grad_input: list) -> list:
        for hook in self.hooks:
            replaced = hook(self.module, tuple(grad_input), tuple(self.grad_outputs))
            if replaced is None:
                continue
            replaced = replaced if isinstance(replaced, (tuple, list)) else (replaced,)
            if len(replaced) != len(grad_input):
                raise RuntimeError(
                    f"a full backward hook of {type(self.module).__name__} returned "
                    f"{len(replaced)} gradients for {len(grad_input)} inputs"
                )
            grad_input = [
                None if g is None else np.asarray(as_array(g))
                for g in replaced
            ]
        return grad_input
