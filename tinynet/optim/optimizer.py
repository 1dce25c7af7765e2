"""The Optimizer base class: parameter groups, skipping absent gradients, and state dicts.

An optimiser holds ``param_groups``, a list of dicts that each hold ``'params'`` (a list of
Parameters) and that group's hyperparameters (``'lr'``, ``'weight_decay'``, ...), and ``state``,
a dict from each Parameter to what the update rule remembers about it (a momentum buffer, Adam's
moments). ``step()`` visits every parameter whose ``.grad`` is not None and hands it to the
subclass's ``_update``; parameters without a gradient are skipped and their state stays as it was,
as in PyTorch.

``state_dict()`` names parameters by their position in the optimiser (0, 1, ... across the
groups in order), like PyTorch, so it can be loaded into a new optimiser built over other
Parameter objects of the same shapes. Its keys are strings and its values arrays, numbers,
strings and lists, so ``tinynet.io.save`` can store it.
"""

from __future__ import annotations

import numbers

import numpy as np

from tinynet.function import enable_grad
from tinynet.tensor import Tensor


class Workspace:
    """Reusable scratch arrays, so an update rule needs no fresh temporaries per parameter.

    ``get(slot, like)`` returns an array with the shape and dtype of ``like`` that stays valid
    until the next ``get`` of the same slot and dtype. Each slot is one flat buffer as large as
    the largest array asked of it so far, so the memory is a few copies of the largest
    parameter, not of the whole model.
    """

    def __init__(self):
        self._buffers: dict[tuple[int, np.dtype], np.ndarray] = {}

    def get(self, slot: int, like: np.ndarray) -> np.ndarray:
        key = (slot, like.dtype)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < like.size:
            buffer = self._buffers[key] = np.empty(like.size, dtype=like.dtype)
        return buffer[: like.size].reshape(like.shape)


def check_hyperparameter(owner: str, name: str, value, low=0.0, high=None, high_open=False):
    """Raise ValueError unless ``low <= value`` (and ``value < high`` or ``<= high``).

    NaN fails every comparison and so is rejected too.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number; got {value!r}")
    ok = low <= value
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        bound = f">= {low}" if high is None else f"in [{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{owner}: invalid {name} {value!r}; it must be {bound}")


def lerp_(start: np.ndarray, end: np.ndarray, weight: float, scratch: np.ndarray) -> None:
    """start = lerp(start, end, weight) in place, in PyTorch's two forms: start + w (end - start)
    for w < 0.5, else end - (1 - w)(end - start); each is exact at its own end (w = 0 keeps
    start, w = 1 gives end). ``scratch`` is overwritten."""
    np.subtract(end, start, out=scratch)
    if weight < 0.5:
        scratch *= weight
        start += scratch
    else:
        scratch *= weight - 1.0
        np.add(end, scratch, out=start)


class Optimizer:
    """Base class of the optimisers: subclasses define ``_update`` (one parameter's rule),
    ``_check_group`` (argument validation) and ``_state_names`` (what ``state[p]`` holds).

    params:   an iterable of Parameters, or of dicts ``{'params': [...], 'lr': ..., ...}`` whose
              entries override ``defaults`` for that group (as PyTorch's param groups).
    defaults: every hyperparameter with its default value.
    """

    def __init__(self, params, defaults: dict):
        name = type(self).__name__
        if isinstance(params, Tensor):
            raise TypeError(
                f"{name}: params must be an iterable of Parameters or of param-group dicts; "
                f"got a single {type(params).__name__} (wrap it in a list)"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{name}: params must be an ordered sequence, not a set (a set's order changes "
                f"between runs, and state dicts name parameters by position)"
            )
        self.defaults = dict(defaults)
        self._check_group(self.defaults, "")
        self.param_groups: list[dict] = []
        self.state: dict[Tensor, dict] = {}
        self._workspace = Workspace()
        groups = list(params)
        if not groups:
            raise ValueError(f"{name} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyperparameters (the rest from defaults),
        e.g. to unfreeze layers while training."""
        name, index = type(self).__name__, len(self.param_groups)
        if not isinstance(param_group, dict):
            raise TypeError(
                f"{name}: param group {index} must be a dict with a 'params' entry; "
                f"got a {type(param_group).__name__} (mixing bare Parameters and group dicts?)"
            )
        if "params" not in param_group:
            raise ValueError(f"{name}: param group {index} has no 'params' entry")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{name}: param group {index}'s params must be an ordered sequence (a set's "
                f"order changes between runs, and state dicts name parameters by position)"
            )
        params = list(params)
        for position, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{name}: param group {index}, entry {position} is a {type(p).__name__}; "
                    f"optimisers update Parameters (Tensors)"
                )
            if p.dtype.kind != "f":
                raise TypeError(
                    f"{name}: param group {index}, entry {position} has dtype {p.dtype}; "
                    f"only floating-point parameters can be optimised"
                )
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{name}: param group {index} lists a parameter more than once")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        group = {key: value for key, value in param_group.items() if key != "params"}
        for key, default in self.defaults.items():
            group.setdefault(key, default)
        self._check_group(group, f" (param group {index})")
        group["params"] = params
        self.param_groups.append(group)

    def _check_group(self, group: dict, where: str) -> None:
        """Raise a clear error for invalid hyperparameters; ``where`` names the group."""

    def _state_names(self, group: dict) -> set[str]:
        """The keys of ``state[p]`` once a parameter of this group has been updated."""
        return set()

    def _parameters(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    # ------------------------------------------------------------------ stepping
    def zero_grad(self) -> None:
        """Drop every parameter's gradient (set ``.grad`` to None, as PyTorch's default)."""
        for p in self._parameters():
            p.grad = None

    def step(self, closure=None):
        """Update every parameter that has a gradient, in place; return ``closure()`` if given
        (a function that recomputes the loss with gradients enabled)."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.shape != p.shape:  # NumPy would broadcast it silently
                    raise ValueError(
                        f"{type(self).__name__}.step: a parameter of shape {p.shape} has a "
                        f"gradient of shape {p.grad.shape}"
                    )
                self._update(p, group)
        return loss

    def _update(self, p: Tensor, group: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define _update()")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """``{'state': {'0': {...}, ...}, 'param_groups': [{'lr': ..., 'params': [0, 1]}, ...]}``:
        a copy of the per-parameter state (keyed by the parameter's position, as a string) and
        each group's hyperparameters (with the positions of its parameters)."""
        position = {id(p): i for i, p in enumerate(self._parameters())}
        groups = []
        for group in self.param_groups:
            entry = {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in group.items()
                if key != "params"
            }
            entry["params"] = [position[id(p)] for p in group["params"]]
            groups.append(entry)
        state = {}
        for p, p_state in sorted(self.state.items(), key=lambda item: position[id(item[0])]):
            state[str(position[id(p)])] = {
                key: np.array(value, copy=True) if isinstance(value, np.ndarray) else value
                for key, value in p_state.items()
            }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyperparameters and per-parameter state saved by ``state_dict()``.

        The saved groups must hold as many parameters as this optimiser's, and every state array
        the shape of its parameter; every problem is reported in one error, and on error
        nothing is changed. State arrays are copied and cast to their parameter's dtype.
        """
        self._check_state_dict_layout(state_dict)
        problems: list[str] = []
        groups, saved_group_of = self._groups_from(state_dict["param_groups"], problems)
        state = self._state_from(state_dict["state"], saved_group_of, problems)
        if problems:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict failed; nothing was loaded:\n"
                + "\n".join(problems)
            )
        self.param_groups[:] = groups
        self.state = state

    def _check_state_dict_layout(self, state_dict) -> None:
        """Raise unless ``state_dict`` is ``state_dict()``'s dict with one entry per group."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict)
            raise ValueError(
                f"{name}.load_state_dict: expected a dict with keys 'param_groups' and "
                f"'state' (from Optimizer.state_dict()); got {keys}"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the state dict has {len(saved_groups)} parameter "
                f"group(s), this optimiser has {len(self.param_groups)}; nothing was loaded"
            )

    def _groups_from(self, saved_groups: list, problems: list[str]):
        """The param groups that the saved ones describe, holding this optimiser's parameters, and
        for each saved position (a string) its parameter and saved group; appends what is wrong
        to ``problems``."""
        saved_group_of, groups = {}, []
        for index, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            saved_positions = list(saved.get("params", []))
            if len(saved_positions) != len(group["params"]):
                problems.append(
                    f"  param group {index}: {len(saved_positions)} parameter(s) in the state "
                    f"dict, {len(group['params'])} in this optimiser"
                )
            for position, p in zip(saved_positions, group["params"]):
                saved_group_of[str(position)] = (p, saved)
            missing = [key for key in self.defaults if key not in saved]
            if missing:
                problems.append(
                    f"  param group {index}: no {', '.join(map(repr, missing))} in the state "
                    f"dict (is it from another kind of optimiser?)"
                )
                continue
            new_group = {
                key: tuple(value)
                if isinstance(self.defaults.get(key), tuple) and isinstance(value, list)
                else value
                for key, value in saved.items()
                if key != "params"
            }
            try:
                self._check_group(new_group, f" (param group {index} of the state dict)")
            except (TypeError, ValueError) as error:
                problems.append(f"  {error}")
            new_group["params"] = group["params"]
            groups.append(new_group)
        return groups, saved_group_of

    def _state_from(self, saved_state: dict, saved_group_of: dict, problems: list[str]) -> dict:
        """Per-parameter state from the saved one, keyed by this optimiser's parameters, arrays
        copied in their parameter's dtype; appends what is wrong to ``problems``."""
        name, state = type(self).__name__, {}
        for key, p_state in saved_state.items():
            if str(key) not in saved_group_of:
                problems.append(f"  state for parameter {key}, which no param group lists")
                continue
            p, saved_group = saved_group_of[str(key)]
            expected = self._state_names(saved_group)
            if set(p_state) != expected:
                problems.append(
                    f"  parameter {key}: state holds {sorted(p_state)}, {name} with these "
                    f"hyperparameters keeps {sorted(expected)}"
                )
                continue
            loaded = {}
            for state_name, value in p_state.items():
                if not isinstance(value, np.ndarray):
                    loaded[state_name] = value  # a count, such as Adam's step
                elif value.shape != p.shape:
                    problems.append(
                        f"  parameter {key}: state {state_name!r} has shape {value.shape}, "
                        f"the parameter has shape {p.shape}"
                    )
                else:
                    loaded[state_name] = np.array(value, dtype=p.dtype, copy=True)
            state[p] = loaded
        return state

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for index, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {index}")
            lines += [f"    {key}: {group[key]}" for key in sorted(group) if key != "params"]
        return "\n".join(lines + [")"])
