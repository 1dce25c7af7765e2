"""LocalResponseNorm and BatchNorm2d as modules (the ops are in ``tinynet.functional``)."""

from __future__ import annotations

import numpy as np

from tinynet import functional as F
from tinynet.nn.module import Module, Parameter


class LocalResponseNorm(Module):
    """Normalise each activation by the energy of its ``size`` neighbouring channels
    (the paper's stem; see ``tinynet.functional.local_response_norm``)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) for each of ``num_features`` channels.

    State, with PyTorch's names: ``weight`` (γ) and ``bias`` (β) if affine; buffers
    ``running_mean``, ``running_var`` and ``num_batches_tracked`` if track_running_stats.
    momentum=None uses the cumulative average 1/num_batches_tracked, as PyTorch.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype=np.float32,
    ):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))

    def forward(self, x):
        return F.batch_norm(x, **self._batch_norm_arguments(x))

    def _batch_norm_arguments(self, x) -> dict:
        """The arguments of ``F.batch_norm`` but the input for this call on ``x``; counts the
        batch in ``num_batches_tracked`` when training with running statistics."""
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d: input must be 4-D (N, C, H, W); got shape {x.shape}")
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return dict(
            running_mean=self.running_mean if self.track_running_stats else None,
            running_var=self.running_var if self.track_running_stats else None,
            weight=self.weight,
            bias=self.bias,
            training=self.training or not self.track_running_stats,  # batch statistics
            momentum=0.0 if momentum is None else momentum,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )
