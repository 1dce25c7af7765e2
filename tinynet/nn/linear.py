"""Linear: a learnable affine map (the op is ``tinynet.functional.linear``)."""

from __future__ import annotations

import numpy as np

from tinynet import functional as F
from tinynet.nn import init
from tinynet.nn.module import Module, Parameter


class Linear(Module):
    """y = x Wᵀ + b, weight (out_features, in_features), bias (out_features,). Initialised as
    PyTorch's: U(±1/sqrt(in_features)) for both."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype=np.float32,
        generator=None,
    ):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Linear: {name} must be a positive int; got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        init.kaiming_uniform_(self.weight, a=np.sqrt(5.0), generator=generator)
        if bias:
            self.bias = Parameter(np.empty(out_features, dtype=dtype))
            init.default_bias_(self.bias, self.weight.shape, generator)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
