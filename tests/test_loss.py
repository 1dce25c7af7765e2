"""softmax, log_softmax, cross_entropy: stability, gradients, PyTorch parity, errors."""

import numpy as np
import pytest
from hypothesis import given

import tinynet
import tinynet.functional as F
from tinynet.testing.strategies import classification_cases, softmax_cases

from compare import assert_close, to_torch
from strategies import seeds, uniform


@pytest.mark.parametrize("op", [F.softmax, F.log_softmax])
@given(case=softmax_cases(large=False), seed=seeds)
def test_softmax_shapes_and_gradients(op, case, seed):
    x = tinynet.tensor(case.values(seed), requires_grad=True)
    assert op(x, case.dim).shape == case.shape
    weights = uniform(seed + 1, case.shape)
    assert tinynet.gradcheck(lambda x: op(x, case.dim) * weights, [x], atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(case=classification_cases(large=False), seed=seeds)
def test_cross_entropy_gradients(reduction, case, seed):
    x = tinynet.tensor(case.logits(seed), requires_grad=True)
    target, smoothing = case.target(seed), case.label_smoothing
    fn = lambda x: F.cross_entropy(x, target, reduction=reduction, label_smoothing=smoothing)
    assert fn(x).shape == ((case.n,) if reduction == "none" else ())
    assert tinynet.gradcheck(fn, [x], atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(case=classification_cases(), seed=seeds)
def test_match_torch(torch, dtype, reduction, case, seed):
    logits, target, smoothing = case.logits(seed, dtype), case.target(seed), case.label_smoothing
    x = tinynet.tensor(logits, requires_grad=True)
    tx = to_torch(torch, logits, True)
    out = F.cross_entropy(x, target, reduction=reduction, label_smoothing=smoothing)
    t_out = torch.nn.functional.cross_entropy(
        tx, torch.tensor(target), reduction=reduction, label_smoothing=smoothing
    )
    g = uniform(1, out.shape, dtype=dtype)
    out.backward(g)
    t_out.backward(to_torch(torch, g))
    assert out.dtype == dtype
    assert_close(out, t_out.detach().numpy())
    assert_close(x.grad, tx.grad.numpy())
    for op, t_op in [(F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)]:
        assert_close(op(x, 1), t_op(tx, 1).detach().numpy())


def test_stable_for_huge_logits():
    logits = np.array([[1e4, 1e4 - 1.0, -1e4]], np.float32)
    x = tinynet.tensor(logits, requires_grad=True)
    log_p = F.log_softmax(x, 1).data
    np.testing.assert_allclose(
        log_p[0, :2], [-np.log1p(np.exp(-1.0)), -1 - np.log1p(np.exp(-1.0))], rtol=1e-6
    )
    assert np.isfinite(log_p).all()
    loss = F.cross_entropy(x, [1])
    loss.backward()
    assert np.isfinite(loss.data) and np.isfinite(x.grad).all()
    np.testing.assert_allclose(F.softmax(x, 1).data.sum(), 1.0, rtol=1e-6)


def test_cross_entropy_gradient_is_softmax_minus_onehot():
    x = tinynet.tensor(
        [[0.0, np.log(3.0)], [np.log(2.0), np.log(2.0)]], dtype=np.float64, requires_grad=True
    )
    loss = F.cross_entropy(x, np.array([1, 0]), reduction="sum")
    # p = [[1/4, 3/4], [1/2, 1/2]]: loss = -log(3/4) - log(1/2)
    np.testing.assert_allclose(loss.data, -np.log(0.75) - np.log(0.5))
    loss.backward()
    np.testing.assert_allclose(x.grad, [[0.25, -0.25], [-0.5, 0.5]])


def test_bad_targets_are_errors():
    x = tinynet.ones(3, 4)
    with pytest.raises(IndexError, match=r"class indices in \[0, 4\); got 7 at position 1"):
        F.cross_entropy(x, np.array([0, 7, 1]))
    with pytest.raises(IndexError, match="got -1 at position 0"):
        F.cross_entropy(x, np.array([-1, 0, 1]))
    with pytest.raises(TypeError, match="integer class indices; got dtype float64"):
        F.cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"target must have shape \(3,\).*got \(2,\)"):
        F.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"2-D logits \(N, C\); got shape \(4,\)"):
        F.cross_entropy(tinynet.ones(4), np.array([0]))
    with pytest.raises(ValueError, match="reduction must be"):
        F.cross_entropy(x, np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        F.cross_entropy(x, np.array([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(IndexError, match="dim=2 is out of range"):
        F.softmax(x, 2)
