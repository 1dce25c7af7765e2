"""Inverted dropout: identity in eval, the right statistics, reproducible masks, gradients."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet
import tinynet.functional as F

from strategies import away_from_zero, seeds, shapes


def test_identity_when_not_training_or_p_zero():
    x = tinynet.ones(3, 4)
    assert F.dropout(x, 0.4, training=False) is x
    assert F.dropout(x, 0.0) is x


def test_p_one_zeroes_everything():
    x = tinynet.ones(3, 4, requires_grad=True)
    y = F.dropout(x, 1.0)
    np.testing.assert_array_equal(y.data, 0.0)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, 0.0)


@pytest.mark.parametrize("p", [0.1, 0.4, 0.7])
def test_keeps_the_expected_value(p):
    x = tinynet.ones(400, 500)
    y = F.dropout(x, p, generator=np.random.default_rng(0)).data
    zeros = np.mean(y == 0)
    # 200,000 Bernoulli draws: the standard error of the fraction is below 0.0011
    assert abs(zeros - p) < 0.006
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.02


def test_reproducible_from_a_seed():
    x = tinynet.ones(50)
    a = F.dropout(x, 0.5, generator=np.random.default_rng(7)).data
    b = F.dropout(x, 0.5, generator=np.random.default_rng(7)).data
    np.testing.assert_array_equal(a, b)
    tinynet.manual_seed(3)
    c = F.dropout(x, 0.5).data
    tinynet.manual_seed(3)
    np.testing.assert_array_equal(c, F.dropout(x, 0.5).data)


@given(shape=shapes(max_dims=3), p=st.sampled_from([0.2, 0.5, 0.9]), seed=seeds)
def test_gradient_is_the_mask_scaled(shape, p, seed):
    x = tinynet.tensor(away_from_zero(seed, shape), requires_grad=True)
    # A fresh generator with the same seed on every call: the same mask for each evaluation.
    fn = lambda x: F.dropout(x, p, generator=np.random.default_rng(seed)) * 1.5
    assert fn(x).shape == shape
    assert tinynet.gradcheck(fn, [x], atol=1e-8, rtol=1e-6)
    y = fn(x)
    y.backward(np.ones(shape))
    kept = y.data != 0
    np.testing.assert_allclose(x.grad[kept], 1.5 / (1 - p))
    np.testing.assert_array_equal(x.grad[~kept], 0.0)


def test_float32_stays_float32():
    y = F.dropout(tinynet.ones(10), 0.5)
    assert y.dtype == np.float32


@pytest.mark.parametrize("p", [-0.1, 1.5, "half"])
def test_bad_p_is_an_error(p):
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\]"):
        F.dropout(tinynet.ones(3), p)
