"""RMSprop: PyTorch parity over several steps in float64 (and float32), closed forms, exact
resumption through tinynet.io, errors, and the trainer's paper setting."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_optim import assert_matches_torch, assert_resume_is_exact

from tinynet.nn import Parameter
from tinynet.optim import RMSprop

from strategies import seeds, shapes


@st.composite
def rmsprop_settings(draw):
    # alpha above and below 0.5 exercises both forms of PyTorch's lerp (centred). Not 0: then
    # the centred variance v - ḡ² is exactly 0 (tinynet gives d = eps) and PyTorch's fused
    # multiply-add can round it below 0, to a NaN.
    return dict(
        lr=draw(st.floats(0.0, 0.1)),
        alpha=draw(st.sampled_from([0.9, 0.99]) | st.floats(0.05, 1.0)),
        eps=draw(st.sampled_from([1e-8, 1.0])),
        weight_decay=draw(st.just(0.0) | st.floats(0.0, 0.2)),
        momentum=draw(st.sampled_from([0.0, 0.9]) | st.floats(0.0, 0.99)),
        centered=draw(st.booleans()),
        maximize=draw(st.booleans()),
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(
    data=st.data(),
    param_shapes=st.lists(shapes(max_dims=3), min_size=1, max_size=3),
    steps=st.integers(1, 25),
    seed=seeds,
)
def test_matches_torch_over_many_steps(torch, dtype, data, param_shapes, steps, seed):
    settings = data.draw(rmsprop_settings(), label="settings")
    split = data.draw(st.integers(0, len(param_shapes) - 1), label="split")
    second = {"lr": settings["lr"] / 2, "momentum": 0.5, "centered": not settings["centered"]}
    kind = "RMSprop"
    assert_matches_torch(torch, kind, settings, split, second, dtype, param_shapes, steps, seed)


def test_first_step_by_hand():
    """v = (1 - α) g², so θ moves by γ g / (√(1 - α) |g| + ε)."""
    p = Parameter(np.array([1.0, -2.0, 0.5]))
    g = np.array([0.3, -4.0, 0.0])
    p.grad = g.copy()
    RMSprop([p], lr=0.1, alpha=0.9, eps=1.0).step()
    expected = np.array([1.0, -2.0, 0.5]) - 0.1 * g / (np.sqrt(0.1) * np.abs(g) + 1.0)
    np.testing.assert_allclose(p.data, expected, rtol=1e-15)


def test_centred_with_a_constant_gradient_divides_by_eps_only():
    """A constant gradient has no variance: v - ḡ² = 0 once ḡ has caught up (α = 0), so the
    step is γ g / ε."""
    p = Parameter(np.array([0.0, 0.0]))
    optimizer = RMSprop([p], lr=0.5, alpha=0.0, eps=2.0, centered=True)
    for _ in range(3):
        p.grad = np.array([1.0, -3.0])
        optimizer.step()
    np.testing.assert_allclose(p.data, -3 * 0.5 * np.array([1.0, -3.0]) / 2.0)


def test_momentum_accumulates_the_normalised_step():
    """With α = 1 the average stays 0, so d = ε and the buffer is a geometric sum of g / ε."""
    p = Parameter(np.array([0.0]))
    optimizer = RMSprop([p], lr=1.0, alpha=1.0, eps=0.5, momentum=0.5)
    for _ in range(3):
        p.grad = np.array([1.0])
        optimizer.step()
    # buffers 2, 3, 3.5: θ = -(2 + 3 + 3.5)
    np.testing.assert_allclose(p.data, [-8.5])
    assert set(optimizer.state[p]) == {"step", "square_avg", "momentum_buffer"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("settings", [dict(momentum=0.9), dict(centered=True, weight_decay=0.1)])
def test_resume_through_tinynet_io_is_exact(tmp_path, settings, dtype):
    assert_resume_is_exact(tmp_path, RMSprop, dict(alpha=0.9, eps=1.0, **settings), dtype)


def test_loading_a_state_without_the_momentum_buffer_names_it():
    p = Parameter(np.zeros(3))
    plain = RMSprop([p])
    p.grad = np.ones(3)
    plain.step()
    saved = plain.state_dict()
    saved["param_groups"][0]["momentum"] = 0.9  # a buffer is then expected, and missing
    with pytest.raises(ValueError, match=r"parameter 0: state holds \['square_avg', 'step'\]"):
        RMSprop([Parameter(np.zeros(3))]).load_state_dict(saved)


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("lr", -0.1, r"RMSprop: invalid learning rate lr -0.1; it must be >= 0.0"),
        ("alpha", 1.5, r"RMSprop: invalid alpha 1.5; it must be in \[0.0, 1.0\]"),
        ("eps", float("nan"), r"RMSprop: invalid epsilon eps nan"),
        ("momentum", -1, r"RMSprop: invalid momentum -1"),
        ("weight_decay", "0.1", r"RMSprop: weight_decay must be a real number; got '0.1'"),
    ],
)
def test_bad_arguments(option, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        RMSprop([Parameter(np.zeros(2))], **{option: value})


def test_the_trainer_builds_the_papers_rmsprop():
    from tinynet.train import DEFAULT_LR, OPTIMIZERS

    optimizer = OPTIMIZERS["rmsprop"]([Parameter(np.zeros(2))], DEFAULT_LR["rmsprop"])
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, RMSprop)
    assert (group["alpha"], group["eps"], group["lr"]) == (0.9, 1.0, 0.045)
