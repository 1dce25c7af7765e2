"""The classic wrong answers, each written as a learner writes it: the right op of numpy_ops.py
with one mistake (nothing of tinynet imported)."""

import numpy as np
from numpy_ops import (
    batch_norm_backward,
    col2im,
    conv2d,
    conv2d_backward,
    crop,
    im2col,
    pad,
    pool_geometry,
)


def conv2d_backward_weight_transposed(grad_output, input, weight, bias, stride, padding):  # noqa: A002
    """dW = cols · dYᵀ (in, out) instead of dY · colsᵀ (out, in), reshaped to the weight's shape."""
    grad_input, _, grad_bias = conv2d_backward(grad_output, input, weight, bias, stride, padding)
    cols = im2col(pad(input, padding), weight.shape[2:], stride, grad_output.shape[2:])
    n, c, kh, kw, oh, ow = cols.shape
    cols_matrix = cols.reshape(n, c * kh * kw, oh * ow)
    dy = grad_output.reshape(n, -1, oh * ow)
    grad_weight = np.einsum("nkp,nop->ko", cols_matrix, dy).reshape(weight.shape)
    return grad_input, grad_weight, grad_bias


def col2im_overwriting(cols, shape, stride):
    """col2im with = where it must add: overlapping windows lose all but the last tap."""
    (kh, kw, oh, ow), (sh, sw) = cols.shape[2:], stride
    x = np.zeros(shape)
    for i in range(kh):
        for j in range(kw):
            rows, columns = slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw)
            x[:, :, rows, columns] = cols[:, :, i, j]
    return x


def conv2d_backward_col2im_overwrites(grad_output, input, weight, bias, stride, padding):  # noqa: A002
    _, grad_weight, grad_bias = conv2d_backward(grad_output, input, weight, bias, stride, padding)
    grad_cols = np.einsum("nopq,ocij->ncijpq", grad_output, weight)
    shape = pad(input, padding).shape
    grad_input = crop(col2im_overwriting(grad_cols, shape, stride), padding, input.shape[2:])
    return grad_input, grad_weight, grad_bias


def conv2d_backward_bias_wrong_axes(grad_output, input, weight, bias, stride, padding):  # noqa: A002
    """grad_bias summed over the image only, not over the batch too."""
    grad_input, grad_weight, _ = conv2d_backward(grad_output, input, weight, bias, stride, padding)
    return grad_input, grad_weight, None if bias is None else grad_output.sum(axis=(2, 3))


def conv2d_padding_one_side(input, weight, bias, stride, padding):  # noqa: A002
    """One row too many at the bottom: np.pad's (before, after) pair off by one."""
    ph, pw = padding
    x = np.pad(input, ((0, 0), (0, 0), (ph, ph + 1), (pw, pw)))
    return conv2d(x, weight, bias, stride, (0, 0))


def conv2d_stride_one_only(input, weight, bias, stride, padding):  # noqa: A002
    """The output size uses the stride, but window (p, q) starts at (p, q), not (p·sh, q·sw)."""
    size = (n + 2 * p - k for n, p, k in zip(input.shape[2:], padding, weight.shape[2:]))
    oh, ow = (span // s + 1 for span, s in zip(size, stride))
    return conv2d(input, weight, bias, (1, 1), padding)[:, :, :oh, :ow]


def max_pool2d_backward_every_tie(grad_output, input, kernel_size, stride, padding, ceil_mode):  # noqa: A002
    """The mask x == max: every tied maximum gets the window's gradient."""
    out_size, extra = pool_geometry(input.shape[2:], kernel_size, stride, padding, ceil_mode)
    x = pad(input, padding, -np.inf, extra)
    cols = im2col(x, kernel_size, stride, out_size)
    mask = cols == cols.max(axis=(2, 3), keepdims=True)
    grad_cols = mask * grad_output[:, :, None, None]
    return crop(col2im(grad_cols, x.shape, stride), padding, input.shape[2:])


def batch_norm_backward_constant_statistics(
    grad_output,
    input,
    running_mean,
    running_var,
    weight,
    bias,
    training,
    momentum,
    eps,  # noqa: A002
):
    """dx = γ dy / σ: the mean and the variance treated as constants, also in training."""
    _, grad_weight, grad_bias = batch_norm_backward(
        grad_output, input, running_mean, running_var, weight, bias, training, momentum, eps
    )
    axes = (0,) + tuple(range(2, input.ndim))
    shape = (1, -1) + (1,) * (input.ndim - 2)
    var = input.var(axis=axes) if training else running_var
    gamma = 1.0 if weight is None else weight.reshape(shape)
    return grad_output * gamma / np.sqrt(var.reshape(shape) + eps), grad_weight, grad_bias


def softmax_without_max(input, dim):  # noqa: A002
    e = np.exp(input)
    return e / e.sum(axis=dim, keepdims=True)


def conv2d_backward_stride_one_only(grad_output, input, weight, bias, stride, padding):  # noqa: A002
    """col2im puts window (p, q)'s gradient back at (p, q), not at (p·sh, q·sw)."""
    _, grad_weight, grad_bias = conv2d_backward(grad_output, input, weight, bias, stride, padding)
    grad_cols = np.einsum("nopq,ocij->ncijpq", grad_output, weight)
    shape = pad(input, padding).shape
    grad_input = crop(col2im(grad_cols, shape, (1, 1)), padding, input.shape[2:])
    return grad_input, grad_weight, grad_bias
