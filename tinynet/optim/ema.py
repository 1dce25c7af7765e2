"""Polyak averaging: an exponential moving average of the weights, for evaluation.

The GoogLeNet paper (section 6) evaluates a Polyak-averaged model rather than the last
iterate. Keep the average beside training and swap it in to evaluate::

    ema = ExponentialMovingAverage(model, decay=0.999)
    for x, y in batches:
        ...; optimizer.step(); ema.update()
    with ema.average_parameters():      # averaged weights in, live ones back out afterwards
        accuracy = evaluate(model)
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from tinynet.nn.module import Module
from tinynet.optim.optimizer import Workspace
from tinynet.tensor import Tensor


class ExponentialMovingAverage:
    """A shadow copy of the weights, updated after each optimiser step as::

        d_n    = min(decay, (1 + n) / (10 + n))  if warmup  else  decay
        shadow = d_n · shadow + (1 - d_n) · param

    where n = 1, 2, ... counts the calls of ``update()`` including the current one. The shadow
    starts as a copy of the weights at construction. The warm-up (TensorFlow's ``num_updates``
    rule, also the default of the ``torch_ema`` package) lets the average forget the random
    initialisation quickly: d_1 = 2/11, d_2 = 3/12, ..., and d_n reaches 0.999 at n = 8990.
    Without it, after n updates the initial weights still carry weight decayⁿ (37% after 1000
    updates at decay 0.999). warmup=False gives the plain recurrence, as
    ``torch.optim.swa_utils.get_ema_multi_avg_fn``.

    Buffers: given a Module with use_buffers=True (default), its floating-point buffers
    (BatchNorm's ``running_mean`` / ``running_var``) are averaged with the same rule, so the
    averaged weights are evaluated with running statistics that follow them (as timm's
    ModelEma and ``AveragedModel(use_buffers=True)``); integer buffers (``num_batches_tracked``)
    are copied from the model at each update. With use_buffers=False only parameters are
    averaged and the live buffers stay in place during evaluation. Given parameters rather than
    a Module, there are no buffers.

    model_or_params: a Module, or an iterable of Parameters
    decay:           in [0, 1]; the weight kept by the old average at each update

    ``shadow`` maps names (the model's ``state_dict`` keys, or '0', '1', ... for a list of
    parameters) to the averaged arrays, so ``model.load_state_dict(ema.shadow, strict=False)``
    exports the average.
    """

    def __init__(
        self, model_or_params, decay: float = 0.999, warmup: bool = True, use_buffers: bool = True
    ):
        if isinstance(model_or_params, Module):
            self._module, self._params = model_or_params, None
        else:
            params = model_or_params
            params = [params] if isinstance(params, Tensor) else list(params)
            for index, p in enumerate(params):
                if not isinstance(p, Tensor) or p.dtype.kind != "f":
                    raise TypeError(
                        f"ExponentialMovingAverage: entry {index} is not a floating-point "
                        f"Parameter (got {type(p).__name__})"
                    )
            if not params:
                raise ValueError("ExponentialMovingAverage got an empty parameter list")
            self._module, self._params = None, params
        if isinstance(decay, bool) or not 0.0 <= decay <= 1.0:
            raise ValueError(f"ExponentialMovingAverage: decay must be in [0, 1]; got {decay!r}")
        self.decay, self.warmup, self.use_buffers = float(decay), bool(warmup), bool(use_buffers)
        self.num_updates = 0
        self.shadow: OrderedDict[str, np.ndarray] = OrderedDict(
            (name, np.array(array, copy=True)) for name, array in self._live().items()
        )
        self._workspace = Workspace()

    def _live(self) -> OrderedDict[str, np.ndarray]:
        """The arrays being averaged, by name, as they are now (buffers may be rebound)."""
        if self._module is None:
            return OrderedDict((str(i), p.data) for i, p in enumerate(self._params))
        live = OrderedDict((name, p.data) for name, p in self._module.named_parameters())
        if self.use_buffers:
            live.update(self._module.named_buffers())
        return live

    def decay_at(self, n: int) -> float:
        """The decay d_n used by the n-th update (n = 1, 2, ...)."""
        if self.warmup:
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    def update(self) -> None:
        """Fold the current weights into the average (call after each ``optimizer.step()``)."""
        live = self._matched_live("update")
        self.num_updates += 1
        decay = self.decay_at(self.num_updates)
        for name, shadow in self.shadow.items():
            current = live[name]
            if shadow.dtype.kind != "f":
                shadow[...] = current  # a count such as num_batches_tracked: copied
                continue
            fresh = self._workspace.get(0, shadow)
            np.multiply(current, 1.0 - decay, out=fresh)
            shadow *= decay
            shadow += fresh

    def _matched_live(self, action: str) -> OrderedDict[str, np.ndarray]:
        live = self._live()
        problems = [
            f"{name}: shape {live[name].shape} now, {shadow.shape} in the average"
            for name, shadow in self.shadow.items()
            if name in live and live[name].shape != shadow.shape
        ]
        if set(live) != set(self.shadow) or problems:
            missing = sorted(set(self.shadow) - set(live))
            extra = sorted(set(live) - set(self.shadow))
            raise RuntimeError(
                f"ExponentialMovingAverage.{action}: the model no longer matches the average "
                f"(missing {missing}, new {extra}, {problems})"
            )
        return live

    def copy_to(self) -> None:
        """Overwrite the live weights (and averaged buffers) with the average, for good."""
        live = self._matched_live("copy_to")
        for name, shadow in self.shadow.items():
            live[name][...] = shadow

    @contextmanager
    def average_parameters(self):
        """Within the block, the model holds the averaged weights; on leaving it, even by an
        exception, the live weights are restored exactly (the same arrays, the same values)."""
        live = self._matched_live("average_parameters")
        saved = OrderedDict((name, np.array(array, copy=True)) for name, array in live.items())
        self.copy_to()
        try:
            yield self
        finally:
            current = self._live()
            for name, array in saved.items():
                current[name][...] = array

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """``decay``, ``warmup``, ``use_buffers``, ``num_updates`` and a copy of ``shadow``."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "use_buffers": self.use_buffers,
            "num_updates": self.num_updates,
            "shadow": {name: np.array(array, copy=True) for name, array in self.shadow.items()},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a ``state_dict()``; the names and shapes must match this average's, and on
        error nothing is changed."""
        expected = {"decay", "warmup", "use_buffers", "num_updates", "shadow"}
        if not isinstance(state_dict, dict) or set(state_dict) != expected:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(
                f"ExponentialMovingAverage.load_state_dict: expected keys {sorted(expected)}; "
                f"got {got}"
            )
        saved = state_dict["shadow"]
        problems = [f"  missing: {name}" for name in self.shadow if name not in saved]
        problems += [f"  unexpected: {name}" for name in saved if name not in self.shadow]
        problems += [
            f"  {name}: shape {np.shape(saved[name])} in the state dict, {shadow.shape} here"
            for name, shadow in self.shadow.items()
            if name in saved and np.shape(saved[name]) != shadow.shape
        ]
        if problems:
            raise ValueError(
                "ExponentialMovingAverage.load_state_dict failed; nothing was loaded:\n"
                + "\n".join(problems)
            )
        for name, shadow in self.shadow.items():
            shadow[...] = saved[name]
        self.decay, self.warmup = float(state_dict["decay"]), bool(state_dict["warmup"])
        self.num_updates = int(state_dict["num_updates"])
