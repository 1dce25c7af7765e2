"""Polyak averaging: an exponential moving average of the weights, for evaluation.

The GoogLeNet paper (section 6) evaluates a Polyak-averaged model rather than the last
iterate. Keep the average beside training and swap it in to evaluate::

    ema = ExponentialMovingAverage(model, decay=0.999)
    for x, y in batches:
        ...; optimizer.step(); ema.update()
    ema.update_bn(training_batches)     # BatchNorm statistics measured for the average
    with ema.average_parameters():      # averaged weights in, live ones back out afterwards
        accuracy = evaluate(model)
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from tinynet.function import no_grad
from tinynet.nn.module import Module
from tinynet.nn.normalization import BatchNorm2d
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

    BatchNorm statistics for the average: averaged running statistics are an average of the
    statistics of past weights. While the weights move fast (the main job's first epoch: 23
    steps at learning rate 0.1) they fit neither the live weights nor the average, and the
    averaged network scores at chance in eval mode (10% on digits, where its statistics
    measured anew give 90%). ``update_bn(batches)`` replaces the averaged floating-point buffers
    by BatchNorm statistics measured with the averaged weights, as stochastic weight averaging
    does (Izmailov et al. 2018, ``torch.optim.swa_utils.update_bn``): for each BatchNorm, over
    the batches k = 1..K,

        running_mean = (1/K) Σ_k μ_k          running_var = (1/K) Σ_k s²_k

    where μ_k and s²_k are the channel's mean and unbiased variance over batch k's (N, H, W)
    as computed by the averaged layers before it. Call it before evaluating; the average's next
    ``update()`` folds the live statistics into these as above.

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

    def update_bn(self, batches) -> None:
        """Replace the averaged BatchNorm statistics by ones measured for the averaged weights
        on ``batches`` (see ``update_bn``); the live model is left exactly as it was."""
        if self._module is None or not self.use_buffers:
            raise ValueError(
                "ExponentialMovingAverage.update_bn: this average keeps no buffers (it needs a "
                "Module and use_buffers=True)"
            )
        with self.average_parameters():
            update_bn(batches, self._module)
            for name, array in self._module.named_buffers():
                if array.dtype.kind == "f":
                    self.shadow[name][...] = array

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
        if not isinstance(state_dict, dict):
            raise ValueError(
                f"ExponentialMovingAverage.load_state_dict: expected a dict with keys "
                f"{sorted(expected)}; got {type(state_dict).__name__}"
            )
        if set(state_dict) != expected:
            raise ValueError(
                f"ExponentialMovingAverage.load_state_dict: expected keys {sorted(expected)}; "
                f"missing {sorted(expected - set(state_dict))}, unexpected "
                f"{sorted(set(state_dict) - expected)}"
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


def update_bn(batches, model: Module) -> None:
    """Measure the running statistics of ``model``'s BatchNorm layers anew on ``batches``, as
    ``torch.optim.swa_utils.update_bn``: over the batches k = 1..K, each BatchNorm2d that tracks
    running statistics and is reached gets

        running_mean = (1/K) Σ_k μ_k          running_var = (1/K) Σ_k s²_k

    μ_k and s²_k being its input's per-channel mean and unbiased variance over batch k (the
    cumulative average of ``momentum=None``). Unlike PyTorch's, the other layers run in eval
    mode, so dropout draws no random numbers (the run's generator is untouched) and layers that
    only run in training (GoogLeNet's aux heads) keep their statistics. Every module's mode and
    each BatchNorm's momentum and ``num_batches_tracked`` are restored afterwards.

    batches: an iterable of inputs (arrays or Tensors) or of (input, target) pairs, as a
             DataLoader yields; not used at all if the model has no BatchNorm
    """
    norms = [m for m in model.modules() if isinstance(m, BatchNorm2d) and m.track_running_stats]
    if not norms:
        return
    modes = [(module, module.training) for module in model.modules()]
    kept = [(norm, norm.momentum, norm.num_batches_tracked.copy()) for norm in norms]
    model.eval()
    for norm in norms:
        # momentum None weighs the k-th batch 1/k, so the first batch replaces the old values
        norm.train()
        norm.momentum = None
        norm.num_batches_tracked[...] = 0
    seen = 0
    try:
        with no_grad():
            for batch in batches:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
                seen += 1
    finally:
        for norm, momentum, count in kept:
            norm.momentum = momentum
            norm.num_batches_tracked[...] = count
        for module, training in modes:
            object.__setattr__(module, "training", training)  # as Module.train, one module
    if not seen:
        raise ValueError("update_bn: batches is empty; BatchNorm statistics need at least one")
