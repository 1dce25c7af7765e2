"""A convolution GEMM's epilogue: the bias add and the ReLU in one pass over its output block.

Eagerly a convolution writes Y = W · cols, then ``add_bias`` reads and writes Y again, then the
ReLU reads Y and writes a third array: three passes over memory. The inference plan
(``tinynet.inference``) calls ``bias_relu`` on each column block of Y right after the GEMM that
wrote it, while the block is still in cache, so the two elementwise steps cost one pass:

    rows[o, p] = max(rows[o, p] + bias[o], 0)       (ReLU's rule: NaN and -0.0 pass through)

The kernel works on a block of columns of a C-contiguous (O, P) matrix. Each rule is the eager one applied to the same values in the same order, so the
result is bitwise that of ``add_bias`` followed by ``relu``.
"""

from __future__ import annotations

from numba import prange

from tinynet.kernels import parallel


@parallel
def bias_relu(rows, start, stop, bias, with_bias, with_relu):
    """In place, on columns [start, stop) of the C-contiguous (O, P) matrix rows:
    rows[o, p] += bias[o] if with_bias, then max(., 0) if with_relu. bias (O,) (any array when
    with_bias is False). The whole matrix is passed, not a strided block of it, so numba sees
    contiguous rows and vectorises the loops. Returns rows."""
    for o in prange(rows.shape[0]):
        row = rows[o]
        if with_bias:
            b = bias[o]
            if with_relu:
                for p in range(start, stop):
                    value = row[p] + b
                    row[p] = 0 if value < 0 else value
            else:
                for p in range(start, stop):
                    row[p] += b
        elif with_relu:
            for p in range(start, stop):
                if row[p] < 0:
                    row[p] = 0
    return rows
