"""Module, Parameter and Sequential: the containers that hold a network's state.

A Module holds Parameters (trained), buffers (state that is saved but not trained, such as
BatchNorm's running statistics) and child Modules, each registered by assigning an attribute.
Dotted names (``inception3a.branch2.1.conv.weight``) address every piece, exactly as PyTorch's
``state_dict()`` keys do, so weights move between the two frameworks unchanged.

Hooks follow PyTorch's conventions: ``register_forward_pre_hook``, ``register_forward_hook`` and
``register_full_backward_hook`` (and ``Tensor.register_hook``) each return a handle to remove
them; a hook that returns something other than None replaces what it was given. How full
backward hooks see the gradients at a module's boundary is ``tinynet/nn/hooks.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from tinynet.function import is_grad_enabled, module_scope
from tinynet.hooks import RemovableHandle
from tinynet.nn.hooks import FullBackwardHookCall
from tinynet.tensor import Tensor, as_array


class Parameter(Tensor):
    """A Tensor that a Module trains: requires_grad defaults to True."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


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
            backward_hooks = FullBackwardHookCall(self, tuple(self._backward_hooks.values()))
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
            state[key] = np.array(as_array(value), copy=True)
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
            key: np.asarray(as_array(value))
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
                target = as_array(current)
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
