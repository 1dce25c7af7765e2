"""sum, mean, max over axes with keepdim: shapes, gradients, PyTorch parity, errors."""

import numpy as np
import pytest
from hypothesis import given

import tinynet
import tinynet.functional as F
from tinynet.testing.strategies import reduction_cases

from compare import assert_close, to_torch
from strategies import distinct, seeds, uniform

OPS = {
    "sum": (F.sum, lambda t, x, dim, keep: t.sum(x, dim=dim, keepdim=keep)),
    "mean": (F.mean, lambda t, x, dim, keep: t.mean(x, dim=dim, keepdim=keep)),
    "max": (
        F.max,
        lambda t, x, dim, keep: t.amax(x, dim=dim if dim is not None else (), keepdim=keep),
    ),
}


def _expected_shape(shape, dim, keepdim):
    axes = range(len(shape)) if dim is None else [d % len(shape) for d in np.atleast_1d(dim)]
    return tuple(1 if i in axes else s for i, s in enumerate(shape) if keepdim or i not in axes)


@pytest.mark.parametrize("name", OPS)
@given(case=reduction_cases(), seed=seeds)
def test_shapes_and_gradients(name, case, seed):
    op, _ = OPS[name]
    shape, dim, keepdim = case
    # max gets distinct values, so its unique winner survives a finite-difference step
    values = distinct(seed, shape) if name == "max" else uniform(seed, shape)
    x = tinynet.tensor(values, requires_grad=True)
    assert op(x, dim, keepdim).shape == _expected_shape(shape, dim, keepdim)
    assert tinynet.gradcheck(lambda x: op(x, dim, keepdim), [x], atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", OPS)
@given(case=reduction_cases(), seed=seeds)
def test_match_torch(torch, name, dtype, case, seed):
    op, torch_op = OPS[name]
    shape, dim, keepdim = case
    x_np = uniform(seed, shape, dtype=dtype)
    x = tinynet.tensor(x_np, requires_grad=True)
    out = op(x, dim, keepdim)
    g_np = uniform(seed + 1, out.shape, dtype=dtype)
    out.backward(g_np)
    tx = to_torch(torch, x_np, True)
    t_out = torch_op(torch, tx, dim, keepdim)
    t_out.backward(to_torch(torch, g_np))
    assert_close(out, t_out.detach().numpy(), scale=float(np.abs(x_np).sum()))
    assert_close(x.grad, tx.grad.numpy())


def test_max_shares_the_gradient_evenly_among_ties():
    x = tinynet.tensor([[1.0, 3.0, 3.0], [5.0, 2.0, 5.0]], requires_grad=True)
    F.max(x, dim=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])


def test_hand_computed_mean():
    x = tinynet.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x.mean(dim=0, keepdim=True)
    np.testing.assert_array_equal(y.data, [[1.5, 2.5, 3.5]])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 0.5))


@pytest.mark.parametrize("op", [F.sum, F.mean, F.max])
def test_bad_dims_are_errors(op):
    x = tinynet.ones(2, 3)
    with pytest.raises(IndexError, match=r"dim=2 is out of range.*2 dimensions"):
        op(x, 2)
    with pytest.raises(ValueError, match="repeats an axis"):
        op(x, (1, -1))
    with pytest.raises(TypeError, match="dim must be an int, a tuple of ints or None; got 1.5"):
        op(x, 1.5)


def test_max_of_an_empty_tensor_is_an_error():
    with pytest.raises(ValueError, match=r"empty tensor of shape \(0,\)"):
        F.max(tinynet.zeros(0))
