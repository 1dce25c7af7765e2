"""Someone's own ops in plain NumPy, written as a user of check_op writes them (nothing of
tinynet imported): the forward and backward of every op check_op knows, in the call convention
of docs/testing.md. tests/test_check_op_user.py checks them the way that user would."""

import numpy as np


def linear(input, weight, bias):  # noqa: A002
    y = input @ weight.T
    return y if bias is None else y + bias


def linear_backward(grad_output, input, weight, bias):  # noqa: A002
    lead = tuple(range(grad_output.ndim - 1))
    grad_weight = np.tensordot(grad_output, input, axes=(lead, lead))
    grad_bias = None if bias is None else grad_output.sum(axis=lead)
    return grad_output @ weight, grad_weight, grad_bias


def relu(input):  # noqa: A002
    return np.maximum(input, 0)


def relu_backward(grad_output, input):  # noqa: A002
    return grad_output * (input > 0)


def softmax(input, dim):  # noqa: A002
    e = np.exp(input - input.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def softmax_backward(grad_output, input, dim):  # noqa: A002
    y = softmax(input, dim)
    return y * (grad_output - (grad_output * y).sum(axis=dim, keepdims=True))


def log_softmax(input, dim):  # noqa: A002
    shifted = input - input.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def log_softmax_backward(grad_output, input, dim):  # noqa: A002
    return grad_output - softmax(input, dim) * grad_output.sum(axis=dim, keepdims=True)


def _smoothed_targets(target, classes, label_smoothing):
    onehot = np.eye(classes)[target]
    return (1 - label_smoothing) * onehot + label_smoothing / classes


def cross_entropy(input, target, label_smoothing):  # noqa: A002
    q = _smoothed_targets(target, input.shape[1], label_smoothing)
    return -(q * log_softmax(input, 1)).sum(axis=1).mean()


def cross_entropy_backward(grad_output, input, target, label_smoothing):  # noqa: A002
    q = _smoothed_targets(target, input.shape[1], label_smoothing)
    return grad_output * (softmax(input, 1) - q) / input.shape[0]


# ------------------------------------------------------------------ windows: im2col and col2im
def im2col(x, kernel, stride, out_size):
    """x (N, C, H, W) already padded -> (N, C, kh, kw, OH, OW): tap (i, j) of window (p, q)."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_size
    cols = np.empty(x.shape[:2] + (kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[
                :, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw
            ]
    return cols


def col2im(cols, shape, stride):
    """The adjoint of im2col: every tap's value added back where it came from."""
    (kh, kw, oh, ow), (sh, sw) = cols.shape[2:], stride
    x = np.zeros(shape)
    for i in range(kh):
        for j in range(kw):
            x[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += cols[
                :, :, i, j
            ]
    return x


def pad(x, padding, value=0.0, extra=(0, 0)):
    (ph, pw), (eh, ew) = padding, extra
    return np.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), constant_values=value)


def crop(x, padding, size):
    (ph, pw), (h, w) = padding, size
    return x[:, :, ph : ph + h, pw : pw + w]


def conv2d(input, weight, bias, stride, padding):  # noqa: A002
    x = pad(input, padding)
    kernel = weight.shape[2:]
    out_size = tuple((n - k) // s + 1 for n, k, s in zip(x.shape[2:], kernel, stride))
    y = np.einsum("ncijpq,ocij->nopq", im2col(x, kernel, stride, out_size), weight)
    return y if bias is None else y + bias[None, :, None, None]


def conv2d_backward(grad_output, input, weight, bias, stride, padding):  # noqa: A002
    x = pad(input, padding)
    kernel, out_size = weight.shape[2:], grad_output.shape[2:]
    cols = im2col(x, kernel, stride, out_size)
    grad_weight = np.einsum("nopq,ncijpq->ocij", grad_output, cols)
    grad_cols = np.einsum("nopq,ocij->ncijpq", grad_output, weight)
    grad_input = crop(col2im(grad_cols, x.shape, stride), padding, input.shape[2:])
    grad_bias = None if bias is None else grad_output.sum(axis=(0, 2, 3))
    return grad_input, grad_weight, grad_bias


# ------------------------------------------------------------------ pooling
def pool_geometry(size, kernel_size, stride, padding, ceil_mode):
    """PyTorch's output size per axis, and the rows/columns its last window overhangs."""
    out_size, extra = [], []
    for n, k, s, p in zip(size, kernel_size, stride, padding):
        span = n + 2 * p - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= n + p:
            out -= 1  # the last window would start in the padding
        out_size.append(out)
        extra.append(max((out - 1) * s + k - n - 2 * p, 0))
    return tuple(out_size), tuple(extra)


def max_pool2d(input, kernel_size, stride, padding, ceil_mode):  # noqa: A002
    out_size, extra = pool_geometry(input.shape[2:], kernel_size, stride, padding, ceil_mode)
    x = pad(input, padding, -np.inf, extra)
    return im2col(x, kernel_size, stride, out_size).max(axis=(2, 3))


def max_pool2d_backward(grad_output, input, kernel_size, stride, padding, ceil_mode):  # noqa: A002
    out_size, extra = pool_geometry(input.shape[2:], kernel_size, stride, padding, ceil_mode)
    x = pad(input, padding, -np.inf, extra)
    cols = im2col(x, kernel_size, stride, out_size)
    n, c, kh, kw, oh, ow = cols.shape
    taps = cols.reshape(n, c, kh * kw, oh, ow)
    first = taps.argmax(axis=2)  # the first maximum in scan order, as PyTorch
    winner = np.arange(kh * kw)[None, None, :, None, None] == first[:, :, None]
    grad_cols = (winner * grad_output[:, :, None]).reshape(cols.shape)
    return crop(col2im(grad_cols, x.shape, stride), padding, input.shape[2:])


def _avg_divisor(size, kernel_size, stride, padding, ceil_mode, count_include_pad):
    out_size, extra = pool_geometry(size, kernel_size, stride, padding, ceil_mode)
    counted = pad(np.ones((1, 1) + tuple(size)), padding, float(count_include_pad))
    counted = pad(counted, (0, 0), 0.0, extra)
    return out_size, extra, im2col(counted, kernel_size, stride, out_size).sum(axis=(2, 3))


def avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad):  # noqa: A002
    out_size, extra, divisor = _avg_divisor(
        input.shape[2:], kernel_size, stride, padding, ceil_mode, count_include_pad
    )
    x = pad(input, padding, 0.0, extra)
    return im2col(x, kernel_size, stride, out_size).sum(axis=(2, 3)) / divisor


def avg_pool2d_backward(
    grad_output,
    input,
    kernel_size,
    stride,
    padding,
    ceil_mode,
    count_include_pad,  # noqa: A002
):
    out_size, extra, divisor = _avg_divisor(
        input.shape[2:], kernel_size, stride, padding, ceil_mode, count_include_pad
    )
    shape = pad(input, padding, 0.0, extra).shape
    grad_cols = np.broadcast_to(
        (grad_output / divisor)[:, :, None, None], shape[:2] + tuple(kernel_size) + out_size
    )
    return crop(col2im(grad_cols, shape, stride), padding, input.shape[2:])


def _adaptive_cells(size, output_size):
    (h, w), (oh, ow) = size, output_size
    rows = [(i * h // oh, -(-(i + 1) * h // oh)) for i in range(oh)]
    cols = [(j * w // ow, -(-(j + 1) * w // ow)) for j in range(ow)]
    return [(i, j, r, c) for i, r in enumerate(rows) for j, c in enumerate(cols)]


def adaptive_avg_pool2d(input, output_size):  # noqa: A002
    y = np.empty(input.shape[:2] + tuple(output_size))
    for i, j, (r0, r1), (c0, c1) in _adaptive_cells(input.shape[2:], output_size):
        y[:, :, i, j] = input[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return y


def adaptive_avg_pool2d_backward(grad_output, input, output_size):  # noqa: A002
    grad = np.zeros_like(input)
    for i, j, (r0, r1), (c0, c1) in _adaptive_cells(input.shape[2:], output_size):
        grad[:, :, r0:r1, c0:c1] += grad_output[:, :, i, j, None, None] / ((r1 - r0) * (c1 - c0))
    return grad


# ------------------------------------------------------------------ normalisation
def _channel_axes(x):
    return (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)


def batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps):  # noqa: A002
    axes, shape = _channel_axes(input)
    if training:
        mean, var = input.mean(axis=axes), input.var(axis=axes)
        if running_mean is not None:
            m = input.size // input.shape[1]
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * var * m / (m - 1)
    else:
        mean, var = running_mean, running_var
    y = (input - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y


def batch_norm_backward(
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
    axes, shape = _channel_axes(input)
    mean = input.mean(axis=axes) if training else running_mean
    var = input.var(axis=axes) if training else running_var
    inv_std = 1 / np.sqrt(var.reshape(shape) + eps)
    x_hat = (input - mean.reshape(shape)) * inv_std
    d_hat = grad_output if weight is None else grad_output * weight.reshape(shape)
    if training:
        d_hat = (
            d_hat
            - d_hat.mean(axis=axes, keepdims=True)
            - x_hat * (d_hat * x_hat).mean(axis=axes, keepdims=True)
        )
    grad_input = d_hat * inv_std
    if weight is None:
        return grad_input, None, None
    return grad_input, (grad_output * x_hat).sum(axis=axes), grad_output.sum(axis=axes)


def _lrn_window_sum(squares, size):
    c = squares.shape[1]
    padded = np.pad(squares, ((0, 0), (size // 2, (size - 1) // 2), (0, 0), (0, 0)))
    return sum(padded[:, i : i + c] for i in range(size))


def local_response_norm(input, size, alpha, beta, k):  # noqa: A002
    return input * (k + alpha / size * _lrn_window_sum(input**2, size)) ** -beta


def local_response_norm_backward(grad_output, input, size, alpha, beta, k):  # noqa: A002
    base = k + alpha / size * _lrn_window_sum(input**2, size)
    through_base = grad_output * input * -beta * base ** (-beta - 1)
    # the adjoint of the window sum is the window sum mirrored: swap the two paddings
    c = input.shape[1]
    padded = np.pad(through_base, ((0, 0), ((size - 1) // 2, size // 2), (0, 0), (0, 0)))
    spread = sum(padded[:, i : i + c] for i in range(size))
    return grad_output * base**-beta + spread * alpha / size * 2 * input


def dropout(input, mask, p):  # noqa: A002
    return input * mask / (1 - p)


def dropout_backward(grad_output, input, mask, p):  # noqa: A002
    return grad_output * mask / (1 - p)


def cat(tensors, dim):
    return np.concatenate(tensors, axis=dim)


def cat_backward(grad_output, tensors, dim):
    ends = np.cumsum([t.shape[dim] for t in tensors])[:-1]
    return tuple(np.split(grad_output, ends, axis=dim))
