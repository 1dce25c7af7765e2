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
# # Lesson 7: writing a new op as a `Function`
#
# Every op in tinynet is a `tinynet.Function` subclass with two static methods side by side:
# `forward(ctx, *inputs)` computes the output from plain NumPy arrays and leaves on `ctx` what
# the backward will need; `backward(ctx, grad_output)` receives $g = \partial L/\partial y$ and
# returns $\partial L/\partial x$ for each input (the chain rule of lesson 1, one op at a time).
# `Function.apply` wraps the two: it unwraps Tensors, runs `forward`, and links the output to
# its inputs so that `loss.backward()` finds this op's `backward`.
#
# This lesson adds an op tinynet does not have, SiLU (also called swish; the activation of
# EfficientNet), $y = x\,\sigma(x)$ with $\sigma(x) = 1/(1 + e^{-x})$, in four steps: the
# derivative on paper, the `Function`, a finite-difference check, and a composed twin built from
# ops whose gradients tinynet already knows. Then it plants a typical mistake and shows how the
# check points at it. It writes no files.
#
# On paper: $\sigma'(x) = \sigma(x)(1 - \sigma(x))$, so by the product rule
#
# $$\frac{dy}{dx} = \sigma(x) + x\,\sigma(x)(1 - \sigma(x))
#   = \sigma(x)\,\bigl(1 + x(1 - \sigma(x))\bigr),
# \qquad \frac{\partial L}{\partial x} = g \cdot \sigma(x)\,\bigl(1 + x(1 - \sigma(x))\bigr).$$

# %%
import numpy as np

import tinynet
from tinynet import Function
from tinynet.gradcheck import GradcheckError, check_gradients


def sigmoid(x):
    """σ(x) = 1 / (1 + e^-x), written so that e^-x never overflows: for x < 0 it is
    e^x / (1 + e^x)."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


class SiLUFunction(Function):
    """y = x σ(x);  dL/dx = g σ(x) (1 + x (1 - σ(x))).  Composed twin: ``silu_composed``."""

    @staticmethod
    def forward(ctx, x):
        s = sigmoid(x)
        ctx.save_for_backward(x, s)  # the backward needs both; saving σ(x) spares recomputing it
        return x * s

    @staticmethod
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        return grad * s * (1 + x * (1 - s))


def silu(x):
    return SiLUFunction.apply(x)


x = tinynet.tensor(np.linspace(-4, 4, 9), requires_grad=True)
y = silu(x)
print("x      ", np.round(x.data, 3))
print("silu(x)", np.round(y.data, 3))
y.sum().backward()
print("dy/dx  ", np.round(x.grad, 3))

# %% [markdown]
# `silu(x)` is a Tensor like any other: it records its op, so `y.sum().backward()` reached
# `SiLUFunction.backward` with $g = 1$ and `x.grad` holds $dy/dx$ itself. At $x = 0$ it is
# $\sigma(0) = 0.5$, and for large $x$ it tends to 1 (SiLU becomes the identity):

# %%
assert np.isclose(x.grad[4], 0.5)
assert np.isclose(x.grad[-1], sigmoid(4) * (1 + 4 * (1 - sigmoid(4))))

# %% [markdown]
# ## Checking the backward: central differences
#
# `tinynet.gradcheck` perturbs every element of the input by $\pm\varepsilon$, recomputes the
# forward, and compares $(L(x + \varepsilon) - L(x - \varepsilon)) / 2\varepsilon$ with what
# the backward returned, for $L = \sum v \cdot y$ with a random $v$ (so every element of the
# gradient counts). Inputs are float64: in float32 the differences themselves are too coarse.

# %%
rng = np.random.default_rng(0)
x = tinynet.tensor(rng.normal(scale=3, size=(4, 5)), requires_grad=True)
assert tinynet.gradcheck(silu, [x])
print(check_gradients(silu, [x]))

# %% [markdown]
# ## The composed twin
#
# The same function written with ops tinynet already differentiates (negation, `exp`, addition,
# division) needs no backward of its own: autograd chains theirs. It is slower (four ops, four
# arrays) and, for $x \ll 0$, $e^{-x}$ overflows where `sigmoid` above does not; but it is short
# and obviously right, so it is the oracle the fused op is tested against. tinynet keeps such a
# twin for every fused op in `tinynet/reference.py`.

# %%
def silu_composed(x):
    return x / (1 + (-x).exp())


twin = tinynet.tensor(x.data.copy(), requires_grad=True)
silu_composed(twin).sum().backward()
x.grad = None
silu(x).sum().backward()
np.testing.assert_allclose(silu(x).data, silu_composed(twin).data, rtol=1e-13)
np.testing.assert_allclose(x.grad, twin.grad, rtol=1e-12)
print("SiLUFunction equals its composed twin, forward and backward")

# %% [markdown]
# ## A planted mistake, and how the check finds it
#
# A common slip: differentiating $x\,\sigma(x)$ as if $x$ were a constant, i.e. forgetting the
# product rule's second term. The forward is untouched, so the outputs still look right; only
# the check sees it, and its report says which elements are off, with the backward's value
# beside the finite difference:

# %%
class SiLUForgotProductRule(SiLUFunction):
    @staticmethod
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        return grad * s  # wrong: d(x σ(x))/dx is not σ(x)


try:
    tinynet.gradcheck(SiLUForgotProductRule.apply, [x])
    raise AssertionError("the check should have caught the missing term")
except GradcheckError as error:
    report = str(error)
print(report)
assert "input 0" in report

# %% [markdown]
# **What to take away.** An op is a forward that saves what its derivative needs and a backward
# that applies the chain rule to it; `gradcheck` proves the backward against the forward; a
# composed twin proves the forward against something obviously right. The same three pieces
# stand behind every op in `tinynet/ops/`: open `ops/elementwise.py` and compare `ReLUFunction`
# with this lesson's `SiLUFunction`.

# %% [markdown]
# **Practise it.** The exercises below practise this lesson: `tinynet exercises start DIR` writes
# them (one file each, with the math and a hint), `tinynet exercises check DIR` grades them,
# `tinynet exercises solution NAME` shows tinynet's answer.
#
# - `linear_backward`: the backward of y = x Wᵀ + b: grad_input, grad_weight, grad_bias
# - `softmax_cross_entropy_backward`: the gradient of mean cross-entropy over softmax, stable at 1e4
#   logits
# - `conv2d_backward`: the backward of conv2d: grad_input (col2im adds), grad_weight, grad_bias
