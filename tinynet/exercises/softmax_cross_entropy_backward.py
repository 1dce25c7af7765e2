"""Exercise 3: the gradient of softmax followed by cross-entropy, with label smoothing."""

import numpy as np

from tinynet.exercises.exercise import Exercise, op_check


def softmax_cross_entropy_backward(grad_output, input, target, label_smoothing):  # noqa: A002
    """dL/dx for L = mean_n ℓ_n, ℓ_n = -Σ_c q_nc log softmax(x_n)_c (torch's cross_entropy).

    input x:           (N, C) logits, any size (1e4 too)
    target t:          (N,) class indices in [0, C)
    label_smoothing ε: q_n = (1 - ε) onehot(t_n) + ε / C, the target distribution
    grad_output:       dL/dL, a scalar (an array of shape ()) that scales the whole gradient

    Returns grad_input, (N, C):

        dL/dx_nc = grad_output · (softmax(x_n)_c - q_nc) / N

    Hint: softmax(x)_c = e^(x_c - m) / Σ_j e^(x_j - m) with m = max_j x_j: it is the same
    function for any m, and with the maximum subtracted e^… cannot overflow at logits of 1e4."""
    n, classes = input.shape
    shifted = input - input.max(axis=1, keepdims=True)
    softmax = np.exp(shifted)
    softmax /= softmax.sum(axis=1, keepdims=True)
    q = np.full_like(input, label_smoothing / classes)
    q[np.arange(n), target] += 1 - label_smoothing
    return grad_output * (softmax - q) / n


EXERCISE = Exercise.of_function(
    softmax_cross_entropy_backward,
    "The gradient of mean cross-entropy over softmax, stable at 1e4 logits.",
    ("04_train_digits.py", "06_multicrop.py", "07_write_a_function.py"),
    op_check("cross_entropy", "backward"),
)
