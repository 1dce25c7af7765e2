"""Exercise 6: a convolution's backward pass: the gradients of its input, weight and bias."""

import numpy as np

from tinynet.exercises.exercise import Exercise, op_check


def conv2d_backward(grad_output, input, weight, bias, stride, padding):  # noqa: A002
    """The gradients of y = conv2d(x, W, b) (exercise conv2d_forward), given dL/dy.

    grad_output dL/dy: (N, O, OH, OW); input x: (N, C, H, W); weight W: (O, C, kh, kw);
    bias b: (O,) or None; stride (sh, sw); padding (ph, pw).

    Returns (grad_input, grad_weight, grad_bias), each the shape of its input; with
    x_padded[n, c, p·sh + i, q·sw + j] the pixel tap (i, j) of output (p, q) reads:

        dL/dW[o, c, i, j]  = Σ_{n, p, q} dL/dy[n, o, p, q] · x_padded[n, c, p·sh + i, q·sw + j]
        dL/dx_padded[n, c, p·sh + i, q·sw + j]  +=  Σ_o dL/dy[n, o, p, q] · W[o, c, i, j]
        dL/dx = dL/dx_padded without its padding
        dL/db[o] = Σ_{n, p, q} dL/dy[n, o, p, q]        (None when bias is None)

    Hint: windows overlap when the stride is smaller than the kernel, so a pixel gets a part of
    its gradient from every window that read it: add (+=), never overwrite (col2im adds). Loop
    over the taps (i, j) as in the forward; each is one strided slice."""
    n, channels, height, width = input.shape
    _, _, kh, kw = weight.shape
    _, _, oh, ow = grad_output.shape
    sh, sw = stride
    ph, pw = padding
    x = np.pad(input, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    grad_x = np.zeros_like(x)
    grad_weight = np.zeros_like(weight)
    for i in range(kh):
        for j in range(kw):
            tap = (slice(None), slice(None), slice(i, i + sh * oh, sh), slice(j, j + sw * ow, sw))
            grad_weight[:, :, i, j] = np.einsum("nohw,nchw->oc", grad_output, x[tap])
            grad_x[tap] += np.einsum("nohw,oc->nchw", grad_output, weight[:, :, i, j])
    grad_input = grad_x[:, :, ph : ph + height, pw : pw + width]
    grad_bias = None if bias is None else grad_output.sum(axis=(0, 2, 3))
    return grad_input, grad_weight, grad_bias


EXERCISE = Exercise.of_function(
    conv2d_backward,
    "The backward of conv2d: grad_input (col2im adds), grad_weight, grad_bias.",
    ("02_conv_im2col.py", "07_write_a_function.py"),
    op_check("conv2d", "backward"),
)
