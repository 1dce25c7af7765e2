"""The public, stateless ops, with PyTorch's names and argument names.

Each name is defined in ``tinynet.ops.<family>`` next to the Function that holds its forward
and backward; this module only gathers them (``import tinynet.functional as F``).

The fused ops (a hand-written backward or a numba kernel) each have a twin in
``tinynet.reference`` composed of the primitives; inside ``tinynet.use_reference()`` the public
op calls that twin instead, so every module and model runs on the composed ops.
"""

# ruff: noqa: F401 - every import here is a re-export
import functools

from tinynet import reference
from tinynet.ops import conv, elementwise, linalg, loss, norm, pool, shape
from tinynet.ops import dropout as dropout_ops
from tinynet.ops.elementwise import add, cast, div, exp, log, mul, neg, pow, sub, where
from tinynet.ops.linalg import matmul
from tinynet.ops.reduce import max, mean, sum
from tinynet.ops.shape import flatten, index, pad, permute, reshape, stack, transpose


def _fused_or_reference(fused, twin):
    """The public op: ``fused``, or ``twin`` when ``reference.is_reference_enabled()``."""

    @functools.wraps(fused)
    def op(*args, **kwargs):
        if reference.is_reference_enabled():
            return twin(*args, **kwargs)
        return fused(*args, **kwargs)

    return op


conv2d = _fused_or_reference(conv.conv2d, reference.conv2d)
max_pool2d = _fused_or_reference(pool.max_pool2d, reference.max_pool2d)
avg_pool2d = _fused_or_reference(pool.avg_pool2d, reference.avg_pool2d)
adaptive_avg_pool2d = _fused_or_reference(pool.adaptive_avg_pool2d, reference.adaptive_avg_pool2d)
batch_norm = _fused_or_reference(norm.batch_norm, reference.batch_norm)
local_response_norm = _fused_or_reference(norm.local_response_norm, reference.local_response_norm)
linear = _fused_or_reference(linalg.linear, reference.linear)
relu = _fused_or_reference(elementwise.relu, reference.relu)
softmax = _fused_or_reference(loss.softmax, reference.softmax)
log_softmax = _fused_or_reference(loss.log_softmax, reference.log_softmax)
cross_entropy = _fused_or_reference(loss.cross_entropy, reference.cross_entropy)
dropout = _fused_or_reference(dropout_ops.dropout, reference.dropout)
cat = _fused_or_reference(shape.cat, reference.cat)
concat = cat
