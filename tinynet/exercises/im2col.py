"""Exercise 4: im2col, the rearrangement that makes a convolution one matrix product."""

import numpy as np

from tinynet.exercises.exercise import Exercise


def im2col(input, kernel_size, stride, padding):  # noqa: A002 - torch's argument names
    """Every window of ``input`` as a column: the matrix ``cols`` that turns a convolution into
    one product, ``W.reshape(O, C·kh·kw) @ cols``.

    input:       (N, C, H, W)
    kernel_size: (kh, kw)
    stride:      (sh, sw)
    padding:     (ph, pw) zeros added above and below, left and right
    The output grid: OH = (H + 2·ph - kh) // sh + 1, OW = (W + 2·pw - kw) // sw + 1.

    Returns cols of shape (C·kh·kw, N·OH·OW), tinynet's layout (tinynet/kernels/im2col.py):

        cols[(c·kh + i)·kw + j, (n·OH + p)·OW + q] = x[n, c, p·sh + i - ph, q·sw + j - pw]

    and 0 where that index falls in the padding. Row (c, i, j) is kernel tap (i, j) of channel
    c; column (n, p, q) is output pixel (p, q) of image n.

    Hint: loop over the kh·kw taps, not over the pixels: for one tap (i, j), the pixels it
    reads in every window are one strided slice of the padded input,
    x_padded[:, :, i : i + sh·OH : sh, j : j + sw·OW : sw]."""
    n, channels, height, width = input.shape
    kh, kw = kernel_size
    sh, sw = stride
    ph, pw = padding
    oh, ow = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    x = np.pad(input, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((channels, kh, kw, n, oh, ow), dtype=input.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = x[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]  # (N, C, OH, OW)
            cols[:, i, j] = tap.transpose(1, 0, 2, 3)
    return cols.reshape(channels * kh * kw, n * oh * ow)


# (N, C, H, W, kernel, stride, padding), grouped by what each group adds; a failure's hint is its
# group's, the first group that fails is the smallest thing wrong.
CASES = (
    (
        "a 1x1 kernel",
        "each column is one pixel's channels: rows c, columns (n, p, q)",
        [(1, 1, 3, 3, (1, 1), (1, 1), (0, 0)), (2, 3, 2, 4, (1, 1), (1, 1), (0, 0))],
    ),
    (
        "square kernels, stride 1, no padding",
        "row (c·kh + i)·kw + j holds tap (i, j) of channel c: channel slowest, then i, then j; "
        "column (n·OH + p)·OW + q: image slowest",
        [(1, 1, 4, 4, (2, 2), (1, 1), (0, 0)), (2, 3, 5, 4, (3, 3), (1, 1), (0, 0))],
    ),
    (
        "rectangular kernels",
        "kh runs down the rows (H), kw across (W): OH uses kh, OW uses kw",
        [(1, 2, 5, 6, (2, 3), (1, 1), (0, 0)), (2, 1, 4, 7, (3, 1), (1, 1), (0, 0))],
    ),
    (
        "padding",
        "pad ph rows with zeros above and below and pw columns left and right; the "
        "window at p starts at row p·sh - ph",
        [
            (1, 1, 3, 3, (3, 3), (1, 1), (1, 1)),
            (2, 2, 4, 5, (3, 2), (1, 1), (2, 1)),
            (1, 1, 2, 3, (1, 1), (1, 1), (1, 0)),
        ],
    ),
    (
        "strides",
        "with stride s, window p starts at row p·s: OH = (H + 2·ph - kh) // sh + 1",
        [
            (1, 1, 5, 5, (2, 2), (2, 2), (0, 0)),
            (2, 2, 7, 6, (3, 2), (2, 3), (1, 0)),
            (1, 2, 7, 7, (2, 2), (3, 3), (0, 0)),
            (2, 1, 6, 8, (1, 2), (3, 2), (0, 1)),
        ],
    ),
    (
        "everything at once",
        "each feature works alone; see which combination fails",
        [(3, 2, 9, 7, (3, 2), (2, 1), (1, 1)), (2, 3, 8, 8, (5, 3), (3, 2), (2, 1))],
    ),
)


def _expected(x, kernel, stride, padding, out_size):
    """tinynet's own im2col (its input is channel-major: (C, N, H, W))."""
    from tinynet.kernels.im2col import im2col as kernel_im2col

    channels, n = x.shape[1], x.shape[0]
    cols = np.empty((channels * kernel[0] * kernel[1], n * out_size[0] * out_size[1]))
    return kernel_im2col(np.ascontiguousarray(x.transpose(1, 0, 2, 3)), kernel, stride, padding,
                         out_size, cols)  # fmt: skip


def check(answer, max_examples=None, seed=0):
    """Every case of CASES, values drawn from ``seed``, against tinynet's kernel (max_examples:
    the cases are fixed, not drawn)."""
    rng = np.random.default_rng(seed)
    for group, hint, cases in CASES:
        for n, c, h, w, kernel, stride, padding in cases:
            x = rng.uniform(-2, 2, (n, c, h, w))
            oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
            ow = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
            call = (f"im2col(input of shape {(n, c, h, w)}, kernel_size={kernel}, "
                    f"stride={stride}, padding={padding})")  # fmt: skip
            try:
                got = np.asarray(answer(x.copy(), kernel, stride, padding))
            except NotImplementedError:
                raise
            except Exception as error:
                raise AssertionError(f"{call} ({group}) raised {type(error).__name__}: {error}\n"
                                     f"hint: {hint}") from error  # fmt: skip
            want = _expected(x, kernel, stride, padding, (oh, ow))
            if got.shape != want.shape:
                raise AssertionError(
                    f"{call} ({group}): cols of shape {got.shape}, expected {want.shape} = "
                    f"(C·kh·kw, N·OH·OW) with OH = {oh}, OW = {ow}\nhint: {hint}"
                )
            wrong = ~np.isclose(got, want, rtol=0, atol=1e-12)
            if wrong.any():
                row, col = np.argwhere(wrong)[0]
                reordered = np.allclose(np.sort(got, None), np.sort(want, None))
                order = " (the right values in another order)" if reordered else ""
                raise AssertionError(
                    f"{call} ({group}): {wrong.sum()} of {want.size} entries wrong{order}; "
                    f"the first at cols[{row}, {col}]: {got[row, col]!r}, expected "
                    f"{want[row, col]!r}\nhint: {hint}"
                )


EXERCISE = Exercise.of_function(
    im2col,
    "Every window of an image as a column, in tinynet's (C·kh·kw, N·OH·OW) layout.",
    ("02_conv_im2col.py",),
    check,
)
