"""A convolution GEMM's epilogue: the bias add and the ReLU in one pass over its output block.

Eagerly a convolution writes Y = W · cols, then ``add_bias`` reads and writes Y again, then the
ReLU reads Y and writes a third array: three passes over memory. The inference plan
(``tinynet.inference``) calls ``bias_relu`` on each column block of Y right after the GEMM that
wrote it, while the block is still in cache, so the two elementwise steps cost one pass:

    rows[o, p] = max(rows[o, p] + bias[o], 0)       (ReLU's rule: NaN and -0.0 pass through)

``rows`` is a (O, P) block of a C-contiguous matrix (its rows may be strided: a column block of a
wider matrix). Each rule is the eager one applied to the same values in the same order, so the
result is bitwise that of ``add_bias`` followed by ``relu``.
"""

from __future__ import annotations

from numba import prange

from tinynet.kernels import parallel


@parallel
def bias_relu(rows, bias, with_bias, with_relu):
    """In place: rows[o, :] += bias[o] if with_bias, then max(., 0) if with_relu. rows (O, P),
    bias (O,) (any array when with_bias is False). Returns rows."""
    for o in prange(rows.shape[0]):
        row = rows[o]
        if with_bias:
            b = bias[o]
            if with_relu:
                for p in range(row.shape[0]):
                    value = row[p] + b
                    row[p] = 0 if value < 0 else value
            else:
                for p in range(row.shape[0]):
                    row[p] += b
        elif with_relu:
            for p in range(row.shape[0]):
                if row[p] < 0:
                    row[p] = 0
    return rows
