"""Elementwise ops: broadcasting shapes, finite-difference gradients, PyTorch parity."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import tinynet
import tinynet.functional as F

from compare import assert_close, to_torch
from strategies import away_from_zero, seeds, uniform


def _values(kind, seed, shape, dtype=np.float64):
    if kind == "any":
        return uniform(seed, shape, dtype=dtype)
    if kind == "positive":
        return uniform(seed, shape, 0.5, 2.0, dtype=dtype)
    if kind == "nonzero":
        return away_from_zero(seed, shape, 0.5, 2.0, dtype=dtype)
    raise AssertionError(kind)


# name: (tinynet op, torch op, values of a, values of b)
BINARY = {
    "add": (F.add, lambda a, b: a + b, "any", "any"),
    "sub": (F.sub, lambda a, b: a - b, "any", "any"),
    "mul": (F.mul, lambda a, b: a * b, "any", "any"),
    "div": (F.div, lambda a, b: a / b, "any", "nonzero"),
    "pow": (F.pow, lambda a, b: a**b, "positive", "any"),
}
# name: (tinynet op, torch op, values); relu's inputs stay away from its kink at 0.
UNARY = {
    "neg": (F.neg, lambda x: -x, "any"),
    "exp": (F.exp, lambda x: x.exp(), "any"),
    "log": (F.log, lambda x: x.log(), "positive"),
    "relu": (F.relu, lambda x: x.relu(), "nonzero"),
}

broadcast_pairs = mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4)


@pytest.mark.parametrize("name", BINARY)
@given(shapes=broadcast_pairs, seed=seeds)
def test_binary_shapes_and_gradients(name, shapes, seed):
    op, _, kind_a, kind_b = BINARY[name]
    shape_a, shape_b = shapes.input_shapes
    a = tinynet.tensor(_values(kind_a, seed, shape_a), requires_grad=True)
    b = tinynet.tensor(_values(kind_b, seed + 1, shape_b), requires_grad=True)
    assert op(a, b).shape == shapes.result_shape
    assert tinynet.gradcheck(op, [a, b], atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("name", UNARY)
@given(shape=st.lists(st.integers(1, 4), max_size=3).map(tuple), seed=seeds)
def test_unary_shapes_and_gradients(name, shape, seed):
    op, _, kind = UNARY[name]
    x = tinynet.tensor(_values(kind, seed, shape), requires_grad=True)
    assert op(x).shape == shape
    assert tinynet.gradcheck(op, [x], atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", BINARY)
@given(shapes=broadcast_pairs, seed=seeds)
def test_binary_ops_match_torch(torch, name, dtype, shapes, seed):
    op, torch_op, kind_a, kind_b = BINARY[name]
    shape_a, shape_b = shapes.input_shapes
    a_np, b_np = _values(kind_a, seed, shape_a, dtype), _values(kind_b, seed + 1, shape_b, dtype)
    g_np = uniform(seed + 2, shapes.result_shape, dtype=dtype)
    a, b = tinynet.tensor(a_np, requires_grad=True), tinynet.tensor(b_np, requires_grad=True)
    out = op(a, b)
    out.backward(g_np)
    ta, tb = to_torch(torch, a_np, True), to_torch(torch, b_np, True)
    t_out = torch_op(ta, tb)
    t_out.backward(to_torch(torch, g_np))
    assert out.dtype == dtype and a.grad.dtype == dtype and b.grad.dtype == dtype
    assert_close(out, t_out.detach().numpy())
    assert_close(a.grad, ta.grad.numpy())
    assert_close(b.grad, tb.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", UNARY)
@given(shape=st.lists(st.integers(1, 4), max_size=3).map(tuple), seed=seeds)
def test_unary_ops_match_torch(torch, name, dtype, shape, seed):
    op, torch_op, kind = UNARY[name]
    x_np = _values(kind, seed, shape, dtype)
    g_np = uniform(seed + 1, shape, dtype=dtype)
    x = tinynet.tensor(x_np, requires_grad=True)
    out = op(x)
    out.backward(g_np)
    tx = to_torch(torch, x_np, True)
    t_out = torch_op(tx)
    t_out.backward(to_torch(torch, g_np))
    assert_close(out, t_out.detach().numpy())
    assert_close(x.grad, tx.grad.numpy())


def test_python_scalar_operands_on_either_side():
    x = tinynet.tensor([1.0, 2.0, 4.0], dtype=np.float64, requires_grad=True)
    assert tinynet.gradcheck(lambda x: 3.0 - x / 2.0 + 2.0**x + x**3 - 1.0 / x, [x])
    y = 3.0 - x / 2.0 + 2.0**x + x**3 - 1.0 / x
    np.testing.assert_allclose(y.data, 3 - x.data / 2 + 2**x.data + x.data**3 - 1 / x.data)


def test_hand_computed_values():
    a = tinynet.tensor([[1.0, -2.0]], requires_grad=True)
    b = tinynet.tensor([[3.0], [0.5]], requires_grad=True)
    y = a * b  # [[3, -6], [0.5, -1]]
    np.testing.assert_array_equal(y.data, [[3.0, -6.0], [0.5, -1.0]])
    y.sum().backward()
    np.testing.assert_array_equal(a.grad, [[3.5, 3.5]])  # column sums of b broadcast
    np.testing.assert_array_equal(b.grad, [[-1.0], [-1.0]])  # row sums of a


def test_relu_gradient_is_zero_at_zero_as_pytorch():
    x = tinynet.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 1.0])


def test_shapes_that_do_not_broadcast_are_an_error():
    with pytest.raises(ValueError, match=r"could not be broadcast.*\(2,3\).*\(4,\)"):
        tinynet.ones(2, 3) + tinynet.ones(4)


def test_relu_of_one_channel_major_image_runs_on_the_parallel_kernels(monkeypatch):
    """A conv's output for a batch of one is a channel-major view whose batch axis has a stride
    no fresh array shares; its memory is still one dense block, so the kernels take it."""
    from tinynet.kernels import activation

    calls = []
    for name in ("relu_forward", "relu_backward"):
        kernel = getattr(activation, name)
        monkeypatch.setattr(activation, name, lambda *a, k=kernel: calls.append(k) or k(*a))
    x_np = uniform(2, (4, 1, 5, 6)).astype(np.float32).transpose(1, 0, 2, 3)  # (1, 4, 5, 6)
    x = tinynet.tensor(x_np, requires_grad=True)
    y = F.relu(x)
    y.backward(np.ones_like(x_np))
    assert len(calls) == 2
    np.testing.assert_array_equal(y.data, np.maximum(x_np, 0))
    np.testing.assert_array_equal(x.grad, (x_np > 0).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64])
@pytest.mark.parametrize("view", ["contiguous", "channel-major", "strided"])
def test_relu_is_max_x_0_in_every_layout_the_kernels_choose_between(dtype, view):
    """The parallel kernels run over dense memory of float32/float64 and NumPy runs the rest:
    either way y has np.maximum(x, 0)'s values and dtype (NaN passed on), dense y keeps x's memory
    order, and dL/dx is g where y > 0, whatever the gradient's layout."""
    values = np.array([np.nan, -0.0, 0.0, -1.5, 2.0, np.inf, -np.inf], dtype=np.float64)
    base = np.random.default_rng(0).choice(values, size=(3, 4, 5, 6))
    base = np.nan_to_num(base, posinf=9, neginf=-9) if np.dtype(dtype).kind == "i" else base
    base = base.astype(dtype)
    x_np = {
        "contiguous": base,
        "channel-major": base.transpose(1, 0, 2, 3),
        "strided": base[:, ::2],
    }[view]
    y = F.relu(tinynet.tensor(x_np))
    expected = np.maximum(x_np, 0)
    assert y.dtype == expected.dtype
    np.testing.assert_array_equal(y.data, expected)
    if view != "strided":
        assert y.data.strides == x_np.strides
    if np.dtype(dtype).kind == "f":
        x = tinynet.tensor(x_np, requires_grad=True)
        g = uniform(1, x_np.shape, dtype=dtype).transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
        F.relu(x).backward(g)
        np.testing.assert_array_equal(x.grad, np.where(expected > 0, g, 0))
