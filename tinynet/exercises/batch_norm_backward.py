"""Exercise 8: the backward of batch normalisation, through the batch's mean and variance."""

import numpy as np

from tinynet.exercises.exercise import Exercise, op_check


def batch_norm_backward(
    grad_output, input, running_mean, running_var, weight, bias, training, momentum, eps
):
    """The gradients of y = γ (x - μ) / sqrt(v + eps) + β, per channel (axis 1), given dL/dy.

    input x: (N, C) or (N, C, H, W); the m values of a channel are its N (·H·W) entries.
    weight γ, bias β: (C,) or None (then γ = 1, β = 0 and their gradient is None).
    training: μ and v are the batch's mean and (biased) variance over those m values, and the
    gradient flows through them; evaluation: μ = running_mean, v = running_var, constants.
    (momentum only updates the running statistics in the forward: the backward ignores it.)

    Returns (grad_input, grad_weight, grad_bias). With x̂ = (x - μ) / sqrt(v + eps) and
    g = dL/dy · γ (per channel), means over the m values of each channel:

        training:    dL/dx = (g - mean(g) - x̂ · mean(g · x̂)) / sqrt(v + eps)
        evaluation:  dL/dx = g / sqrt(v + eps)
        dL/dγ = Σ dL/dy · x̂,   dL/dβ = Σ dL/dy   (sums over the m values of each channel)

    Hint: in training every x moves μ and v, and so every output of its channel: the two mean
    terms are those paths. Leaving them out gives the evaluation-mode gradient."""
    axes = (0,) + tuple(range(2, input.ndim))  # every axis but the channels'
    per_channel = (1, -1) + (1,) * (input.ndim - 2)
    if training:
        mean = input.mean(axis=axes, keepdims=True)
        var = input.var(axis=axes, keepdims=True)
    else:
        mean, var = running_mean.reshape(per_channel), running_var.reshape(per_channel)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (input - mean) * inv_std
    g = grad_output if weight is None else grad_output * weight.reshape(per_channel)
    if training:
        mean_g = g.mean(axis=axes, keepdims=True)  # the path through μ
        mean_g_x_hat = (g * x_hat).mean(axis=axes, keepdims=True)  # the path through v
        grad_input = (g - mean_g - x_hat * mean_g_x_hat) * inv_std
    else:
        grad_input = g * inv_std
    grad_weight = None if weight is None else (grad_output * x_hat).sum(axis=axes)
    grad_bias = None if bias is None else grad_output.sum(axis=axes)
    return grad_input, grad_weight, grad_bias


EXERCISE = Exercise.of_function(
    batch_norm_backward,
    "The backward of BatchNorm in training (through μ and σ²) and evaluation.",
    ("05_vanishing_gradients.py",),
    op_check("batch_norm", "backward"),
)
