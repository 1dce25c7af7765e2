"""Adam and AdamW (Kingma & Ba, 2015; Loshchilov & Hutter, 2019), with AMSGrad."""

from __future__ import annotations

import numpy as np

from tinynet.optim.optimizer import Optimizer, check_hyperparameter, lerp_


class Adam(Optimizer):
    r"""Adam, with PyTorch's exact update rule (L2 weight decay through the gradient).

    For each parameter θ with gradient ∇ at its step t = 1, 2, ... (γ = lr, λ = weight_decay,
    β₁, β₂ = betas, ε = eps)::

        g   = -∇ if maximize else ∇
        g   = g + λ θ                                   if λ != 0
        m_t = β₁ m_{t-1} + (1 - β₁) g                   (computed as PyTorch's lerp)
        v_t = β₂ v_{t-1} + (1 - β₂) g²
        v̂   = max(v̂, v_t) if amsgrad else v_t           (v̂ starts at 0)
        θ   = θ - γ / (1 - β₁ᵗ) · m_t / (√v̂ / √(1 - β₂ᵗ) + ε)

    m and v start at 0. ε is added after the bias correction of v, so the first step moves every
    weight by γ·g/(|g| + ε) ≈ γ·sign(g). t counts the steps this parameter had a gradient
    (parameters without one are skipped and keep their t). ``state[p]`` holds ``'step'`` (t),
    ``'exp_avg'`` (m), ``'exp_avg_sq'`` (v) and, with amsgrad, ``'max_exp_avg_sq'`` (v̂).

    params:       Parameters, or param-group dicts (see ``Optimizer``)
    lr:           learning rate γ >= 0
    betas:        (β₁, β₂), each in [0, 1)
    eps:          ε >= 0
    weight_decay: λ >= 0
    amsgrad:      use the running maximum of v (Reddi et al., 2018)
    maximize:     ascend the objective instead of descending it
    """

    _decoupled_weight_decay = False

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ):
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _check_group(self, group: dict, where: str) -> None:
        owner = f"{type(self).__name__}{where}"
        check_hyperparameter(owner, "learning rate lr", group["lr"])
        check_hyperparameter(owner, "epsilon eps", group["eps"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{owner}: betas must be a pair (beta1, beta2); got {betas!r}")
        for index, beta in enumerate(betas):
            check_hyperparameter(owner, f"beta parameter at index {index}", beta, 0.0, 1.0, True)
        check_hyperparameter(owner, "weight_decay", group["weight_decay"])

    def _state_names(self, group: dict) -> set[str]:
        names = {"step", "exp_avg", "exp_avg_sq"}
        return names | {"max_exp_avg_sq"} if group.get("amsgrad") else names

    def _update(self, p, group: dict) -> None:
        theta, grad = p.data, p.grad
        lr, eps, weight_decay = (
            float(group["lr"]),
            float(group["eps"]),
            float(group["weight_decay"]),
        )
        beta1, beta2 = (float(beta) for beta in group["betas"])
        state = self.state.setdefault(p, {})
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(theta)
            state["exp_avg_sq"] = np.zeros_like(theta)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(theta)
        state["step"] += 1
        step = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        work = self._workspace
        scratch = work.get(1, theta)

        g = grad
        if group["maximize"]:
            g = np.negative(grad, out=work.get(0, theta))
        if weight_decay != 0:
            if self._decoupled_weight_decay:
                theta *= 1.0 - lr * weight_decay
            else:
                np.multiply(theta, weight_decay, out=scratch)
                g = np.add(g, scratch, out=work.get(0, theta))

        lerp_(m, g, 1.0 - beta1, scratch)  # m = β₁ m + (1 - β₁) g, as PyTorch's lerp
        # v = β₂ v + ((1 - β₂) g) g
        np.multiply(g, 1.0 - beta2, out=scratch)
        scratch *= g
        v *= beta2
        v += scratch
        if group["amsgrad"]:
            v = np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])

        step_size = lr / (1.0 - beta1**step)
        bias_correction2_sqrt = (1.0 - beta2**step) ** 0.5
        denominator = np.sqrt(v, out=scratch)
        denominator /= bias_correction2_sqrt
        denominator += eps
        update = np.multiply(m, -step_size, out=work.get(0, theta))
        update /= denominator
        theta += update


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay, with PyTorch's exact update rule.

    As ``Adam``, except that the decay shrinks the weights directly, before the moments are
    updated, instead of entering the gradient (so it is not rescaled by 1/√v)::

        θ   = θ (1 - γ λ)                               if λ != 0
        g   = -∇ if maximize else ∇
        m_t = β₁ m_{t-1} + (1 - β₁) g
        v_t = β₂ v_{t-1} + (1 - β₂) g²
        v̂   = max(v̂, v_t) if amsgrad else v_t
        θ   = θ - γ / (1 - β₁ᵗ) · m_t / (√v̂ / √(1 - β₂ᵗ) + ε)

    With a zero gradient a weight only decays: θ_t = θ_0 (1 - γλ)ᵗ. The default λ is 0.01.
    """

    _decoupled_weight_decay = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)
