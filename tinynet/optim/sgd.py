"""Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay."""

from __future__ import annotations

import numpy as np

from tinynet.optim.optimizer import Optimizer, check_hyperparameter


class SGD(Optimizer):
    r"""Stochastic gradient descent, with PyTorch's exact update rule.

    For each parameter θ with gradient ∇ at step t (γ = lr, λ = weight_decay, μ = momentum,
    τ = dampening)::

        g   = -∇ if maximize else ∇
        g   = g + λ θ                       if λ != 0
        b_t = g                             if μ != 0 and t = 1 (the buffer starts as g,
            = μ b_{t-1} + (1 - τ) g         if μ != 0 and t > 1   undamped, as PyTorch)
        g   = g + μ b_t                     if nesterov
            = b_t                           if μ != 0, otherwise
        θ   = θ - γ g

    So plain momentum is v ← μ v + g, θ ← θ - γ v (the learning rate outside the buffer, unlike
    Sutskever et al.), and the first step moves θ by exactly -γ g. ``state[p]`` holds
    ``'momentum_buffer'`` (b) once p has had a gradient, when μ != 0.

    params:       Parameters, or param-group dicts (see ``Optimizer``)
    lr:           learning rate γ >= 0 (PyTorch's default 1e-3)
    momentum:     μ >= 0
    dampening:    τ, the fraction of each gradient left out of the buffer after the first step
    weight_decay: λ >= 0, an L2 penalty (λ/2)|θ|² added through the gradient
    nesterov:     Nesterov momentum; needs μ > 0 and τ = 0
    maximize:     ascend the objective instead of descending it
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _check_group(self, group: dict, where: str) -> None:
        owner = f"SGD{where}"
        check_hyperparameter(owner, "learning rate lr", group["lr"])
        check_hyperparameter(owner, "momentum", group["momentum"])
        check_hyperparameter(owner, "dampening", group["dampening"], low=-np.inf)
        check_hyperparameter(owner, "weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"{owner}: Nesterov momentum requires a momentum > 0 and zero dampening; got "
                f"momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def _state_names(self, group: dict) -> set[str]:
        return {"momentum_buffer"} if group.get("momentum", 0) != 0 else set()

    def _update(self, p, group: dict) -> None:
        theta, grad = p.data, p.grad
        lr, momentum = float(group["lr"]), float(group["momentum"])
        dampening, weight_decay = float(group["dampening"]), float(group["weight_decay"])
        work = self._workspace
        # g: the gradient itself when nothing modifies it, else scratch slot 0.
        g = grad
        if weight_decay != 0 or group["maximize"]:
            g = work.get(0, theta)
            if weight_decay != 0:
                np.multiply(theta, weight_decay, out=g)
                (np.subtract if group["maximize"] else np.add)(g, grad, out=g)
            else:
                np.negative(grad, out=g)
        if momentum != 0:
            state = self.state.setdefault(p, {})
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = np.empty_like(theta)
                buffer[...] = g
            else:
                buffer *= momentum
                if dampening == 0:
                    buffer += g
                else:
                    damped = work.get(1, theta)
                    np.multiply(g, 1.0 - dampening, out=damped)
                    buffer += damped
            if group["nesterov"]:
                ahead = work.get(1, theta)
                np.multiply(buffer, momentum, out=ahead)
                g = np.add(g, ahead, out=ahead)
            else:
                g = buffer
        step = work.get(1, theta)
        np.multiply(g, lr, out=step)
        theta -= step
