"""Exercise 2: the backward of a fully connected layer, y = x Wᵀ + b."""

from tinynet.exercises.exercise import Exercise, op_check


def linear_backward(grad_output, input, weight, bias):  # noqa: A002 - torch's argument names
    """The gradients of y = x Wᵀ + b, given dL/dy.

    input x:  (N, in) (or (..., in): every leading axis is a batch axis)
    weight W: (out, in)
    bias b:   (out,) or None
    grad_output dL/dy: y's shape, (N, out)

    Returns (grad_input, grad_weight, grad_bias), each the shape of its input:

        dL/dx = dL/dy · W          (N, out) @ (out, in)
        dL/dW = (dL/dy)ᵀ · x       (out, N) @ (N, in): summed over the batch
        dL/db = Σ_n dL/dy[n]       the batch's sum; None when bias is None

    Hint: write each from its shape; (N, out) and (out, in) admit one product that gives
    (N, in). dL/dW and dL/db sum over every batch axis, and only over those."""
    out_features, in_features = weight.shape
    rows = grad_output.reshape(-1, out_features)  # every leading axis is a batch axis
    grad_input = grad_output @ weight
    grad_weight = rows.T @ input.reshape(-1, in_features)
    grad_bias = None if bias is None else rows.sum(axis=0)
    return grad_input, grad_weight, grad_bias


EXERCISE = Exercise.of_function(
    linear_backward,
    "The backward of y = x Wᵀ + b: grad_input, grad_weight, grad_bias.",
    ("01_scalar_graph.py", "07_write_a_function.py"),
    op_check("linear", "backward"),
)
