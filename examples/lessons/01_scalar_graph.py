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
# # Lesson 1: a graph of scalars, by hand and by tinynet
#
# Backpropagation is the chain rule applied to a graph, node by node, from the output back.
# We take one small expression,
#
# $$L = \big(\mathrm{relu}(a \cdot b + c)\big)^2 \cdot d,$$
#
# compute it forward, then push the derivative $\partial L/\partial L = 1$ backwards by hand.
# Then tinynet does the same with tensors, and `tinynet.draw_graph` shows the graph it built.

# %%
import numpy as np
from lesson_setup import output_folder

import tinynet

OUT = output_folder("lesson1")

# %% [markdown]
# ## Forward, one node at a time
#
# Every intermediate value gets a name, so that the backward pass can refer to it.

# %%
a, b, c, d = 2.0, -1.5, 4.0, 0.5
e = a * b  # -3.0
f = e + c  # 1.0
g = max(f, 0.0)  # relu: 1.0
h = g**2  # 1.0
L = h * d  # 0.5
print(f"e = a*b = {e}, f = e+c = {f}, g = relu(f) = {g}, h = g^2 = {h}, L = h*d = {L}")

# %% [markdown]
# ## Backward, by hand
#
# Walk the nodes in reverse. Each node multiplies the gradient that arrives by its *local*
# derivative and sends it on to its inputs:
#
# | node | local rule |
# |---|---|
# | $L = h d$ | $\bar h = \bar L\, d$, $\bar d = \bar L\, h$ |
# | $h = g^2$ | $\bar g = \bar h \cdot 2g$ |
# | $g = \mathrm{relu}(f)$ | $\bar f = \bar g \cdot [f > 0]$ |
# | $f = e + c$ | $\bar e = \bar f$, $\bar c = \bar f$ (a sum copies the gradient) |
# | $e = a b$ | $\bar a = \bar e\, b$, $\bar b = \bar e\, a$ (a product swaps the inputs) |

# %%
dL = 1.0
dh, dd = dL * d, dL * h
dg = dh * 2 * g
df = dg * (1.0 if f > 0 else 0.0)
de, dc = df, df
da, db = de * b, de * a
by_hand = {"a": da, "b": db, "c": dc, "d": dd}
print(by_hand)
assert by_hand == {"a": -1.5, "b": 2.0, "c": 1.0, "d": 1.0}

# %% [markdown]
# A check that needs no calculus: nudge one input by a small $\varepsilon$ and see how much $L$
# moves. The central difference $(L(a+\varepsilon) - L(a-\varepsilon)) / 2\varepsilon$ agrees
# with $\bar a$ to about $\varepsilon^2$.

# %%
def loss(a, b, c, d):
    return max(a * b + c, 0.0) ** 2 * d


eps = 1e-6
numeric = (loss(a + eps, b, c, d) - loss(a - eps, b, c, d)) / (2 * eps)
print(f"dL/da by hand {da}, by finite differences {numeric:.8f}")
assert abs(numeric - da) < 1e-6

# %% [markdown]
# ## The same with tinynet tensors
#
# Each operation on tensors that require a gradient records a node (its `Function` and what it
# saved for the backward). `L.backward()` sorts these nodes topologically, seeds $L$ with 1 and
# runs each node's backward in reverse: exactly the table above. Backward frees the graph as it
# goes (each node's saved values are dropped once used), so we ask for its drawing first;
# `grad_norms=True` makes the drawing note the gradient that each node receives.

# %%
ta, tb, tc, td = (tinynet.tensor(v, dtype=np.float64, requires_grad=True) for v in (a, b, c, d))
tL = tinynet.functional.relu(ta * tb + tc) ** 2 * td
graph = tinynet.draw_graph(tL, grad_norms=True)
tL.backward()
by_tinynet = {name: float(t.grad) for name, t in zip("abcd", (ta, tb, tc, td))}
print(f"L = {tL.item()}, gradients {by_tinynet}")
assert tL.item() == L
assert by_tinynet == by_hand

# %% [markdown]
# ## The graph tinynet built
#
# `tinynet.draw_graph(L)` returned the graph behind a tensor. Its `.source` is DOT text (it needs
# nothing installed); `.save()` writes `.dot`, `.svg` or `.png`, and in Jupyter the graph draws
# itself inline. Leaves (the inputs) are at the top; every op node shows its output's shape
# (here `()`, a scalar) and dtype, and, since the backward ran, the gradient's norm.

# %%
ops = [line for line in graph.source.splitlines() if "label=" in line]
print("\n".join(ops))
for op in ("Mul", "Add", "Relu", "Pow"):
    assert any(op.lower() in line.lower() for line in ops), op
# The node h = g^2 received dL/dh = d = 0.5, as in the table.
assert any("Pow" in line and "grad norm 0.5" in line for line in ops)
print(f"wrote {graph.save(OUT / 'scalar_graph.dot')}")
if tinynet.graph.renderer_available():
    print(f"wrote {graph.save(OUT / 'scalar_graph.svg')}")
graph

# %% [markdown]
# ## Step through it in the browser
#
# `tinynet.explore` writes one HTML page (it opens from disk, no server) that draws the graph with
# every node's value, and a **Backward** button that walks the reverse order of the table one
# node at a time: each gradient arriving, and the rule of each node written out with its numbers
# (click a node). The backward above freed this graph, so we build it once more and hand it to
# `page_data` before its backward: the page runs the backward itself.

# %%
from tinynet.explore import PageView, page_data, write_page  # noqa: E402

ta, tb, tc, td = (tinynet.tensor(v, dtype=np.float64, requires_grad=True) for v in (a, b, c, d))
tL = tinynet.functional.relu(ta * tb + tc) ** 2 * td
page = page_data(tL, names={"a": ta, "b": tb, "c": tc, "d": td},
                 title="Lesson 1: L = relu(a·b + c)² · d")  # fmt: skip
grads = {leaf["name"]: leaf["grad"]["scalar"] for leaf in page["leaves"] if "grad" in leaf}
assert grads == by_hand
path = write_page(page, OUT / "explorer.html")
print(f"wrote {path}: open {path.resolve().as_uri()} in a browser and press Backward: step")
PageView(path)  # in Jupyter, the page itself, here

# %% [markdown]
# **What to take away.** A backward pass is local rules chained in reverse order; a sum copies
# its gradient, a product swaps its inputs, a ReLU passes or blocks. tinynet records the same
# graph you drew by hand and gets the same numbers. Lesson 2 does this for a convolution, where
# the values are arrays.

# %% [markdown]
# **Practise it.** The exercises below practise this lesson: `tinynet exercises start DIR` writes
# them (one file each, with the math and a hint), `tinynet exercises check DIR` grades them,
# `tinynet exercises solution NAME` shows tinynet's answer.
#
# - `scalar_backward`: a micrograd-style scalar Value: add, mul, pow, tanh and a topological
#   backward
# - `linear_backward`: the backward of y = x Wᵀ + b: grad_input, grad_weight, grad_bias
