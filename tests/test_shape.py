"""reshape, permute/transpose, flatten, indexing and cat: shapes, gradients, PyTorch parity."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet
import tinynet.functional as F
from tinynet.ops.layout import empty_nchw

from compare import assert_close, to_torch
from strategies import seeds, shapes, uniform


def _leaf(seed, shape, dtype=np.float64):
    return tinynet.tensor(uniform(seed, shape, dtype=dtype), requires_grad=True)


@given(shape=shapes(max_dims=4), seed=seeds, data=st.data())
def test_reshape_and_flatten(shape, seed, data):
    x = _leaf(seed, shape)
    target = data.draw(st.permutations(shape)).copy()
    target[data.draw(st.integers(0, len(shape) - 1))] = -1
    assert F.reshape(x, target).shape == np.empty(shape).reshape(target).shape
    start = data.draw(st.integers(-len(shape), len(shape) - 1))
    end = data.draw(st.integers(start % len(shape), len(shape) - 1))
    expected = np.empty(shape).reshape(shape[: start % len(shape)] + (-1,) + shape[end + 1 :]).shape
    assert F.flatten(x, start, end).shape == expected
    assert tinynet.gradcheck(lambda x: F.flatten(F.reshape(x, target) * x.sum(), start, end), [x])


@given(shape=shapes(min_dims=1, max_dims=4), seed=seeds, data=st.data())
def test_permute_and_transpose(shape, seed, data):
    x = _leaf(seed, shape)
    dims = data.draw(st.permutations(range(len(shape))))
    assert F.permute(x, dims).shape == tuple(shape[d] for d in dims)
    d0, d1 = data.draw(st.integers(0, len(shape) - 1)), data.draw(st.integers(0, len(shape) - 1))
    assert F.transpose(x, d0, d1).shape == np.swapaxes(np.empty(shape), d0, d1).shape
    weights = uniform(seed + 1, tuple(shape[d] for d in dims))
    assert tinynet.gradcheck(lambda x: F.permute(x, dims) * weights, [x])
    assert tinynet.gradcheck(lambda x: F.transpose(x, d0, d1) * 1.5, [x])


@given(
    shape=shapes(min_dims=1, max_dims=4, max_side=4),
    count=st.integers(1, 4),
    seed=seeds,
    data=st.data(),
)
def test_cat_along_any_dim(shape, count, seed, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=count, max_size=count))
    pieces = []
    for i, size in enumerate(sizes):
        piece_shape = list(shape)
        piece_shape[dim] = size
        pieces.append(_leaf(seed + i, tuple(piece_shape)))
    out = F.cat(pieces, dim)
    np.testing.assert_array_equal(out.data, np.concatenate([p.data for p in pieces], axis=dim))
    weights = uniform(seed + 9, out.shape)
    assert tinynet.gradcheck(lambda *xs: F.cat(xs, dim) * weights, pieces)


def test_cat_keeps_channel_major_memory_and_concat_is_an_alias():
    # Inception's four branches arrive channel-major; their concatenation stays channel-major.
    branches = []
    for channels in (2, 3, 1, 2):
        x = empty_nchw(2, channels, 3, 3, np.float32)
        x[...] = channels
        branches.append(tinynet.tensor(x))
    out = F.concat(branches, dim=1)
    assert out.shape == (2, 8, 3, 3)
    assert out.data.transpose(1, 0, 2, 3).flags.c_contiguous
    assert F.concat is F.cat


def test_index_gradient_scatters_and_sums_repeats():
    x = tinynet.tensor(np.arange(5.0), requires_grad=True)
    y = x[np.array([0, 2, 2, 4])]
    np.testing.assert_array_equal(y.data, [0.0, 2.0, 2.0, 4.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 2.0, 0.0, 1.0])
    m = tinynet.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    assert tinynet.gradcheck(lambda m: m[1:, ::2] * 3.0, [m])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_match_torch(torch, dtype):
    a_np, b_np = uniform(0, (2, 3, 4), dtype=dtype), uniform(1, (2, 1, 4), dtype=dtype)
    a, b = tinynet.tensor(a_np, requires_grad=True), tinynet.tensor(b_np, requires_grad=True)
    ta, tb = to_torch(torch, a_np, True), to_torch(torch, b_np, True)
    ours = F.flatten(F.permute(F.cat([a, b], 1), (2, 0, 1)), 1)[1:, ::2].reshape(-1, 2)
    theirs = torch.flatten(torch.cat([ta, tb], 1).permute(2, 0, 1), 1)[1:, ::2].reshape(-1, 2)
    g = uniform(2, ours.shape, dtype=dtype)
    ours.backward(g)
    theirs.backward(to_torch(torch, g))
    assert_close(ours, theirs.detach().numpy())
    assert_close(a.grad, ta.grad.numpy())
    assert_close(b.grad, tb.grad.numpy())


def test_bad_arguments_are_errors():
    x = tinynet.ones(2, 3, 4)
    with pytest.raises(
        ValueError, match=r"cannot view a tensor of shape \(2, 3, 4\).*as \(5, -1\)"
    ):
        F.reshape(x, (5, -1))
    with pytest.raises(ValueError, match=r"cannot view.*\(-1, -1\)"):
        F.reshape(x, (-1, -1))
    with pytest.raises(ValueError, match="permutation of 0..2"):
        F.permute(x, (0, 0, 1))
    with pytest.raises(IndexError, match="dim1=3 is out of range"):
        F.transpose(x, 0, 3)
    with pytest.raises(ValueError, match="start_dim 2 comes after end_dim 1"):
        F.flatten(x, 2, 1)
    with pytest.raises(ValueError, match=r"tensor 1 has shape \(2, 4, 4\).*except dim=2"):
        F.cat([x, tinynet.ones(2, 4, 4)], dim=2)
    with pytest.raises(ValueError, match="at least one tensor"):
        F.cat([], dim=0)
