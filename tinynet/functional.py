"""The public, stateless ops, with PyTorch's names and argument names.

Each name is defined in ``tinynet.ops.<family>`` next to the Function that holds its forward
and backward; this module only gathers them (``import tinynet.functional as F``).
"""

# ruff: noqa: F401 - every import here is a re-export
from tinynet.ops.conv import conv2d
from tinynet.ops.dropout import dropout
from tinynet.ops.elementwise import add, cast, div, exp, log, mul, neg, pow, relu, sub
from tinynet.ops.linalg import linear, matmul
from tinynet.ops.loss import cross_entropy, log_softmax, softmax
from tinynet.ops.norm import batch_norm, local_response_norm
from tinynet.ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from tinynet.ops.reduce import max, mean, sum
from tinynet.ops.shape import cat, concat, flatten, index, permute, reshape, transpose
