"""Exercise 5: a convolution's forward pass (PyTorch's conv2d: a cross-correlation)."""

import numpy as np

from tinynet.exercises.exercise import Exercise, op_check


def conv2d_forward(input, weight, bias, stride, padding):  # noqa: A002 - torch's argument names
    """y = conv2d(x, W, b), PyTorch's: no kernel flip (a cross-correlation).

    input x:  (N, C, H, W)
    weight W: (O, C, kh, kw)
    bias b:   (O,) or None
    stride:   (sh, sw);  padding: (ph, pw) zeros above and below, left and right

    Returns y of shape (N, O, OH, OW), OH = (H + 2·ph - kh) // sh + 1 (OW likewise):

        y[n, o, p, q] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x_padded[n, c, p·sh + i, q·sw + j]

    Hint: loop over the kh·kw kernel taps, not the pixels: tap (i, j) reads the strided slice
    x_padded[:, :, i : i + sh·OH : sh, j : j + sw·OW : sw] (N, C, OH, OW) and adds
    W[:, :, i, j] (O, C) times it, summed over C (im2col's rows, one tap at a time)."""
    n, channels, height, width = input.shape
    out_channels, _, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    oh, ow = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    x = np.pad(input, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    output = np.zeros((n, out_channels, oh, ow), dtype=np.result_type(input, weight))
    for i in range(kh):
        for j in range(kw):
            tap = x[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]  # (N, C, OH, OW)
            output += np.einsum("nchw,oc->nohw", tap, weight[:, :, i, j])
    if bias is not None:
        output += bias.reshape(1, -1, 1, 1)
    return output


EXERCISE = Exercise.of_function(
    conv2d_forward,
    "A 2-D convolution with stride and padding (PyTorch's cross-correlation).",
    ("02_conv_im2col.py",),
    op_check("conv2d", "forward"),
)
