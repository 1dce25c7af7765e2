# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 2: convolution is im2col, then one matrix product
#
# A 2-D convolution slides a kernel $W$ (out channels $O$, in channels $C$, $k_h \times k_w$)
# over an image and takes a dot product at each position:
#
# $$y[n,o,p,q] = b[o] + \sum_{c,i,j} W[o,c,i,j]\; x_{\mathrm{pad}}[n,c,p s + i, q s + j].$$
#
# Copy, for every output position $(n,p,q)$, the window it sees into one column of a matrix:
# $\mathrm{cols}$ has $C k_h k_w$ rows and $N \cdot OH \cdot OW$ columns. Then the whole
# convolution is one matrix product, $Y = W_{\mathrm{rows}} \cdot \mathrm{cols} + b$, where
# $W_{\mathrm{rows}}$ is $W$ reshaped to $O \times C k_h k_w$. That is im2col + GEMM, and it is
# how tinynet (and most CPU frameworks) run a convolution.

# %%
import numpy as np
from lesson_setup import output_folder

import tinynet
from tinynet import functional as F
from tinynet import reference
from tinynet.kernels.im2col import col2im, im2col

OUT = output_folder("lesson2")

rng = np.random.default_rng(0)
N, C, H, W_ = 2, 3, 5, 5
O, KH, KW, STRIDE, PAD = 4, 3, 3, 1, 1
x = rng.normal(size=(N, C, H, W_))
w = rng.normal(size=(O, C, KH, KW))
b = rng.normal(size=O)
OH, OW = (H + 2 * PAD - KH) // STRIDE + 1, (W_ + 2 * PAD - KW) // STRIDE + 1
print(f"x {x.shape}, W {w.shape} -> y ({N}, {O}, {OH}, {OW})")

# %% [markdown]
# ## im2col, written out
#
# Row $(c, i, j)$ of cols holds, for every output position, the pixel that kernel tap $(i, j)$
# of channel $c$ sees. Four nested loops make that plain:

# %%
def im2col_by_loops(x):
    padded = np.pad(x, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    cols = np.empty((C * KH * KW, N * OH * OW))
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                window = padded[:, c, i : i + STRIDE * OH : STRIDE, j : j + STRIDE * OW : STRIDE]
                cols[(c * KH + i) * KW + j] = window.reshape(-1)  # columns in (n, p, q) order
    return cols


cols = im2col_by_loops(x)
print(f"cols: {cols.shape} = (C*kh*kw, N*OH*OW) = ({C}*{KH}*{KW}, {N}*{OH}*{OW})")

# %% [markdown]
# tinynet's own `im2col` (a numba kernel, `tinynet/kernels/im2col.py`) builds the same matrix,
# one thread per row; it takes the input channel-major, $(C, N, H, W)$, so that each row's
# columns are contiguous.

# %%
fast = im2col(np.ascontiguousarray(x.transpose(1, 0, 2, 3)), (KH, KW), (STRIDE, STRIDE),
              (PAD, PAD), (OH, OW), np.empty_like(cols))  # fmt: skip
assert np.array_equal(fast, cols)
print("the loops and tinynet's kernel build the same cols")

# %% [markdown]
# ## Forward: one GEMM
#
# $Y = W_{\mathrm{rows}} \cdot \mathrm{cols} + b$ has shape $O \times N \cdot OH \cdot OW$;
# reshaped and transposed it is $y$ in NCHW. We check it against `tinynet.reference.conv2d`, the
# readable composed definition (sliced windows, one matmul, all primitives with known gradients),
# and against `tinynet.functional.conv2d`, the fused op the networks use.

# %%
w_rows = w.reshape(O, C * KH * KW)
y = (w_rows @ cols + b[:, None]).reshape(O, N, OH, OW).transpose(1, 0, 2, 3)
y_reference = reference.conv2d(x, w, b, stride=STRIDE, padding=PAD).data
y_fused = F.conv2d(x, w, b, stride=STRIDE, padding=PAD).data
print(f"max |GEMM - reference| = {np.abs(y - y_reference).max():.1e}, "
      f"max |GEMM - conv2d| = {np.abs(y - y_fused).max():.1e}")  # fmt: skip
assert np.allclose(y, y_reference, atol=1e-12) and np.allclose(y, y_fused, atol=1e-12)

# %% [markdown]
# ## Backward: two more GEMMs and col2im
#
# Given $\bar Y = \partial L / \partial Y$ (as a matrix $O \times N \cdot OH \cdot OW$), the
# product rule for $Y = W_{\mathrm{rows}} \cdot \mathrm{cols}$ gives
#
# $$\bar W_{\mathrm{rows}} = \bar Y \cdot \mathrm{cols}^\top, \qquad
#   \bar b = \textstyle\sum_{\text{columns}} \bar Y, \qquad
#   \overline{\mathrm{cols}} = W_{\mathrm{rows}}^\top \cdot \bar Y.$$
#
# Each pixel of $x$ was copied into several columns (once per window that covers it), so its
# gradient is the *sum* of those copies' gradients: `col2im`, the adjoint of im2col, adds every
# column entry back to the pixel it came from. Take $L = \sum y \cdot g$ for a fixed random
# $g$, so that $\bar y = g$:

# %%
g = rng.normal(size=(N, O, OH, OW))
dy_rows = g.transpose(1, 0, 2, 3).reshape(O, N * OH * OW)
dw = (dy_rows @ cols.T).reshape(w.shape)
db = dy_rows.sum(axis=1)
dx = col2im(w_rows.T @ dy_rows, (KH, KW), (STRIDE, STRIDE), (PAD, PAD), (OH, OW),
            np.zeros((C, N, H, W_))).transpose(1, 0, 2, 3)  # fmt: skip

tx, tw, tb = (tinynet.tensor(v, requires_grad=True) for v in (x, w, b))
(F.conv2d(tx, tw, tb, stride=STRIDE, padding=PAD) * tinynet.tensor(g)).sum().backward()
for name, mine, autograd in (("dW", dw, tw.grad), ("db", db, tb.grad), ("dx", dx, tx.grad)):
    error = np.abs(mine - autograd).max()
    print(f"{name}: max |by hand - tinynet backward| = {error:.1e}")
    assert error < 1e-12, name

# %% [markdown]
# ## And the backward against finite differences
#
# `tinynet.gradcheck` perturbs every element of every input by $\pm\varepsilon$ (float64) and
# compares the central differences with the analytic vector-Jacobian products. It raises on the
# first disagreement; `tinynet.check_gradients` returns the report. We check a strided case too,
# where the windows skip pixels and some pixels receive no gradient at all.

# %%
for stride in (1, 2):
    conv = lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=PAD)  # noqa: E731
    result = tinynet.check_gradients(conv, [tx, tw, tb], atol=1e-7, rtol=1e-5)
    print(f"stride {stride}:\n{result}")
    assert result.ok
    tinynet.gradcheck(conv, [tx, tw, tb])

# %% [markdown]
# ## The convolution in the explorer
#
# `tinynet.explore` draws the graph of $L = \sum y \cdot g$ in one HTML page: click the conv for
# its output's statistics, histogram and feature maps, and, after stepping the **Backward**, its
# gradient and the rule $\bar x[n,c,i,j] = \sum_{o,k_i,k_j} W[o,c,k_i,k_j]\,\bar y[n,o,p,q]$
# written out with the numbers of one pixel: the sum col2im computes above, one term per window
# that covers the pixel.

# %%
from tinynet.explore import PageView, page_data, write_page  # noqa: E402

tx, tw, tb = (tinynet.tensor(v, requires_grad=True) for v in (x, w, b))
loss = (F.conv2d(tx, tw, tb, stride=STRIDE, padding=PAD) * tinynet.tensor(g)).sum()
page = page_data(loss, names={"x": tx, "W": tw, "b": tb}, title="Lesson 2: conv2d as im2col + GEMM")
conv = next(step["rule"] for step in page["backward"] if "Conv2d" in step["rule"]["lines"][-1])
print("\n".join(conv["lines"]))
assert np.isclose(conv["value"], dx[tuple(conv["element"])])  # the pixel's gradient, by hand
path = write_page(page, OUT / "explorer.html")
print(f"wrote {path}: open {path.resolve().as_uri()} in a browser")
PageView(path)  # in Jupyter, the page itself, here

# %% [markdown]
# **What to take away.** im2col turns convolution into the one operation CPUs are best at, a
# matrix product; its backward is two more products and col2im, which sums the copies im2col
# made. `examples/backward_walkthrough.py` walks the same gradients inside a small network.

# %% [markdown]
# **Practise it.** The exercises below practise this lesson: `tinynet exercises start DIR` writes
# them (one file each, with the math and a hint), `tinynet exercises check DIR` grades them,
# `tinynet exercises solution NAME` shows tinynet's answer.
#
# - `im2col`: every window of an image as a column, in tinynet's (C·kh·kw, N·OH·OW) layout
# - `conv2d_forward`: a 2-D convolution with stride and padding (PyTorch's cross-correlation)
# - `conv2d_backward`: the backward of conv2d: grad_input (col2im adds), grad_weight, grad_bias
