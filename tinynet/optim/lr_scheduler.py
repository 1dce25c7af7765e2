"""Learning-rate schedules with PyTorch's names and semantics.

Use: build the scheduler after the optimiser, and call ``scheduler.step()`` after
``optimizer.step()``, once per epoch or once per iteration (the schedule counts whatever you
step). Building a scheduler already applies its value at epoch 0 to every param group::

    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = StepLR(optimizer, step_size=8, gamma=0.96)   # the GoogLeNet paper's schedule
    for epoch in range(epochs):
        train_one_epoch(model, optimizer)
        scheduler.step()

Each schedule here is a closed-form function of ``last_epoch`` and ``base_lrs`` (every group's
``'initial_lr'``, recorded in the group when the first scheduler is built): ``lr_at(epoch)``.
PyTorch computes the same values recursively from the current ``group['lr']``; the two agree to
rounding (~1e-15 relative). The difference shows only if something else changes
``group['lr']`` between steps: PyTorch carries such a change on, here the next ``step()``
overwrites it. In exchange, resuming is exact by construction and ``SequentialLR`` is a plain
composition.
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_right

from tinynet.optim.optimizer import Optimizer


class LRScheduler:
    """Base class: subclasses define ``lr_at(epoch)`` and list their hyperparameter attribute
    names in ``_hyperparameters`` (they are saved in the state dict).

    optimizer:  the optimiser whose param groups' ``'lr'`` this sets
    last_epoch: -1 to start a schedule; a later value resumes at ``last_epoch + 1`` (the groups
                must then hold ``'initial_lr'``, e.g. from a loaded optimiser state dict)
    """

    _hyperparameters: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: {type(optimizer).__name__} is not an Optimizer")
        _check_int(name, "last_epoch", last_epoch, low=-1)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for index, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"{name}: param group {index} has no 'initial_lr', needed to resume "
                        f"at last_epoch={last_epoch}; load the optimiser's state dict first "
                        f"(or start with last_epoch=-1)"
                    )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, epoch: int) -> list[float]:
        """The learning rate of every param group at ``epoch`` (0 = as built)."""
        raise NotImplementedError(f"{type(self).__name__} must define lr_at()")

    def get_lr(self) -> list[float]:
        """The learning rates at ``last_epoch``."""
        return self.lr_at(self.last_epoch)

    def get_last_lr(self) -> list[float]:
        """The learning rates this scheduler set most recently, one per param group."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one epoch (or iteration) and set every group's learning rate."""
        self.last_epoch += 1
        self._apply()

    def _apply(self) -> None:
        values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = list(values)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """``last_epoch``, ``base_lrs``, ``last_lr`` and the hyperparameters (no optimiser)."""
        state = {
            "last_epoch": self.last_epoch,
            "base_lrs": list(self.base_lrs),
            "last_lr": list(self._last_lr),
        }
        state.update({key: getattr(self, key) for key in self._hyperparameters})
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what ``state_dict()`` saved (the optimiser's lr is not touched: load the
        optimiser's own state dict for that). On error nothing is changed."""
        self._check_state_dict(state_dict)
        self._load(state_dict)

    def _check_state_dict(self, state_dict: dict) -> None:
        name = type(self).__name__
        expected = set(self.state_dict())
        if not isinstance(state_dict, dict) or set(state_dict) != expected:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(
                f"{name}.load_state_dict: expected keys {sorted(expected)}; got {got} "
                f"(is it another scheduler's state?)"
            )
        groups = len(self.optimizer.param_groups)
        for key in ("base_lrs", "last_lr"):
            if len(state_dict[key]) != groups:
                raise ValueError(
                    f"{name}.load_state_dict: {key} has {len(state_dict[key])} entries; the "
                    f"optimiser has {groups} param group(s)"
                )

    def _load(self, state_dict: dict) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = list(state_dict["base_lrs"])
        self._last_lr = list(state_dict["last_lr"])
        for key in self._hyperparameters:
            setattr(self, key, state_dict[key])

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={getattr(self, key)!r}" for key in self._hyperparameters)
        return f"{type(self).__name__}({settings}, last_epoch={self.last_epoch})"


def _check_int(owner: str, name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}; got {value!r}")


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs::

        lr(t) = base_lr · gamma ** (t // step_size)

    The GoogLeNet paper (Szegedy et al., 2015, section 6) trains with momentum 0.9 and a "fixed
    learning rate schedule (decreasing the learning rate by 4% every 8 epochs)", that is
    ``StepLR(optimizer, step_size=8, gamma=0.96)`` stepped once per epoch.
    """

    _hyperparameters = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch=-1):
        _check_int("StepLR", "step_size", step_size, low=1)
        if not gamma >= 0:
            raise ValueError(f"StepLR: gamma must be >= 0; got {gamma!r}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        factor = self.gamma ** (epoch // self.step_size)
        return [base_lr * factor for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Anneal from base_lr to ``eta_min`` along half a cosine over ``T_max`` epochs::

        lr(t) = eta_min + (base_lr - eta_min) · (1 + cos(π t / T_max)) / 2

    (Loshchilov & Hutter's SGDR without restarts.) Past T_max the formula goes on, so the rate
    climbs back towards base_lr, as PyTorch's does: choose T_max = the number of steps you run.
    """

    _hyperparameters = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch=-1):
        _check_int("CosineAnnealingLR", "T_max", T_max, low=1)
        if not eta_min >= 0:
            raise ValueError(f"CosineAnnealingLR: eta_min must be >= 0; got {eta_min!r}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        factor = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return [self.eta_min + (base_lr - self.eta_min) * factor for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the learning rate by a factor that moves linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps, then stays there (PyTorch's LinearLR)::

        lr(t) = base_lr · (start + (end - start) · min(t, total_iters) / total_iters)
    """

    _hyperparameters = ("start_factor", "end_factor", "total_iters")

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ):
        name = type(self).__name__
        if not 0 < start_factor <= 1:
            raise ValueError(f"{name}: start_factor must be in (0, 1]; got {start_factor!r}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"{name}: end_factor must be in [0, 1]; got {end_factor!r}")
        _check_int(name, "total_iters", total_iters, low=1)
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        fraction = min(self.total_iters, epoch) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * fraction
        return [base_lr * factor for base_lr in self.base_lrs]


class LinearWarmup(LinearLR):
    """Ramp the learning rate linearly from ``start_factor · base_lr`` up to base_lr over
    ``warmup_steps`` steps, then hold it: PyTorch's ``LinearLR(optimizer, start_factor,
    end_factor=1.0, total_iters=warmup_steps)``::

        lr(t) = base_lr · (start_factor + (1 - start_factor) · min(t, warmup_steps) / warmup_steps)

    Follow it with a decay through ``SequentialLR(optimizer, [warmup, decay], [warmup_steps])``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        start_factor: float = 1.0 / 3,
        last_epoch: int = -1,
    ):
        _check_int("LinearWarmup", "warmup_steps", warmup_steps, low=1)
        super().__init__(optimizer, start_factor, 1.0, warmup_steps, last_epoch)

    @property
    def warmup_steps(self) -> int:
        return self.total_iters


class SequentialLR(LRScheduler):
    """Run ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` until
    ``milestones[1]``, and so on, as PyTorch's SequentialLR: each scheduler counts its epochs
    from 0 at the milestone where it takes over::

        lr(t) = schedulers[i].lr_at(t - milestones[i-1])   for milestones[i-1] <= t < milestones[i]

    For example a 5-epoch warm-up followed by cosine decay over the remaining 95::

        warmup = LinearWarmup(optimizer, warmup_steps=5, start_factor=0.1)
        cosine = CosineAnnealingLR(optimizer, T_max=95)
        scheduler = SequentialLR(optimizer, [warmup, cosine], milestones=[5])

    The schedulers must drive the same optimiser and be stepped only through this one.
    """

    def __init__(self, optimizer: Optimizer, schedulers, milestones, last_epoch: int = -1):
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("SequentialLR expects at least one scheduler; got none")
        for index, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(
                    f"SequentialLR: schedulers[{index}] is a {type(scheduler).__name__}, "
                    f"not a learning-rate scheduler"
                )
            if scheduler.optimizer is not optimizer:
                raise ValueError(
                    f"SequentialLR expects all schedulers to belong to the same optimizer; "
                    f"schedulers[{index}] ({type(scheduler).__name__}) drives another one"
                )
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR expects one milestone fewer than schedulers; got "
                f"{len(schedulers)} schedulers and {len(milestones)} milestones"
            )
        for milestone in milestones:
            _check_int("SequentialLR", "each milestone", milestone, low=1)
        if any(a >= b for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"SequentialLR: milestones must increase; got {milestones}")
        self.schedulers, self.milestones = schedulers, milestones
        # The schedulers' own construction set the lr; start from the initial values again.
        for group in optimizer.param_groups:
            if "initial_lr" in group:
                group["lr"] = group["initial_lr"]
        super().__init__(optimizer, last_epoch)

    def _phase(self, epoch: int) -> tuple[LRScheduler, int]:
        """The scheduler in charge at ``epoch`` and its own epoch count there."""
        index = bisect_right(self.milestones, epoch)
        start = self.milestones[index - 1] if index > 0 else 0
        return self.schedulers[index], epoch - start

    def lr_at(self, epoch: int) -> list[float]:
        scheduler, local_epoch = self._phase(epoch)
        return scheduler.lr_at(local_epoch)

    def _apply(self) -> None:
        scheduler, local_epoch = self._phase(self.last_epoch)
        scheduler.last_epoch = local_epoch
        scheduler._apply()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["milestones"] = list(self.milestones)
        state["schedulers"] = [scheduler.state_dict() for scheduler in self.schedulers]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._check_state_dict(state_dict)
        saved = state_dict["schedulers"]
        if len(saved) != len(self.schedulers):
            raise ValueError(
                f"SequentialLR.load_state_dict: the state dict holds {len(saved)} schedulers; "
                f"this one has {len(self.schedulers)}"
            )
        for scheduler, scheduler_state in zip(self.schedulers, saved):
            scheduler._check_state_dict(scheduler_state)
        for scheduler, scheduler_state in zip(self.schedulers, saved):
            scheduler.load_state_dict(scheduler_state)
        self._load(state_dict)
        self.milestones = list(state_dict["milestones"])

    def __repr__(self) -> str:
        inner = ", ".join(repr(scheduler) for scheduler in self.schedulers)
        return (
            f"SequentialLR([{inner}], milestones={self.milestones}, last_epoch={self.last_epoch})"
        )
