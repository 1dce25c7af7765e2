"""RMSprop (Tieleman & Hinton, 2012), centred (Graves, 2013), with momentum."""

from __future__ import annotations

import numpy as np

from tinynet.optim.optimizer import Optimizer, check_hyperparameter, lerp_


class RMSprop(Optimizer):
    r"""RMSprop, with PyTorch's exact update rule.

    For each parameter θ with gradient ∇ (γ = lr, α = alpha, ε = eps, λ = weight_decay,
    μ = momentum)::

        g   = -∇ if maximize else ∇
        g   = g + λ θ                                   if λ != 0
        v_t = α v_{t-1} + (1 - α) g²                    (v starts at 0)
        ḡ_t = α ḡ_{t-1} + (1 - α) g  (PyTorch's lerp)    if centered (ḡ starts at 0)
        d   = √(v_t - ḡ_t²) + ε  if centered,  √v_t + ε  otherwise
        b_t = μ b_{t-1} + g / d,  θ = θ - γ b_t         if μ > 0 (b starts at 0)
        θ   = θ - γ g / d                               otherwise

    ε is added outside the square root. The Inception-v3 paper's setting, decay α = 0.9 with
    ε = 1.0, makes d >= 1: where gradients are small the step is plain SGD's γ g, and only
    large gradients are scaled down. ``state[p]`` holds ``'step'`` (the number of updates, as
    PyTorch keeps it), ``'square_avg'`` (v), ``'momentum_buffer'`` (b) when μ > 0 and
    ``'grad_avg'`` (ḡ) when centred.

    params:       Parameters, or param-group dicts (see ``Optimizer``)
    lr:           learning rate γ >= 0
    alpha:        smoothing constant (decay) α of the squared-gradient average, in [0, 1]
    eps:          ε >= 0, added to the denominator
    weight_decay: λ >= 0, an L2 penalty through the gradient
    momentum:     μ >= 0
    centered:     normalise by an estimate of the gradient's variance instead of its second
                  moment
    maximize:     ascend the objective instead of descending it
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ):
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _check_group(self, group: dict, where: str) -> None:
        owner = f"RMSprop{where}"
        check_hyperparameter(owner, "learning rate lr", group["lr"])
        check_hyperparameter(owner, "alpha", group["alpha"], 0.0, 1.0)
        check_hyperparameter(owner, "epsilon eps", group["eps"])
        check_hyperparameter(owner, "weight_decay", group["weight_decay"])
        check_hyperparameter(owner, "momentum", group["momentum"])

    def _state_names(self, group: dict) -> set[str]:
        names = {"step", "square_avg"}
        if group.get("momentum", 0) > 0:
            names.add("momentum_buffer")
        if group.get("centered"):
            names.add("grad_avg")
        return names

    def _update(self, p, group: dict) -> None:
        theta, grad = p.data, p.grad
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        weight_decay, momentum = float(group["weight_decay"]), float(group["momentum"])
        state = self.state.setdefault(p, {})
        if not state:
            state["step"] = 0
            state["square_avg"] = np.zeros_like(theta)
            if momentum > 0:
                state["momentum_buffer"] = np.zeros_like(theta)
            if group["centered"]:
                state["grad_avg"] = np.zeros_like(theta)
        state["step"] += 1
        work = self._workspace
        scratch = work.get(1, theta)

        g = grad
        if group["maximize"]:
            g = np.negative(grad, out=work.get(0, theta))
        if weight_decay != 0:
            np.multiply(theta, weight_decay, out=scratch)
            g = np.add(g, scratch, out=work.get(0, theta))

        # v = α v + ((1 - α) g) g
        v = state["square_avg"]
        np.multiply(g, 1.0 - alpha, out=scratch)
        scratch *= g
        v *= alpha
        v += scratch
        denominator = work.get(2, theta)
        if group["centered"]:
            mean = state["grad_avg"]
            lerp_(mean, g, 1.0 - alpha, scratch)
            np.multiply(mean, mean, out=scratch)
            np.subtract(v, scratch, out=denominator)
            np.sqrt(denominator, out=denominator)
        else:
            np.sqrt(v, out=denominator)
        denominator += eps

        step = np.divide(g, denominator, out=scratch)
        if momentum > 0:
            buffer = state["momentum_buffer"]
            buffer *= momentum
            buffer += step
            step = buffer
        update = np.multiply(step, lr, out=denominator)
        theta -= update
