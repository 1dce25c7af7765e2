"""Every fused op of ``tinynet.functional`` composed from primitive differentiable ops.

The fast ops (``tinynet.ops``) write their backward by hand and run numba kernels. Each function
here has the same name and arguments, and is built only from primitives whose gradients the
engine already knows (pad, slicing, stack, reshape, matmul, add, mul, div, pow, exp, log, sum,
mean, max, where), so autograd derives its backward: this module is the readable definition of
each op, and the oracle that ``tests/test_reference.py`` proves the fast op equal to, forward and
every gradient, in float64.

    with tinynet.use_reference():
        loss = F.cross_entropy(model(x), labels)   # every fused op runs its twin below

Masks (which tap wins a max pool, which units dropout keeps) are constants computed from the
values, as a textbook writes ``[x > 0]``; they carry no gradient. Arguments are read with the
fast ops' own helpers, so they mean the same on both paths.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from tinynet.ops._args import normalize_dim, pair
from tinynet.ops.conv import conv_padding
from tinynet.ops.elementwise import exp, log, where
from tinynet.ops.linalg import matmul
from tinynet.ops.pool import sliding_window_tables
from tinynet.ops.reduce import max, mean, sum  # noqa: A004 - PyTorch's names
from tinynet.ops.shape import pad, reshape, stack, transpose
from tinynet.rng import default_generator
from tinynet.tensor import Tensor, as_array, as_tensor

# The primitives: the ops (by their Function's name less "Function") that every twin here is
# composed of, each with a backward written once in ``tinynet.ops``; slicing is Index, transpose
# is Permute, and Tensor's arithmetic operators are Add, Sub, Mul, Div, Neg and Pow.
PRIMITIVES = (
    "Pad", "Index", "Stack", "Reshape", "Permute", "MatMul", "Add", "Sub", "Mul", "Div", "Neg",
    "Pow", "Exp", "Log", "Sum", "Mean", "Max", "Where", "Cast",
)  # fmt: skip

_state = threading.local()


def is_reference_enabled() -> bool:
    """True inside ``use_reference()``: the fused ops of ``tinynet.functional`` run the twins
    defined here."""
    return getattr(_state, "enabled", False)


@contextlib.contextmanager
def use_reference(enabled: bool = True):
    """Within this block (in this thread), every fused op of ``tinynet.functional``, and so every
    module, runs its composed twin from ``tinynet.reference``; the previous setting comes back on
    exit, also after an exception."""
    previous = is_reference_enabled()
    _state.enabled = bool(enabled)
    try:
        yield
    finally:
        _state.enabled = previous


def _window_taps(x, kernel, stride, out_size):
    """x (N, C, H, W), already padded, -> (N, C, kh·kw, OH, OW): tap (i, j) of window (p, q) is
    x[:, :, p·sh + i, q·sw + j]; the taps in scan order (row by row)."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_size
    taps = [
        x[:, :, i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    return stack(taps, dim=2)


def conv2d(input, weight, bias=None, stride=1, padding=0) -> Tensor:  # noqa: A002
    """y[n, o, p, q] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x_pad[n, c, p·sh + i, q·sw + j]

    im2col by slicing: cols[n, (c, i, j), (p, q)] = x_pad[n, c, p·sh + i, q·sw + j], one slice
    of x_pad per kernel tap (i, j); then one matmul, W (O, C·kh·kw) @ cols (N, C·kh·kw, OH·OW).
    """
    x, weight = as_tensor(input), as_tensor(weight)
    out_channels, channels, kh, kw = weight.shape
    stride = pair(stride, "stride", "conv2d", minimum=1)
    (top, bottom), (left, right) = conv_padding(padding, (kh, kw), stride)
    x = pad(x, (left, right, top, bottom))
    n, _, h, w = x.shape
    out_size = (h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1
    if min(out_size) < 1:
        raise ValueError(
            f"conv2d: kernel size ({kh}, {kw}) of weight is larger than the padded input "
            f"{(h, w)}"
        )
    cols = reshape(_window_taps(x, (kh, kw), stride, out_size), (n, channels * kh * kw, -1))
    y = matmul(reshape(weight, (out_channels, -1)), cols)
    y = reshape(y, (n, out_channels) + out_size)
    return y if bias is None else y + reshape(bias, (1, out_channels, 1, 1))


def _pool_taps(x, kernel, stride, padding, out_size, value):
    """The window taps (``_window_taps``) of x padded with ``value``: ``padding`` on every side,
    and on the bottom and right as many more as ceil_mode's last window needs to fit."""
    (ph, pw), (h, w) = padding, x.shape[2:]
    extra_h, extra_w = (
        int(np.maximum((out - 1) * s + k - size - 2 * p, 0))
        for out, s, k, size, p in zip(out_size, stride, kernel, (h, w), padding)
    )
    padded = pad(x, (pw, pw + extra_w, ph, ph + extra_h), value=value)
    return _window_taps(padded, kernel, stride, out_size)


def _first_winner(taps: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """One-hot along axis 2 of the tap that wins each window, as the fused op's scan picks it:
    row by row, a tap replaces the best so far if it is greater or NaN, starting from the first
    tap of the input. So the first of equal maxima wins, or the last NaN; padding never wins."""
    count = taps.shape[2]
    is_nan = np.isnan(taps)
    first_max = np.argmax(inside & (taps == taps.max(axis=2, keepdims=True)), axis=2)
    last_nan = count - 1 - np.argmax(is_nan[:, :, ::-1], axis=2)
    winner = np.where(is_nan.any(axis=2), last_nan, first_max)
    return np.arange(count)[:, None, None] == winner[:, :, None]


def _sliding_pool(op, x, kernel_size, stride, padding, ceil_mode, count_include_pad=True):
    """A sliding pool's (kernel, stride, padding, out_size), its arguments checked as the fused
    op checks them."""
    y_windows, x_windows, kernel, stride = sliding_window_tables(
        op, x, kernel_size, stride, padding, ceil_mode, count_include_pad
    )
    return kernel, stride, pair(padding, "padding", op, 0), (len(y_windows[0]), len(x_windows[0]))


def max_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False) -> Tensor:  # noqa: A002
    """y[n, c, p, q] = max over the window taps (i, j) of x_pad[n, c, p·sh + i, q·sw + j], x
    padded with -inf. The gradient goes to the one winning tap of each window (see
    ``_first_winner``), and adds up where windows overlap."""
    x = as_tensor(input)
    window = _sliding_pool("max_pool2d", x, kernel_size, stride, padding, ceil_mode)
    taps = _pool_taps(x, *window, value=-np.inf)
    inside = _pool_taps(np.ones((1, 1) + x.shape[2:], x.dtype), *window, value=0).data > 0
    return sum(where(_first_winner(taps.data, inside), taps, 0), dim=2)


def avg_pool2d(
    input,  # noqa: A002
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
) -> Tensor:
    """y[n, c, p, q] = Σ_{i, j} x_pad[n, c, p·sh + i, q·sw + j] / d_pq, x padded with zeros.

    The divisor d_pq is the same window sum over a mask that is 1 on the input, 1 on the padding
    if count_include_pad (else 0), and 0 where ceil_mode's last window overhangs the padding.
    """
    x = as_tensor(input)
    window = _sliding_pool(
        "avg_pool2d", x, kernel_size, stride, padding, ceil_mode, count_include_pad
    )
    (ph, pw), mask = window[2], np.ones((1, 1) + x.shape[2:], x.dtype)
    mask = np.pad(mask, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=count_include_pad)
    divisor = sum(_pool_taps(mask, window[0], window[1], (0, 0), window[3], value=0), dim=2)
    return sum(_pool_taps(x, *window, value=0), dim=2) / divisor


def adaptive_avg_pool2d(input, output_size) -> Tensor:  # noqa: A002
    """y[n, c, i, j] = mean of x[n, c] over rows [floor(i·H/OH), ceil((i+1)·H/OH)) and columns
    [floor(j·W/OW), ceil((j+1)·W/OW)): OH·OW window slices, each averaged."""
    x = as_tensor(input)
    n, c, h, w = x.shape
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(s if o is None else o for o, s in zip(output_size, (h, w)))
    oh, ow = pair(output_size, "output_size", "adaptive_avg_pool2d", minimum=1)
    rows = [(i * h // oh, -(-(i + 1) * h // oh)) for i in range(oh)]
    cols = [(j * w // ow, -(-(j + 1) * w // ow)) for j in range(ow)]
    cells = [mean(x[:, :, r0:r1, c0:c1], dim=(2, 3)) for r0, r1 in rows for c0, c1 in cols]
    return reshape(stack(cells, dim=2), (n, c, oh, ow))


def _per_channel(v, ndim: int) -> Tensor:
    """A (C,) vector shaped (1, C, 1, ...) to broadcast over the other axes of an ndim input."""
    return reshape(as_tensor(v), (1, -1) + (1,) * (ndim - 2))


def batch_norm(
    input,  # noqa: A002
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """y = γ (x - μ) / sqrt(v + eps) + β per channel, over the m = N·H·W values of each channel.

    Training: μ = Σ x / m and v = Σ (x - μ)² / m of the batch, differentiated through (so the
    gradient of every x flows through μ and v too), and the running statistics, if given, are
    updated in place: running = (1 - momentum) running + momentum batch, with the unbiased
    variance v · m / (m - 1). Evaluation: μ and v are the running statistics, constants.
    """
    x = as_tensor(input)
    axes = (0,) + tuple(range(2, x.ndim))
    if training:
        mu = mean(x, axes, keepdim=True)
        var = mean((x - mu) * (x - mu), axes, keepdim=True)
        if running_mean is not None:
            m = x.size // x.shape[1]
            unbiased = var.data * (m / (m - 1))
            for running, batch in ((running_mean, mu.data), (running_var, unbiased)):
                running = as_array(running)
                running[...] = momentum * batch.reshape(-1) + (1 - momentum) * running
    else:
        mu, var = _per_channel(running_mean, x.ndim), _per_channel(running_var, x.ndim)
    y = (x - mu) / (var + eps) ** 0.5
    if weight is not None:
        y = y * _per_channel(weight, x.ndim)
    return y if bias is None else y + _per_channel(bias, x.ndim)


def local_response_norm(input, size: int, alpha=1e-4, beta=0.75, k=1.0) -> Tensor:  # noqa: A002
    """y_c = x_c · (k + α/n · Σ_{c' = c - n//2}^{c + (n-1)//2} x_{c'}²)^-β, n = size, channels
    outside [0, C) counting 0: the window sum as n slices of x² zero-padded along channels."""
    x = as_tensor(input)
    channels = x.shape[1]
    squares = pad(x * x, (0, 0, 0, 0, size // 2, (size - 1) // 2))
    window = sum(stack([squares[:, i : i + channels] for i in range(size)], dim=0), dim=0)
    return x * (k + alpha / size * window) ** -beta


def linear(x, weight, bias=None) -> Tensor:
    """y = x Wᵀ + b."""
    y = matmul(x, transpose(weight, 0, 1))
    return y if bias is None else y + bias


def relu(x) -> Tensor:
    """y = x where x > 0, else 0;  dy/dx = [x > 0]. A NaN stays NaN (as in np.maximum(x, 0)),
    through the constant branch, so it gets no gradient, as in the fused op."""
    x = as_tensor(x)
    return where(x.data > 0, x, np.where(np.isnan(x.data), x.data, 0))


def log_softmax(x, dim: int) -> Tensor:
    """log softmax(x)_i = (x_i - m) - log Σ_j e^{x_j - m} along ``dim``, m = max_j x_j taken as
    a constant: softmax does not change when every x_j moves by m, which keeps e^… finite."""
    x = as_tensor(x)
    dim = normalize_dim(dim, x.ndim, "log_softmax")
    shifted = x - max(x.detach(), dim, keepdim=True)
    return shifted - log(sum(exp(shifted), dim, keepdim=True))


def softmax(x, dim: int) -> Tensor:
    """softmax(x)_i = e^{x_i - m} / Σ_j e^{x_j - m} along ``dim`` (m as in ``log_softmax``)."""
    x = as_tensor(x)
    dim = normalize_dim(dim, x.ndim, "softmax")
    e = exp(x - max(x.detach(), dim, keepdim=True))
    return e / sum(e, dim, keepdim=True)


def cross_entropy(input, target, reduction="mean", label_smoothing=0.0) -> Tensor:  # noqa: A002
    """ℓ_n = -Σ_c q_nc log softmax(x_n)_c with q_n = (1 - ε) onehot(t_n) + ε / C, for logits
    x (N, C) and classes t (N,); then the mean over n ('mean'), the sum ('sum') or ℓ ('none')."""
    x = as_tensor(input)
    labels = np.asarray(as_array(target))
    n, classes = x.shape
    in_range = labels.dtype.kind in "iu" and np.all((labels >= 0) & (labels < classes))
    if labels.shape != (n,) or not in_range or reduction not in ("mean", "sum", "none"):
        raise ValueError(
            f"cross_entropy: needs target of {n} class indices in [0, {classes}) and reduction "
            f"'mean', 'sum' or 'none'; got target {labels!r} and reduction {reduction!r}"
        )
    eps = label_smoothing
    q = ((1 - eps) * (np.arange(classes) == labels[:, None]) + eps / classes).astype(x.dtype)
    losses = -sum(q * log_softmax(x, 1), 1)
    if reduction == "none":
        return losses
    return mean(losses) if reduction == "mean" else sum(losses)


def dropout(x, p: float = 0.5, training: bool = True, generator=None) -> Tensor:
    """y = x · m / (1 - p) with m_i = [u_i >= p], u_i ~ U[0, 1) drawn in float32 from
    ``generator`` (default tinynet's): the fused op's draw, so one generator state gives one
    mask on both paths. The identity when not training or p = 0."""
    x = as_tensor(x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be a probability in [0, 1]; got {p!r}")
    if not training or p == 0:
        return x
    keep = (generator or default_generator()).random(x.shape, dtype=np.float32) >= p
    return x * keep * np.asarray(1.0 / (1.0 - p) if p < 1 else 0.0, dtype=x.dtype)


def cat(tensors, dim: int = 0) -> Tensor:
    """y = [x_0, x_1, ...] along ``dim``: the sum of the pieces, each zero-padded along ``dim``
    to y's length at its own offset."""
    tensors = [as_tensor(t) for t in tensors]
    axis = normalize_dim(dim, tensors[0].ndim, "cat")
    sizes = [t.shape[axis] for t in tensors]
    offsets, total = np.cumsum([0] + sizes[:-1]), int(np.sum(sizes))
    after = (0, 0) * (tensors[0].ndim - 1 - axis)
    placed = [
        pad(t, after + (int(start), total - int(start) - size))
        for t, start, size in zip(tensors, offsets, sizes)
    ]
    return sum(stack(placed, dim=0), dim=0)


concat = cat
