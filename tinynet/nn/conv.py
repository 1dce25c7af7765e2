"""Conv2d: a learnable 2-D convolution (the op is ``tinynet.functional.conv2d``)."""

from __future__ import annotations

import numpy as np

from tinynet import functional as F
from tinynet.nn import init
from tinynet.nn.module import Module, Parameter
from tinynet.ops._args import pair


class Conv2d(Module):
    """y = conv2d(x, weight, bias), weight (out_channels, in_channels, kh, kw), bias
    (out_channels,). Initialised as PyTorch's: kaiming_uniform_(a=√5) weights, so
    U(±1/sqrt(fan_in)), and the same bound for the bias."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        bias: bool = True,
        dtype=np.float32,
        generator=None,
    ):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size", "Conv2d", minimum=1)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Conv2d: {name} must be a positive int; got {value!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.weight = Parameter(np.empty((out_channels, in_channels, kh, kw), dtype=dtype))
        init.kaiming_uniform_(self.weight, a=np.sqrt(5.0), generator=generator)
        if bias:
            self.bias = Parameter(np.empty(out_channels, dtype=dtype))
            init.default_bias_(self.bias, self.weight.shape, generator)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        bias = "" if self.bias is not None else ", bias=False"
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}{bias}"
        )
