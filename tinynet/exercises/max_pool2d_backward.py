"""Exercise 7: the backward of max pooling, with PyTorch's rule for ties and ceil_mode."""

import numpy as np

from tinynet.exercises.exercise import Exercise, op_check


def max_pool2d_backward(grad_output, input, kernel_size, stride, padding, ceil_mode):  # noqa: A002
    """dL/dx for y = max_pool2d(x): each window's gradient goes to the pixel that was its max.

    grad_output dL/dy: (N, C, OH, OW); input x: (N, C, H, W); kernel_size (kh, kw);
    stride (sh, sw); padding (ph, pw): -inf around the image (it never wins);
    ceil_mode: OH = ceil((H + 2·ph - kh) / sh) + 1 instead of floor(...) + 1, except that a
    last window starting beyond H + ph (in the bottom padding alone) is dropped; OW likewise.

    Returns grad_input (N, C, H, W):

        dL/dx[n, c, r, s] = Σ dL/dy[n, c, p, q] over the windows (p, q) whose max is x[n, c, r, s]

    Ties (PyTorch's rule): when several pixels of a window hold its maximum, the first one in
    row-major order (lowest row, then lowest column) takes the whole gradient, the others none.

    Hint: np.argmax returns the first maximum of a flattened window, which is that rule. Windows
    overlap when the stride is smaller than the kernel: a pixel adds up the gradients of every
    window it won."""
    n, channels, height, width = input.shape
    _, _, oh, ow = grad_output.shape
    kh, kw = kernel_size
    sh, sw = stride
    ph, pw = padding
    # Pad enough below and right that ceil_mode's last window is whole (filled with -inf).
    below = max(ph, (oh - 1) * sh + kh - height - ph)
    right = max(pw, (ow - 1) * sw + kw - width - pw)
    x = np.pad(input, ((0, 0), (0, 0), (ph, below), (pw, right)), constant_values=-np.inf)
    grad_x = np.zeros_like(x)
    images, chans = np.indices((n, channels))
    for p in range(oh):
        for q in range(ow):
            window = x[:, :, p * sh : p * sh + kh, q * sw : q * sw + kw].reshape(n, channels, -1)
            row, col = np.divmod(window.argmax(axis=2), kw)  # the first maximum's place
            grad_x[images, chans, p * sh + row, q * sw + col] += grad_output[:, :, p, q]
    return grad_x[:, :, ph : ph + height, pw : pw + width]


EXERCISE = Exercise.of_function(
    max_pool2d_backward,
    "The backward of max pooling: ties to the first maximum, ceil_mode, padding.",
    ("03_inception_block.py",),
    op_check("max_pool2d", "backward"),
)
