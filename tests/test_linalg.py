"""matmul and linear: shapes, gradients, PyTorch parity, errors."""

import numpy as np
import pytest
from hypothesis import given

import tinynet
import tinynet.functional as F
from tinynet.testing.strategies import linear_cases, matmul_cases

from compare import assert_close, to_torch
from strategies import seeds, uniform


@given(case=matmul_cases(), seed=seeds)
def test_matmul_shapes_and_gradients(case, seed):
    a_shape, b_shape = case
    a = tinynet.tensor(uniform(seed, a_shape), requires_grad=True)
    b = tinynet.tensor(uniform(seed + 1, b_shape), requires_grad=True)
    assert (a @ b).shape == np.matmul(a.data, b.data).shape
    assert tinynet.gradcheck(F.matmul, [a, b], atol=1e-8, rtol=1e-6)


@given(case=linear_cases(), seed=seeds)
def test_linear_shapes_and_gradients(case, seed):
    inputs = [tinynet.tensor(a, requires_grad=True) for a in case.arrays(seed) if a is not None]
    assert F.linear(*inputs).shape == case.lead + (case.n_out,)
    assert tinynet.gradcheck(lambda *t: F.linear(*t), inputs, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(matmul=matmul_cases(), case=linear_cases(), seed=seeds)
def test_match_torch(torch, dtype, matmul, case, seed):
    a_np = uniform(seed, matmul.a_shape, dtype=dtype)
    b_np = uniform(seed + 1, matmul.b_shape, dtype=dtype)
    a, b = tinynet.tensor(a_np, requires_grad=True), tinynet.tensor(b_np, requires_grad=True)
    ta, tb = to_torch(torch, a_np, True), to_torch(torch, b_np, True)
    out, t_out = a @ b, ta @ tb
    g = uniform(seed + 2, out.shape, dtype=dtype)
    out.backward(g)
    t_out.backward(to_torch(torch, g))
    for ours, theirs in [(out, t_out.detach()), (a.grad, ta.grad), (b.grad, tb.grad)]:
        assert_close(ours, theirs.numpy(), scale=4.0)

    arrays = [a for a in case.arrays(seed, dtype) if a is not None]  # x, weight (, bias)
    inputs = [tinynet.tensor(a, requires_grad=True) for a in arrays]
    t_inputs = [to_torch(torch, a, True) for a in arrays]
    out, t_out = F.linear(*inputs), torch.nn.functional.linear(*t_inputs)
    g = uniform(seed + 3, out.shape, dtype=dtype)
    out.backward(g)
    t_out.backward(to_torch(torch, g))
    pairs = [(out, t_out.detach())] + [(t.grad, tt.grad) for t, tt in zip(inputs, t_inputs)]
    for ours, theirs in pairs:
        assert_close(ours, theirs.numpy(), scale=8.0)


def test_linear_hand_computed():
    x = tinynet.tensor([[1.0, 2.0]], requires_grad=True)
    w = tinynet.tensor([[1.0, 0.0], [0.5, -1.0], [2.0, 3.0]], requires_grad=True)
    b = tinynet.tensor([0.0, 1.0, -1.0], requires_grad=True)
    y = F.linear(x, w, b)
    np.testing.assert_array_equal(y.data, [[1.0, -0.5, 7.0]])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [[3.5, 2.0]])  # column sums of w
    np.testing.assert_array_equal(w.grad, np.tile(x.data, (3, 1)))
    np.testing.assert_array_equal(b.grad, [1.0, 1.0, 1.0])


def test_linear_takes_arrays_and_lists_like_every_op():
    """Like the other ops, linear makes Tensors of what it is given: nested lists, ndarrays or
    Tensors give the same result."""
    x, w, b = [[1.0, 2.0]], [[1.0, 0.0], [0.5, -1.0], [2.0, 3.0]], [0.0, 1.0, -1.0]
    for make in (lambda v: v, np.array, tinynet.tensor):
        y = F.linear(make(x), make(w), make(b))
        assert isinstance(y, tinynet.Tensor)
        np.testing.assert_array_equal(y.data, [[1.0, -0.5, 7.0]])


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match=r"inner dimensions differ.*\(2, 3\).*k=3.*\(4, 5\).*k=4"):
        tinynet.ones(2, 3) @ tinynet.ones(4, 5)
    with pytest.raises(ValueError, match="at least 1-D"):
        F.matmul(tinynet.tensor(2.0), tinynet.ones(2))
    w = tinynet.ones(3, 4)
    with pytest.raises(ValueError, match=r"in_features=4.*got input shape \(2, 5\)"):
        F.linear(tinynet.ones(2, 5), w)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\).*got \(4,\)"):
        F.linear(tinynet.ones(2, 4), w, tinynet.ones(4))
    with pytest.raises(ValueError, match=r"weight must be 2-D \(out_features, in_features\)"):
        F.linear(tinynet.ones(2, 4), tinynet.ones(4))
