"""Normalisation across channels: local response normalisation (GoogLeNet's stem) and batch
normalisation (Inception-BN).

Both work on the activations as a (C, m) matrix of channel rows, m = N·H·W values per channel:
for channel-major 4-D tensors that matrix is a view (``tinynet.ops.layout.channel_rows``), so
each channel's reductions run over contiguous memory. 4-D outputs are channel-major.
"""

from __future__ import annotations

import numbers

import numpy as np

from tinynet.function import Function
from tinynet.kernels import KERNEL_DTYPES
from tinynet.kernels.batchnorm import batch_norm_apply, batch_norm_backward, batch_statistics
from tinynet.kernels.lrn import lrn_backward, lrn_forward
from tinynet.ops._args import check_float, check_ndim
from tinynet.ops.layout import channel_rows, from_channel_rows
from tinynet.tensor import Tensor, as_array, as_tensor


class LocalResponseNormFunction(Function):
    """Local response normalisation across channels, as ``torch.nn.functional.local_response_norm``.

    For x (N, C, H, W), at every pixel, with n = ``size`` and channel c's window
    W(c) = [c - n//2, c + (n-1)//2] (channels outside [0, C) count as 0, the divisor stays n):

        S_c = k + α/n · Σ_{c' in W(c)} x_{c'}²,        y_c = x_c S_c^{-β}

    Backward. y_c depends on x_j directly when c = j, and through S_c whenever j is in W(c),
    with ∂S_c/∂x_j = (2α/n) x_j. So
        ∂y_c/∂x_j = δ_cj S_c^{-β} - β x_c S_c^{-β-1} (2α/n) x_j [j in W(c)],   and

        dL/dx_j = Σ_c g_c ∂y_c/∂x_j
                = g_j S_j^{-β} - (2αβ/n) x_j Σ_{c : j in W(c)} g_c x_c S_c^{-β-1}

    where j in W(c) exactly when c is in [j - (n-1)//2, j + n//2]: the window, mirrored.
    The loops are numba kernels (``tinynet.kernels.lrn``) over the (C, N·H·W) channel rows.
    Reference twin: ``tinynet.reference.local_response_norm``.
    """

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        n, _, h, w = x.shape
        rows = channel_rows(x)
        scalars = tuple(x.dtype.type(v) for v in (alpha / size, beta, k))
        # y_c = x_c S_c^-β,  S_c = k + α/n Σ_{c' in W(c)} x_c'²
        y, s_pow = lrn_forward(rows, size, *scalars)
        ctx.save_for_backward(rows, s_pow)
        ctx.size, ctx.scalars = size, scalars
        return from_channel_rows(y, n, h, w)

    @staticmethod
    def backward(ctx, grad):
        rows, s_pow = ctx.saved_tensors
        n, _, h, w = grad.shape
        # dL/dx_j = g_j S_j^-β - (2αβ/n) x_j Σ_{c : j in W(c)} g_c x_c S_c^{-β-1}
        dx = lrn_backward(rows, channel_rows(grad), s_pow, ctx.size, *ctx.scalars)
        return from_channel_rows(dx, n, h, w)


class BatchNormFunction(Function):
    """Batch normalisation per channel, as ``torch.nn.functional.batch_norm``.

    For x (N, C) or (N, C, H, W), each channel's m = N·H·W values x_i are normalised with a mean
    μ and a variance v, then scaled by γ (``weight``) and shifted by β (``bias``):

        σ = sqrt(v + eps),     x̂_i = (x_i - μ) / σ,     y_i = γ x̂_i + β

    Training: μ and v are the batch's mean and biased variance Σ (x_i - μ)² / m, and the running
    statistics, if given, are updated in place with the unbiased variance:
        running_mean = (1 - momentum) running_mean + momentum μ
        running_var  = (1 - momentum) running_var  + momentum Σ (x_i - μ)² / (m - 1)
    Evaluation: μ and v are running_mean and running_var, constants.

    The output is computed as x·a + b per channel, a = γ/σ and b = β - μ a, as PyTorch does.

    Backward, with g = dL/dy:   dL/dγ = Σ_i g_i x̂_i,   dL/dβ = Σ_i g_i, and
      evaluation: dL/dx_i = (γ/σ) g_i;
      training:   μ and σ depend on every x_i too: ∂μ/∂x_j = 1/m and ∂σ/∂x_j = x̂_j / m, so
                  ∂x̂_i/∂x_j = (δ_ij - 1/m - x̂_i x̂_j / m) / σ, and with dL/dx̂_i = γ g_i
                  dL/dx_j = Σ_i γ g_i ∂x̂_i/∂x_j = (γ/σ) (g_j - mean(g) - x̂_j mean(g x̂)),
                  the means taken over the channel's m values.

    Everything runs on the (C, m) channel rows. μ and v, rounded as NumPy's ``mean`` and ``var``
    along the rows, x·a + b and the whole backward (the two sums and dL/dx, each channel's row
    read again while it is still in cache) are numba kernels parallel over channels
    (``tinynet.kernels.batchnorm``). float32 and float64 run as such (the backward's sums in
    float64); other float dtypes run in float64.
    Reference twin: ``tinynet.reference.batch_norm``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        rows = batch_norm_rows(x)  # (C, m)
        if training:
            # μ and v rounded exactly as NumPy's mean and var: the float32 GoogLeNet test then
            # breaks a max-pool near-tie (values 3e-8 apart) as PyTorch's float32 does; a
            # float64-accumulating kernel rounds differently and flips it.
            mean, var = np.empty(len(rows), rows.dtype), np.empty(len(rows), rows.dtype)
            batch_statistics(rows, mean, var)
            update_running_statistics(running_mean, running_var, mean, var, rows.shape[1], momentum)
        else:
            mean, var = running_mean.astype(rows.dtype), running_var.astype(rows.dtype)
        # y = γ x̂ + β = x·a + b, a = γ/σ, b = β - μ a
        y, invstd, scale = normalize_rows(rows, mean, var, weight, bias, eps)
        ctx.save_for_backward(rows, mean, invstd, scale)
        ctx.shape, ctx.dtype, ctx.training = x.shape, x.dtype, training
        return batch_norm_output(y, x.shape, x.dtype)

    @staticmethod
    def backward(ctx, grad):
        rows, mean, invstd, scale = ctx.saved_tensors
        g = batch_norm_rows(grad, rows.dtype)
        # dL/dβ = Σ g,  dL/dγ = Σ g x̂,  dL/dx = a (g - mean(g) - x̂ mean(g x̂)) (training)
        sum_g, sum_g_x_hat = np.empty_like(mean), np.empty_like(mean)
        dx = np.empty_like(rows) if ctx.needs_input_grad[0] else np.empty((0, 0), rows.dtype)
        batch_norm_backward(rows, g, mean, invstd, scale, ctx.training, dx, sum_g, sum_g_x_hat)
        return batch_norm_grads(ctx, dx, sum_g, sum_g_x_hat)


# The steps of BatchNorm that do not depend on where μ and v come from: public, so that an op
# that computes them otherwise (synchronised BatchNorm) runs the same steps on the same kernels.


def batch_norm_rows(a: np.ndarray, dtype=None) -> np.ndarray:
    """(N, C) or (N, C, H, W) ``a`` as the C-contiguous (C, m) matrix of channel rows (a view
    where possible) in ``dtype``; by default a's own if the kernels take it (float32, float64),
    else float64."""
    if dtype is None:
        dtype = a.dtype if a.dtype in KERNEL_DTYPES else np.dtype(np.float64)
    rows = np.ascontiguousarray(a.T) if a.ndim == 2 else channel_rows(a)
    return rows.astype(dtype, copy=False)


def batch_norm_output(rows: np.ndarray, shape: tuple[int, ...], dtype) -> np.ndarray:
    """The inverse of ``batch_norm_rows``: (C, m) ``rows`` as an array of ``shape`` and
    ``dtype``."""
    rows = rows.astype(dtype, copy=False)
    if len(shape) == 2:
        return rows.T
    n, _, h, w = shape
    return from_channel_rows(rows, n, h, w)


def update_running_statistics(running_mean, running_var, mean, var, m, momentum) -> None:
    """Move the running statistics (None: nothing to do) towards the batch's mean μ and the
    unbiased variance v · m / (m - 1) by ``momentum``, in place."""
    if running_mean is not None:
        running_mean[...] = momentum * mean + (1 - momentum) * running_mean
        running_var[...] = momentum * var * (m / (m - 1)) + (1 - momentum) * running_var


def normalize_rows(rows, mean, var, weight, bias, eps):
    """y = γ (x - μ) / σ + β on the (C, m) ``rows``, computed as x·a + b: returns (y, 1/σ, a)."""
    invstd = 1 / np.sqrt(var + eps)  # 1/σ
    scale = (invstd if weight is None else invstd * weight).astype(rows.dtype, copy=False)
    shift = -mean * scale if bias is None else (bias - mean * scale).astype(rows.dtype, copy=False)
    y = np.empty_like(rows)
    batch_norm_apply(rows, scale, shift, y)
    return y, invstd, scale


def batch_norm_grads(ctx, dx, sum_g, sum_g_x_hat):
    """(dL/dx, dL/dγ, dL/dβ) in the input's dtype, from the (C, m) ``dx`` and the sums Σ g x̂ and
    Σ g; None for each input that needs no gradient."""
    wants_x, wants_weight, wants_bias = ctx.needs_input_grad[:3]
    grad_x = batch_norm_output(dx, ctx.shape, ctx.dtype) if wants_x else None
    grad_weight = sum_g_x_hat.astype(ctx.dtype, copy=False) if wants_weight else None
    grad_bias = sum_g.astype(ctx.dtype, copy=False) if wants_bias else None
    return grad_x, grad_weight, grad_bias


def local_response_norm(
    input, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> Tensor:
    """Normalise each value by the energy of its ``size`` neighbouring channels, as
    ``torch.nn.functional.local_response_norm`` (GoogLeNet's stem: size 5, alpha 1e-4,
    beta 0.75, k 1). ``input`` must be 4-D (N, C, H, W); the math is in
    ``LocalResponseNormFunction``.
    """
    x = as_tensor(input)
    check_float(x.dtype, "input", "local_response_norm")
    check_ndim(
        x.shape,
        (4,),
        "input",
        "local_response_norm",
        "(N, C, H, W) (tinynet's LRN is for 2-D feature maps)",
    )
    if not isinstance(size, numbers.Integral):
        raise TypeError(f"local_response_norm: size must be an int; got {size!r}")
    if size < 1:
        raise ValueError(f"local_response_norm: size must be >= 1 channel; got {size}")
    return LocalResponseNormFunction.apply(
        x, size=int(size), alpha=float(alpha), beta=float(beta), k=float(k)
    )


def batch_norm(
    input,
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation of (N, C) or (N, C, H, W) ``input`` per channel, as
    ``torch.nn.functional.batch_norm``; the math is in ``BatchNormFunction``.

    running_mean, running_var: (C,) ndarrays or Tensors. training=True normalises with the
        batch statistics and updates these in place (both may be None: then nothing is
        updated); training=False normalises with them.
    weight, bias: (C,) scale γ and shift β, or None (γ = 1, β = 0).
    momentum: the weight of the batch statistic in the running update, in [0, 1].
    eps: > 0, added to the variance (torchvision's GoogLeNet uses 0.001).
    """
    x = as_tensor(input)
    check_batch_norm_args(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return BatchNormFunction.apply(
        x,
        weight,
        bias,
        running_mean=as_array(running_mean),
        running_var=as_array(running_var),
        training=bool(training),
        momentum=float(momentum),
        eps=float(eps),
    )


def check_batch_norm_args(x, running_mean, running_var, weight, bias, training, momentum, eps):
    """Raise the first problem with ``batch_norm``'s arguments, naming it."""
    op = "batch_norm"
    check_float(x.dtype, "input", op)
    check_ndim(x.shape, (2, 4), "input", op, "(N, C) or (N, C, H, W)")
    channels = x.shape[1]
    per_channel = {
        "running_mean": running_mean,
        "running_var": running_var,
        "weight": weight,
        "bias": bias,
    }
    for name, value in per_channel.items():
        shape = getattr(value, "shape", None)
        if value is not None and shape != (channels,):
            raise ValueError(
                f"{op}: {name} must have shape (C,) = ({channels},) for input of shape "
                f"{x.shape}; got {shape if shape is not None else type(value).__name__}"
            )
    if (running_mean is None) != (running_var is None):
        missing = "running_mean" if running_mean is None else "running_var"
        raise ValueError(
            f"{op}: running_mean and running_var must both be given or both be None; got "
            f"{missing}=None and the other given"
        )
    if not training and running_mean is None:
        raise ValueError(
            f"{op}: running_mean and running_var are required when training=False "
            f"(evaluation normalises with them); got None"
        )
    if not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"{op}: momentum must be in [0, 1]; got {momentum!r}")
    if not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"{op}: eps must be > 0; got {eps!r}")
    if training and x.shape[0] * int(np.prod(x.shape[2:])) == 1:
        raise ValueError(
            f"{op}: Expected more than 1 value per channel when training, got input size {x.shape}"
        )
