"""ReLU as a module, for Sequential stacks."""

from tinynet import functional as F
from tinynet.nn.module import Module


class ReLU(Module):
    """y = max(x, 0)."""

    def forward(self, x):
        return F.relu(x)
