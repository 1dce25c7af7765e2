"""matmul and linear: shapes, gradients, PyTorch parity, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet
import tinynet.functional as F

from reference import assert_close, to_torch
from strategies import seeds, uniform


@st.composite
def matmul_shapes(draw):
    """Operand shapes covering 1-D, 2-D and broadcast batched products."""
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    a_batch = tuple(draw(st.sampled_from([b, 1])) for b in batch)
    b_batch = tuple(draw(st.sampled_from([b, 1])) for b in batch)
    a_shape = draw(st.sampled_from([(k,), a_batch + (m, k), (m, k)]))
    b_shape = draw(st.sampled_from([(k,), b_batch + (k, n), (k, n)]))
    return a_shape, b_shape


@given(shapes=matmul_shapes(), seed=seeds)
def test_matmul_shapes_and_gradients(shapes, seed):
    a_shape, b_shape = shapes
    a = tinynet.tensor(uniform(seed, a_shape), requires_grad=True)
    b = tinynet.tensor(uniform(seed + 1, b_shape), requires_grad=True)
    assert (a @ b).shape == np.matmul(a.data, b.data).shape
    assert tinynet.gradcheck(F.matmul, [a, b], atol=1e-8, rtol=1e-6)


@st.composite
def linear_cases(draw):
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    return lead, draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.booleans())


@given(case=linear_cases(), seed=seeds)
def test_linear_shapes_and_gradients(case, seed):
    lead, n_in, n_out, with_bias = case
    x = tinynet.tensor(uniform(seed, lead + (n_in,)), requires_grad=True)
    w = tinynet.tensor(uniform(seed + 1, (n_out, n_in)), requires_grad=True)
    b = tinynet.tensor(uniform(seed + 2, (n_out,)), requires_grad=True) if with_bias else None
    inputs = [x, w] + ([b] if with_bias else [])
    assert F.linear(x, w, b).shape == lead + (n_out,)
    assert tinynet.gradcheck(lambda *t: F.linear(*t), inputs, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(shapes=matmul_shapes(), case=linear_cases(), seed=seeds)
def test_match_torch(torch, dtype, shapes, case, seed):
    a_np, b_np = uniform(seed, shapes[0], dtype=dtype), uniform(seed + 1, shapes[1], dtype=dtype)
    a, b = tinynet.tensor(a_np, requires_grad=True), tinynet.tensor(b_np, requires_grad=True)
    ta, tb = to_torch(torch, a_np, True), to_torch(torch, b_np, True)
    out, t_out = a @ b, ta @ tb
    g = uniform(seed + 2, out.shape, dtype=dtype)
    out.backward(g)
    t_out.backward(to_torch(torch, g))
    for ours, theirs in [(out, t_out.detach()), (a.grad, ta.grad), (b.grad, tb.grad)]:
        assert_close(ours, theirs.numpy(), scale=4.0)

    lead, n_in, n_out, _ = case
    x_np, w_np = (
        uniform(seed, lead + (n_in,), dtype=dtype),
        uniform(seed + 1, (n_out, n_in), dtype=dtype),
    )
    bias_np = uniform(seed + 2, (n_out,), dtype=dtype)
    x, w, bias = (tinynet.tensor(v, requires_grad=True) for v in (x_np, w_np, bias_np))
    tx, tw, tbias = (to_torch(torch, v, True) for v in (x_np, w_np, bias_np))
    out, t_out = F.linear(x, w, bias), torch.nn.functional.linear(tx, tw, tbias)
    g = uniform(seed + 3, out.shape, dtype=dtype)
    out.backward(g)
    t_out.backward(to_torch(torch, g))
    for ours, theirs in [
        (out, t_out.detach()),
        (x.grad, tx.grad),
        (w.grad, tw.grad),
        (bias.grad, tbias.grad),
    ]:
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
