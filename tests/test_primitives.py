"""The primitives tinynet.reference is built from that the other test files do not cover:
where, stack and pad. Shapes, values, gradients by finite differences, PyTorch parity."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import tinynet
import tinynet.functional as F

from compare import assert_close, to_torch
from strategies import seeds, shapes, uniform


def _leaf(seed, shape):
    return tinynet.tensor(uniform(seed, shape), requires_grad=True)


@given(shapes=mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=seeds)
def test_where_picks_and_routes_the_gradient(shapes, seed):
    (cond_shape, a_shape, b_shape), _ = shapes
    condition = np.random.default_rng(seed).random(cond_shape) < 0.5
    a, b = _leaf(seed, a_shape), _leaf(seed + 1, b_shape)
    y = F.where(condition, a, b)
    np.testing.assert_array_equal(y.data, np.where(condition, a.data, b.data))
    assert tinynet.gradcheck(lambda a, b: F.where(condition, a, b), [a, b])


@given(shape=shapes(max_dims=3, max_side=3), count=st.integers(1, 3), seed=seeds, data=st.data())
def test_stack_along_any_new_axis(shape, count, seed, data):
    dim = data.draw(st.integers(-len(shape) - 1, len(shape)))
    xs = [_leaf(seed + i, shape) for i in range(count)]
    np.testing.assert_array_equal(F.stack(xs, dim).data, np.stack([x.data for x in xs], dim))
    assert tinynet.gradcheck(lambda *xs: F.stack(xs, dim) * 1.5, xs)


@given(shape=shapes(max_dims=4, max_side=3), seed=seeds, data=st.data())
def test_pad_as_torch_orders_its_widths(torch, shape, seed, data):
    axes = data.draw(st.integers(1, len(shape)))
    widths = data.draw(st.lists(st.integers(0, 2), min_size=2 * axes, max_size=2 * axes))
    value = data.draw(st.sampled_from([0.0, -np.inf, 2.5]))
    x = _leaf(seed, shape)
    expected = torch.nn.functional.pad(to_torch(torch, x.data), tuple(widths), value=value)
    assert_close(F.pad(x, widths, value), expected.numpy())
    assert tinynet.gradcheck(lambda x: F.pad(x, widths, 1.0) * 1.5, [x])


def test_hand_computed():
    x = tinynet.tensor([[1.0, 2.0]], requires_grad=True)
    y = F.pad(x, (1, 0, 0, 1), value=-1.0)
    np.testing.assert_array_equal(y.data, [[-1.0, 1.0, 2.0], [-1.0, -1.0, -1.0]])
    (F.where(np.array([True, False]), x, 0.0).sum() + F.stack([x, 2 * x], 0).sum()).backward()
    np.testing.assert_array_equal(x.grad, [[1.0 + 3.0, 0.0 + 3.0]])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x: F.where(np.array([1, 0]), x, x), TypeError, "where: condition must be"),
        (lambda x: F.stack([], 0), ValueError, "stack: needs at least one"),
        (lambda x: F.stack([x, x[:1]], 0), ValueError, "stack: tensor 1 has shape"),
        (lambda x: F.pad(x, (1,)), ValueError, "pad: pad must be an even-length"),
        (lambda x: F.pad(x, (1, -1)), ValueError, "pad: pad must be"),
        (lambda x: F.pad(x, (1, 1, 1, 1)), ValueError, "two per axis of the 1-D input"),
    ],
)
def test_bad_arguments_are_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(tinynet.tensor([1.0, 2.0]))
