"""Exercise 1: backpropagation on scalars, micrograd style: a ``Value`` that records the graph
and a ``backward`` that walks it in reverse topological order."""

from __future__ import annotations

import math

import numpy as np

from tinynet.exercises.exercise import Exercise


class Value:
    """A scalar that remembers how it was computed, so that ``backward`` can send the derivative
    of a final result back to every Value it was computed from (micrograd's ``Value``).

    data:      the number
    grad:      d(output)/d(this value), filled in by ``output.backward()`` (0.0 before)
    _children: the Values this one was computed from
    _backward: sends ``self.grad`` on to the children's ``grad`` (set by the op that made it)

    Every op returns a new Value ``out`` and sets ``out._backward`` to the chain rule for that
    op: child.grad += (d out / d child) * out.grad. It must be +=: a Value used twice (in
    ``a * a``, or ``e * e + e``) receives a gradient from each use, and their sum is its
    gradient. A plain number on either side (``a + 1.0``, ``2 * a``) is a constant Value.
    """

    def __init__(self, data, _children=()):
        self.data = float(data)
        self.grad = 0.0
        self._children = tuple(_children)
        self._backward = lambda: None  # a leaf sends nothing further

    def __add__(self, other):
        """out = self + other;  d out/d self = 1, d out/d other = 1."""
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def _backward():
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other):
        """out = self * other;  d out/d self = other, d out/d other = self."""
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, exponent):
        """out = self ** k for a constant number k;  d out/d self = k * self ** (k - 1)."""
        out = Value(self.data**exponent, (self,))

        def _backward():
            self.grad += exponent * self.data ** (exponent - 1) * out.grad

        out._backward = _backward
        return out

    def tanh(self):
        """out = tanh(self);  d out/d self = 1 - tanh(self)² = 1 - out².

        Hint: the derivative is written with the output: keep ``t = math.tanh(self.data)``."""
        t = math.tanh(self.data)
        out = Value(t, (self,))

        def _backward():
            self.grad += (1 - t * t) * out.grad

        out._backward = _backward
        return out

    def backward(self):
        """Fill in ``grad`` of every Value this one depends on: d self / d that Value.

        Sort the graph so that every Value comes after all the Values it was computed from (a
        depth-first walk that appends a Value once its children are in: topological order),
        set ``self.grad = 1`` (d self/d self), then call ``_backward`` of each Value from the
        last to the first, so a Value sends its gradient on only when every Value that uses it
        has sent it its part."""
        order, seen = [], set()

        def visit(value):
            if id(value) not in seen:
                seen.add(id(value))
                for child in value._children:
                    visit(child)
                order.append(value)

        visit(self)
        self.grad = 1.0
        for value in reversed(order):
            value._backward()

    # Written with the four ops above; nothing new to differentiate.
    def __radd__(self, other):  # number + Value
        return self + other

    def __rmul__(self, other):  # number * Value
        return self * other

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other**-1

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"


# The check's expressions, each written once and evaluated on the learner's Values and on tinynet
# Tensors: name, the expression of (a, b, c, tanh), and the hint when it alone goes wrong.
EXPRESSIONS = (
    ("a + b", lambda a, b, c, tanh: a + b, "__add__ sends out.grad to both inputs"),
    ("a * b", lambda a, b, c, tanh: a * b, "__mul__: d(a·b)/da = b and d(a·b)/db = a"),
    (
        "a * b + c",
        lambda a, b, c, tanh: a * b + c,
        "backward must seed out.grad = 1 and call "
        "each Value's _backward from the output back (reverse topological order)",
    ),
    ("a ** 3", lambda a, b, c, tanh: a**3, "__pow__: d(a^k)/da = k·a^(k-1)"),
    ("b ** -2", lambda a, b, c, tanh: b**-2, "__pow__: d(a^k)/da = k·a^(k-1), k negative too"),
    ("tanh(a)", lambda a, b, c, tanh: tanh(a), "tanh: d tanh(x)/dx = 1 - tanh(x)²"),
    (
        "a * a",
        lambda a, b, c, tanh: a * a,
        "a Value used twice receives a gradient from each use: "
        "accumulate with +=, never overwrite with =",
    ),
    (
        "(a + b) * a",
        lambda a, b, c, tanh: (a + b) * a,
        "a is used by + and by *: each use "
        "adds its part to a.grad (+=); overwriting (=) keeps only the last",
    ),
    (
        "e = a * b; e * e + e",
        lambda a, b, c, tanh: (lambda e: e * e + e)(a * b),
        "e is used three times: its _backward may run only once all three uses have sent it their "
        "part (sort topologically), and every part must be added (+=)",
    ),
    (
        "2 * a - b / 4 + 1",
        lambda a, b, c, tanh: 2 * a - b / 4 + 1,
        "a number on either side is a constant Value (wrap it in __add__ and __mul__)",
    ),
    (
        "tanh(a * b + c) ** 2 / c",
        lambda a, b, c, tanh: tanh(a * b + c) ** 2 / c,
        "one of the rules above is wrong inside a longer chain; check each against the simpler "
        "expressions",
    ),
)
POINTS = ((0.7, -1.3, 2.1), (-0.4, 0.9, -1.6))


def _tinynet_tanh(x):
    e = (2 * x).exp()
    return (e - 1) / (e + 1)


def _expected(expression, point):
    """Value and gradients of ``expression`` at ``point`` from tinynet's autograd, float64."""
    import tinynet

    # Shape (1,), not (): tinynet's backward cannot yet add two gradients of a 0-d tensor.
    leaves = [tinynet.tensor([v], dtype=np.float64, requires_grad=True) for v in point]
    out = expression(*leaves, _tinynet_tanh).sum()
    out.backward()
    return out.item(), [0.0 if x.grad is None else float(x.grad[0]) for x in leaves]


def check(answer, max_examples=None, seed=None):
    """Each expression at each point: the output's data and every leaf's grad equal tinynet's
    (max_examples and seed: the checks here are fixed, not drawn)."""
    for name, expression, hint in EXPRESSIONS:
        for point in POINTS:
            case = f"{name} at a, b, c = {point}"
            leaves = [answer(v) for v in point]
            try:
                out = expression(*leaves, lambda x: x.tanh())
                out.backward()
            except NotImplementedError:
                raise
            except Exception as error:
                raise AssertionError(f"{case}: {type(error).__name__}: {error}\n"
                                     f"hint: {hint}") from error  # fmt: skip
            value, grads = _expected(expression, point)
            if not math.isclose(out.data, value, rel_tol=1e-9, abs_tol=1e-12):
                raise AssertionError(f"{case}: data {out.data!r}, expected {value!r}\nhint: {hint}")
            got = [leaf.grad for leaf in leaves]
            if not all(math.isclose(g, e, rel_tol=1e-9, abs_tol=1e-12) for g, e in zip(got, grads)):
                raise AssertionError(f"{case}: grads of a, b, c {got}, expected {grads}\n"
                                     f"hint: {hint}")  # fmt: skip


EXERCISE = Exercise(
    name="scalar_backward",
    entry="Value",
    summary="A micrograd-style scalar Value: add, mul, pow, tanh and a topological backward.",
    lessons=("01_scalar_graph.py",),
    solution=(Value,),
    stub=(Value,),
    to_write=frozenset({"__add__", "__mul__", "__pow__", "tanh", "backward"}),
    check=check,
    imports="import math\n",
)
