"""Module, Parameter and Sequential: the containers that hold a network's state.

A Module holds Parameters (trained), buffers (state that is saved but not trained, such as
BatchNorm's running statistics) and child Modules, each registered by assigning an attribute.
Dotted names (``inception3a.branch2.1.conv.weight``) address every piece, exactly as PyTorch's
``state_dict()`` keys do, so weights move between the two frameworks unchanged.

Hooks follow PyTorch's conventions: ``register_forward_pre_hook``, ``register_forward_hook`` and
``register_full_backward_hook`` (and ``Tensor.register_hook``) each return a handle to remove
them; a hook that returns something other than None replaces what it was given.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from tinynet.function import Function, is_grad_enabled, module_scope
from tinynet.hooks import RemovableHandle
from tinynet.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module trains: requires_grad defaults to True."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


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


class _FullBackwardHookCall:
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
                None if g is None else np.asarray(g.data if isinstance(g, Tensor) else g)
                for g in replaced
            ]
        return grad_input


class Module:
    """Base class of every layer and network. Subclasses set attributes in ``__init__`` and
    define ``forward``; call the module itself (``module(x)``) to run it."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_backward_hooks", OrderedDict())

    # ------------------------------------------------------------- registration
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}: call super().__init__() before assigning attributes"
            )
        if name in self._parameters and value is None:
            self._parameters[name] = None  # an absent optional parameter (bias=False)
            return
        if name in self._buffers and isinstance(value, np.ndarray):
            self._buffers[name] = value
            return
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        # Only called when normal lookup fails: the registries hold the parameters and children.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: np.ndarray) -> None:
        """Keep ``array`` in the state dict without training it (e.g. running statistics)."""
        self.__dict__.pop(name, None)
        self._buffers[name] = np.asarray(array)

    def register_parameter(self, name: str, parameter: Parameter | None) -> None:
        """Register a parameter that may be absent (a conv's bias=False): None keeps the name
        as an attribute but out of ``parameters()`` and the state dict, as in PyTorch."""
        self.__dict__.pop(name, None)
        self._parameters[name] = parameter

    # ------------------------------------------------------------- running
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        for hook in tuple(self._forward_pre_hooks.values()):
            replaced = hook(self, args)
            if replaced is not None:
                args = replaced if isinstance(replaced, tuple) else (replaced,)
        backward_hooks = None
        if self._backward_hooks and is_grad_enabled():
            backward_hooks = _FullBackwardHookCall(self, tuple(self._backward_hooks.values()))
            args = backward_hooks.wrap_inputs(args)
        with module_scope(self):
            output = self.forward(*args, **kwargs)
        for hook in tuple(self._forward_hooks.values()):
            replaced = hook(self, args, output)
            if replaced is not None:
                output = replaced
        if backward_hooks is not None:
            output = backward_hooks.wrap_outputs(output)
        return output

    def register_forward_pre_hook(self, hook, prepend: bool = False) -> RemovableHandle:
        """Call ``hook(module, args)`` before every forward of this module; a return value
        other than None (a tuple, or a single value) replaces the positional arguments."""
        return RemovableHandle(self._forward_pre_hooks, hook, prepend)

    def register_forward_hook(self, hook, prepend: bool = False) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after every forward of this module (used by
        ``tinynet.summary`` and ``tinynet.capture``); a return value other than None
        replaces the output."""
        return RemovableHandle(self._forward_hooks, hook, prepend)

    def register_full_backward_hook(self, hook, prepend: bool = False) -> RemovableHandle:
        """Call ``hook(module, grad_input, grad_output)`` when backward has computed the
        gradients of this module's inputs: tuples of ndarrays (None where no gradient flows),
        grad_input one per positional Tensor argument, grad_output one per output. A return
        value other than None (a tuple like grad_input) replaces the gradients passed on."""
        return RemovableHandle(self._backward_hooks, hook, prepend)

    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout active, BatchNorm uses batch statistics), recursively."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    # ------------------------------------------------------------- traversal
    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._modules.items()

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first, with dotted names."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for prefix, module in self.named_modules():
            for name, parameter in module._parameters.items():
                if parameter is not None:
                    yield (f"{prefix}.{name}" if prefix else name), parameter

    def parameters(self) -> Iterator[Parameter]:
        for _, parameter in self.named_parameters():
            yield parameter

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        for prefix, module in self.named_modules():
            for name, buffer in module._buffers.items():
                yield (f"{prefix}.{name}" if prefix else name), buffer

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (set to None, as PyTorch's default)."""
        for parameter in self.parameters():
            parameter.grad = None

    # ------------------------------------------------------------- state
    def _state_entries(self) -> list[tuple[str, Module, str, str]]:
        """(key, owning module, registry, local name) for every parameter and buffer, in the
        order PyTorch lists them: each module's parameters, then its buffers, then children."""
        entries = []
        for prefix, module in self.named_modules():
            for registry in ("_parameters", "_buffers"):
                for name, value in getattr(module, registry).items():
                    if value is not None:
                        key = f"{prefix}.{name}" if prefix else name
                        entries.append((key, module, registry, name))
        return entries

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Every parameter and buffer by dotted name, as copies (a snapshot of the weights)."""
        state = OrderedDict()
        for key, module, registry, name in self._state_entries():
            value = getattr(module, registry)[name]
            state[key] = np.array(value.data if isinstance(value, Tensor) else value, copy=True)
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> tuple[list[str], list[str]]:
        """Copy weights in by name. Every problem (missing key, unexpected key, shape mismatch)
        is reported in one error, and on error nothing is changed.

        strict=False ignores missing and unexpected keys (shape mismatches still fail) and
        returns (missing_keys, unexpected_keys).
        """
        entries = {
            key: (module, registry, name) for key, module, registry, name in self._state_entries()
        }
        arrays = {
            key: np.asarray(value.data if isinstance(value, Tensor) else value)
            for key, value in state_dict.items()
        }
        missing = [key for key in entries if key not in arrays]
        unexpected = [key for key in arrays if key not in entries]
        problems = []
        for key, (module, registry, name) in entries.items():
            if key in arrays:
                shape = getattr(module, registry)[name].shape
                if arrays[key].shape != shape:
                    problems.append(
                        f"  {key}: shape {arrays[key].shape} in the state dict, "
                        f"{shape} in the model"
                    )
        if strict:
            problems += [f"  missing key: {key}" for key in missing]
            problems += [f"  unexpected key: {key}" for key in unexpected]
        if problems:
            raise ValueError(
                f"load_state_dict into {type(self).__name__} failed; nothing was loaded:\n"
                + "\n".join(problems)
            )
        for key, (module, registry, name) in entries.items():
            if key in arrays:
                current = getattr(module, registry)[name]
                target = current.data if isinstance(current, Tensor) else current
                target[...] = arrays[key]
        return missing, unexpected

    def to(self, dtype) -> Module:
        """Convert every floating parameter and buffer to ``dtype`` (e.g. np.float64 for
        gradient checks), in place; integer buffers are left alone."""
        dtype = np.dtype(dtype)
        for module in self.modules():
            for parameter in module._parameters.values():
                if parameter is not None:
                    parameter.data = parameter.data.astype(dtype)
                    parameter.grad = None
            for name, buffer in module._buffers.items():
                if buffer.dtype.kind == "f":
                    module._buffers[name] = buffer.astype(dtype)
        return self

    def double(self) -> Module:
        return self.to(np.float64)

    def float(self) -> Module:
        return self.to(np.float32)

    # ------------------------------------------------------------- display
    def extra_repr(self) -> str:
        """The constructor arguments shown in repr(), e.g. 'in=3, out=64, kernel=(7, 7)'."""
        return ""

    def __repr__(self) -> str:
        lines = [
            f"({name}): " + repr(child).replace("\n", "\n  ")
            for name, child in self._modules.items()
        ]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied one after another; children are named '0', '1', ... as in PyTorch."""

    def __init__(self, *modules: Module):
        super().__init__()
        for index, module in enumerate(modules):
            setattr(self, str(index), module)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x
