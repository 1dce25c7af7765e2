"""SGD, Adam, AdamW, clip_grad_norm_ and ExponentialMovingAverage: PyTorch parity over many
steps (some parameters without a gradient in some steps), closed-form checks, exact resumption
through tinynet.io, and errors."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet.io
import tinynet.optim
from tinynet.nn import BatchNorm2d, Dropout, Module, Parameter
from tinynet.optim import SGD, Adam, AdamW, ExponentialMovingAverage, clip_grad_norm_, update_bn
from tinynet.rng import default_generator

from strategies import away_from_zero, seeds, shapes, uniform

# The same rule in a different rounding order (PyTorch fuses some multiply-adds): float64 agrees
# to ~1e-12 relative after many steps, float32 to 1e-5.
TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}
DTYPES = [np.float64, np.float32]

# ---------------------------------------------------------------- strategies and helpers

small = st.floats(0.0, 0.2)
weight_decays = st.just(0.0) | small


@st.composite
def sgd_settings(draw):
    momentum = draw(st.sampled_from([0.0, 0.9]) | st.floats(0.0, 0.99))
    nesterov = momentum > 0 and draw(st.booleans())
    dampening = 0.0 if nesterov else draw(st.sampled_from([0.0, 0.5]) | st.floats(0.0, 1.0))
    return dict(
        lr=draw(st.floats(0.0, 0.5)),
        momentum=momentum,
        dampening=dampening,
        weight_decay=draw(weight_decays),
        nesterov=nesterov,
        maximize=draw(st.booleans()),
    )


@st.composite
def adam_settings(draw):
    # beta1 above and below 0.5 exercises both forms of PyTorch's lerp.
    return dict(
        lr=draw(st.floats(0.0, 0.1)),
        betas=(draw(st.floats(0.0, 0.99)), draw(st.floats(0.0, 0.999))),
        eps=draw(st.sampled_from([1e-8, 1e-3])),
        weight_decay=draw(weight_decays),
        amsgrad=draw(st.booleans()),
        maximize=draw(st.booleans()),
    )


SETTINGS = {"SGD": sgd_settings(), "Adam": adam_settings(), "AdamW": adam_settings()}


def make_groups(params, split, second_group):
    """All params in one group, or the first ``split`` in group 0 and the rest in a group with
    its own hyperparameters."""
    if not split or split >= len(params):
        return list(params)
    return [{"params": params[:split]}, {"params": params[split:], **second_group}]


def gradient_sequence(seed, param_shapes, steps, dtype):
    """For each step, a gradient per parameter, or None for about a quarter of them."""
    rng = np.random.default_rng(seed)
    sequence = []
    for _ in range(steps):
        grads = [
            None if rng.random() < 0.25 else rng.uniform(-2, 2, shape).astype(dtype)
            for shape in param_shapes
        ]
        sequence.append(grads)
    return sequence


def run(optimizer, params, sequence):
    for grads in sequence:
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.copy()
        optimizer.step()


def params_from(arrays):
    return [Parameter(np.array(a, copy=True)) for a in arrays]


# ---------------------------------------------------------------- PyTorch parity


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW"])
@given(
    data=st.data(),
    param_shapes=st.lists(shapes(max_dims=3), min_size=1, max_size=3),
    steps=st.integers(1, 25),
    seed=seeds,
)
def test_matches_torch_over_many_steps(torch, kind, dtype, data, param_shapes, steps, seed):
    settings = data.draw(SETTINGS[kind], label="settings")
    split = data.draw(st.integers(0, len(param_shapes) - 1), label="split")
    second = {"lr": settings["lr"] / 2, "weight_decay": data.draw(small, label="wd2")}
    assert_matches_torch(torch, kind, settings, split, second, dtype, param_shapes, steps, seed)


def assert_matches_torch(torch, kind, settings, split, second, dtype, param_shapes, steps, seed):
    """tinynet.optim.<kind> and torch.optim.<kind> agree on the parameters and every state
    entry after ``steps`` steps of random gradients (some absent), with the first ``split``
    parameters in a group of their own with the ``second`` group's hyperparameters."""
    initial = [uniform(seed + i, shape, dtype=dtype) for i, shape in enumerate(param_shapes)]
    ours = params_from(initial)
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in initial]
    optimizer = getattr(tinynet.optim, kind)(make_groups(ours, split, second), **settings)
    reference = getattr(torch.optim, kind)(make_groups(theirs, split, second), **settings)

    for grads in gradient_sequence(seed, param_shapes, steps, dtype):
        for p, tp, g in zip(ours, theirs, grads):
            p.grad = None if g is None else g.copy()
            tp.grad = None if g is None else torch.tensor(g)
        optimizer.step()
        reference.step()

    for p, tp in zip(ours, theirs):
        assert p.dtype == dtype
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOLERANCE[dtype])
        ours_state, their_state = optimizer.state.get(p, {}), reference.state.get(tp, {})
        assert set(ours_state) == set(their_state)
        for name, value in their_state.items():
            if name == "step":
                assert ours_state["step"] == int(value.item())
            else:
                assert ours_state[name].dtype == dtype
                np.testing.assert_allclose(ours_state[name], value.numpy(), **TOLERANCE[dtype])


# ---------------------------------------------------------------- closed forms (no PyTorch)


def test_sgd_without_momentum_is_p_minus_lr_g():
    rng = np.random.default_rng(0)
    p = Parameter(rng.normal(size=(3, 4)))
    optimizer = SGD([p], lr=0.3)
    for _ in range(5):
        before, p.grad = p.data.copy(), rng.normal(size=(3, 4))
        optimizer.step()
        np.testing.assert_array_equal(p.data, before - 0.3 * p.grad)
    assert optimizer.state == {}


@pytest.mark.parametrize("dampening", [0.0, 0.3])
def test_momentum_is_a_geometric_sum_on_a_constant_gradient(dampening):
    # b_1 = g, b_t = mu b_{t-1} + (1 - tau) g = (mu^(t-1) + (1 - tau)(1 - mu^(t-1))/(1 - mu)) g
    lr, mu, g = 0.1, 0.9, np.array([1.0, -2.0, 0.5])
    p = Parameter(np.zeros(3))
    optimizer = SGD([p], lr=lr, momentum=mu, dampening=dampening)
    expected = np.zeros(3)
    for t in range(1, 31):
        p.grad = g.copy()
        optimizer.step()
        buffer = (mu ** (t - 1) + (1 - dampening) * (1 - mu ** (t - 1)) / (1 - mu)) * g
        expected -= lr * buffer
        np.testing.assert_allclose(optimizer.state[p]["momentum_buffer"], buffer, rtol=1e-13)
        np.testing.assert_allclose(p.data, expected, rtol=1e-13)


def test_nesterov_looks_ahead_by_momentum_times_the_buffer():
    lr, mu, g = 0.1, 0.9, np.array([2.0, -1.0])
    p = Parameter(np.zeros(2))
    optimizer = SGD([p], lr=lr, momentum=mu, nesterov=True)
    expected = np.zeros(2)
    for t in range(1, 11):
        p.grad = g.copy()
        optimizer.step()
        buffer = g * (1 - mu**t) / (1 - mu)
        expected -= lr * (g + mu * buffer)
        np.testing.assert_allclose(p.data, expected, rtol=1e-13)


def test_sgd_weight_decay_and_maximize():
    p, q = Parameter(np.array([1.0, -2.0])), Parameter(np.array([1.0, -2.0]))
    p.grad, q.grad = np.array([0.5, 0.5]), np.array([-0.5, -0.5])
    SGD([p], lr=0.1, weight_decay=0.2).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.1 * (0.5 + 0.2), -2.0 - 0.1 * (0.5 - 0.4)])
    SGD([q], lr=0.1, weight_decay=0.2, maximize=True).step()
    np.testing.assert_array_equal(q.data, p.data)  # maximising -f is minimising f


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_adam_first_step_moves_each_weight_by_lr_sign_g(cls):
    p0 = np.random.default_rng(1).normal(size=(4, 5))
    g = away_from_zero(2, (4, 5), low=1e-3)
    p = Parameter(p0.copy())
    p.grad = g.copy()
    cls([p], lr=0.01, weight_decay=0.0).step()
    # m/(sqrt(v) + eps) after bias correction is g/(|g| + eps): sign(g) up to eps/|g| <= 1e-5.
    np.testing.assert_allclose(p.data - p0, -0.01 * np.sign(g), rtol=1e-5, atol=0)
    state = cls([Parameter(p0)], lr=0.01).state
    assert state == {}


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_with_zero_gradient_only_decays(dtype):
    lr, wd = 0.01, 0.1
    p = Parameter(np.array([1.0, -3.0, 0.25], dtype=dtype))
    optimizer = AdamW([p], lr=lr, weight_decay=wd)
    for _ in range(20):
        p.grad = np.zeros(3, dtype=dtype)
        optimizer.step()
    expected = np.array([1.0, -3.0, 0.25]) * (1 - lr * wd) ** 20
    np.testing.assert_allclose(p.data, expected, **TOLERANCE[dtype])
    # Adam's L2 decay instead goes through the normalised gradient: a step of about lr.
    q = Parameter(np.array([1.0], dtype=dtype))
    q.grad = np.zeros(1, dtype=dtype)
    Adam([q], lr=lr, weight_decay=wd).step()
    np.testing.assert_allclose(q.data, [1.0 - lr], rtol=1e-6)


def test_amsgrad_normalises_by_the_largest_second_moment():
    p = Parameter(np.array([0.0]))
    optimizer = Adam([p], lr=0.1, betas=(0.0, 0.5), amsgrad=True)
    for g in [4.0, 0.0]:
        p.grad = np.array([g])
        optimizer.step()
    state = optimizer.state[p]
    assert state["exp_avg_sq"][0] == 4.0 and state["max_exp_avg_sq"][0] == 8.0
    assert state["step"] == 2


def test_parameters_without_gradient_are_skipped():
    p, q = Parameter(np.ones(3)), Parameter(np.ones(2))
    optimizer = Adam([p, q], lr=0.1)
    for _ in range(3):
        p.grad, q.grad = np.ones(3), None
        optimizer.step()
    np.testing.assert_array_equal(q.data, np.ones(2))
    assert q not in optimizer.state and optimizer.state[p]["step"] == 3
    q.grad = np.ones(2)
    optimizer.step()
    assert optimizer.state[q]["step"] == 1  # q's first step: full bias correction
    np.testing.assert_allclose(q.data, np.ones(2) - 0.1, rtol=1e-6)


@pytest.mark.parametrize(
    "cls, settings",
    [
        (SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)),
        (SGD, dict(lr=0.1, momentum=0.9, dampening=0.5, maximize=True)),
        (Adam, dict(weight_decay=1e-2, amsgrad=True, maximize=True)),
        (AdamW, dict(amsgrad=True)),
    ],
)
def test_float32_stays_float32_in_place_and_gradients_untouched(cls, settings):
    rng = np.random.default_rng(3)
    p = Parameter(rng.normal(size=(6, 7)).astype(np.float32))
    data = p.data
    optimizer = cls([p], **settings)
    for _ in range(3):
        grad = rng.normal(size=(6, 7)).astype(np.float32)
        p.grad = grad
        kept = grad.copy()
        optimizer.step()
        np.testing.assert_array_equal(p.grad, kept)
    assert p.data is data and p.data.dtype == np.float32
    for name, value in optimizer.state[p].items():
        assert name == "step" or value.dtype == np.float32, name


def test_param_groups_have_their_own_hyperparameters():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    optimizer = SGD([{"params": [a]}, {"params": b, "lr": 0.5}], lr=0.1)
    a.grad, b.grad = np.ones(2), np.ones(2)
    optimizer.step()
    np.testing.assert_allclose(a.data, [-0.1, -0.1])
    np.testing.assert_allclose(b.data, [-0.5, -0.5])
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.5]
    c = Parameter(np.zeros(1))
    optimizer.add_param_group({"params": [c], "momentum": 0.9})
    assert optimizer.param_groups[2]["lr"] == 0.1 and optimizer.param_groups[2]["momentum"] == 0.9


def test_zero_grad_sets_gradients_to_none_and_step_returns_the_closure_loss():
    p = Parameter(np.ones(2))
    p.grad = np.ones(2)
    optimizer = SGD([p], lr=0.1)
    optimizer.zero_grad()
    assert p.grad is None

    def closure():
        assert tinynet.is_grad_enabled()
        p.grad = np.full(2, 2.0)
        return 7.0

    with tinynet.no_grad():
        assert optimizer.step(closure) == 7.0
    np.testing.assert_allclose(p.data, [0.8, 0.8])


def test_a_gradient_of_the_wrong_shape_is_an_error_not_a_broadcast():
    p = Parameter(np.zeros(3))
    p.grad = np.ones(1)
    with pytest.raises(
        ValueError, match=r"parameter of shape \(3,\) has a gradient of shape \(1,\)"
    ):
        SGD([p], lr=0.1).step()
    np.testing.assert_array_equal(p.data, np.zeros(3))


def test_accepts_module_parameters_and_a_generator():
    from tinynet.nn import Linear

    model = Linear(3, 2)
    optimizer = SGD(model.parameters(), lr=0.1)
    assert len(optimizer.param_groups[0]["params"]) == 2


# ---------------------------------------------------------------- state dicts and resumption

RESUME_CASES = [
    (SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)),
    (SGD, dict(lr=0.05, momentum=0.5, dampening=0.2)),
    (Adam, dict(lr=0.01, amsgrad=True, weight_decay=1e-3)),
    (AdamW, dict(lr=0.01, betas=(0.8, 0.99))),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, settings", RESUME_CASES)
def test_resume_through_tinynet_io_is_exact(tmp_path, cls, settings, dtype):
    assert_resume_is_exact(tmp_path, cls, settings, dtype)


def assert_resume_is_exact(tmp_path, cls, settings, dtype):
    """12 steps straight equal 7 steps, a state dict saved and loaded through tinynet.io into a
    fresh optimiser (built with another lr), then 5 more steps: bit for bit."""
    param_shapes = [(3, 4), (5,), (2, 1, 3)]
    sequence = gradient_sequence(11, param_shapes, 12, dtype)
    initial = [uniform(i, shape, dtype=dtype) for i, shape in enumerate(param_shapes)]
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.02}]

    straight = params_from(initial)
    run(cls(groups(straight), **settings), straight, sequence)

    first = params_from(initial)
    optimizer = cls(groups(first), **settings)
    run(optimizer, first, sequence[:7])
    tinynet.io.save(
        {"optimizer": optimizer.state_dict(), "params": [p.data for p in first]},
        tmp_path / "checkpoint.npz",
    )
    checkpoint = tinynet.io.load(tmp_path / "checkpoint.npz")
    resumed = params_from(checkpoint["params"])
    fresh = cls(groups(resumed), lr=0.5)
    fresh.load_state_dict(checkpoint["optimizer"])
    assert fresh.param_groups[1]["lr"] == 0.02 and fresh.defaults["lr"] == 0.5
    run(fresh, resumed, sequence[7:])
    for a, b in zip(straight, resumed):
        assert b.dtype == dtype
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_is_a_copy_keyed_by_position():
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    optimizer = SGD([p, q], lr=0.1, momentum=0.9)
    q.grad = np.ones(3)
    optimizer.step()
    state = optimizer.state_dict()
    assert list(state["state"]) == ["1"]
    assert state["param_groups"][0]["params"] == [0, 1]
    state["state"]["1"]["momentum_buffer"][:] = 5.0
    np.testing.assert_array_equal(optimizer.state[q]["momentum_buffer"], np.ones(3))


def stepped_adam(shapes_, steps=2):
    params = [Parameter(np.ones(shape)) for shape in shapes_]
    optimizer = Adam(params, lr=0.1)
    for _ in range(steps):
        for p in params:
            p.grad = np.ones(p.shape)
        optimizer.step()
    return optimizer


def assert_unchanged(optimizer, before):
    after = optimizer.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert after["state"].keys() == before["state"].keys()
    for key, entry in before["state"].items():
        for name, value in entry.items():
            np.testing.assert_array_equal(after["state"][key][name], value)


@pytest.mark.parametrize(
    "saved_shapes, match",
    [
        ([(2, 3), (4, 4)], r"parameter 1: state 'exp_avg' has shape \(4, 4\), the parameter"),
        ([(2, 3)], r"param group 0: 1 parameter\(s\) in the state dict, 2 in this optimiser"),
        ([(2, 3), (4,), (1,)], r"3 parameter\(s\) in the state dict, 2"),
    ],
)
def test_load_mismatch_names_it_and_changes_nothing(saved_shapes, match):
    target = stepped_adam([(2, 3), (4,)], steps=1)
    target.param_groups[0]["lr"] = 0.05
    before = target.state_dict()
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(stepped_adam(saved_shapes).state_dict())
    assert_unchanged(target, before)
    assert target.param_groups[0]["lr"] == 0.05


def test_load_state_of_another_optimiser_or_group_count_fails_clearly():
    target = stepped_adam([(2,)])
    before = target.state_dict()
    p = Parameter(np.ones(2))
    sgd = SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(2)
    sgd.step()
    with pytest.raises(ValueError, match="'betas'.*another kind of optimiser"):
        target.load_state_dict(sgd.state_dict())
    two_groups = Adam([{"params": [Parameter(np.ones(2))]}, {"params": [Parameter(np.ones(1))]}])
    with pytest.raises(ValueError, match="2 parameter group"):
        target.load_state_dict(two_groups.state_dict())
    with pytest.raises(ValueError, match="keys 'param_groups' and 'state'"):
        target.load_state_dict({"state": {}})
    assert_unchanged(target, before)
    plain = SGD([Parameter(np.ones(2))], lr=0.1)
    with pytest.raises(ValueError, match=r"state holds \['momentum_buffer'\]"):
        plain.load_state_dict(
            {**sgd.state_dict(), "param_groups": plain.state_dict()["param_groups"]}
        )


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda ps: SGD(ps, lr=-0.1), ValueError, r"invalid learning rate lr -0\.1"),
        (lambda ps: SGD(ps, lr=float("nan")), ValueError, "invalid learning rate"),
        (lambda ps: SGD(ps, lr=0.1, momentum=-0.5), ValueError, "invalid momentum"),
        (lambda ps: SGD(ps, lr=0.1, weight_decay=-1), ValueError, "invalid weight_decay"),
        (lambda ps: SGD(ps, lr=0.1, nesterov=True), ValueError, "Nesterov.*momentum > 0"),
        (
            lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
            ValueError,
            "Nesterov.*zero dampening",
        ),
        (lambda ps: SGD(ps, lr="fast"), TypeError, "lr must be a real number"),
        (lambda ps: Adam(ps, lr=-1e-3), ValueError, "Adam: invalid learning rate"),
        (lambda ps: Adam(ps, betas=(1.0, 0.999)), ValueError, r"beta parameter at index 0.*\[0"),
        (lambda ps: Adam(ps, betas=(0.9, -0.1)), ValueError, "beta parameter at index 1"),
        (lambda ps: Adam(ps, betas=(0.9,)), ValueError, "betas must be a pair"),
        (lambda ps: Adam(ps, eps=-1e-8), ValueError, "invalid epsilon"),
        (lambda ps: AdamW(ps, weight_decay=-0.01), ValueError, "AdamW: invalid weight_decay"),
        (
            lambda ps: SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": -1}], lr=0.1),
            ValueError,
            r"param group 1\): invalid learning rate",
        ),
        (lambda ps: SGD([], lr=0.1), ValueError, "empty parameter list"),
        (lambda ps: SGD(ps[0], lr=0.1), TypeError, "got a single Parameter"),
        (lambda ps: SGD(ps + ps[:1], lr=0.1), ValueError, "more than once"),
        (
            lambda ps: SGD([{"params": ps}, {"params": ps[:1]}], lr=0.1),
            ValueError,
            "more than one parameter group",
        ),
        (lambda ps: SGD([np.zeros(2)], lr=0.1), TypeError, "entry 0 is a ndarray"),
        (lambda ps: SGD([tinynet.Tensor(np.arange(2))], lr=0.1), TypeError, "dtype int"),
        (lambda ps: SGD(set(ps), lr=0.1), TypeError, "ordered sequence"),
        (lambda ps: SGD([ps[0], {"params": ps[1:]}], lr=0.1), TypeError, "entry 1 is a dict"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make([Parameter(np.zeros(2)), Parameter(np.zeros(3))])


# ---------------------------------------------------------------- clip_grad_norm_


@pytest.mark.parametrize("dtype", DTYPES)
@given(
    data=st.data(),
    param_shapes=st.lists(shapes(max_dims=3), min_size=1, max_size=4),
    norm_type=st.sampled_from([2.0, 1.0, 3.0, math.inf, "inf"]),
    max_norm=st.floats(0.0, 10.0),
    seed=seeds,
)
def test_clip_grad_norm_matches_torch(torch, dtype, data, param_shapes, norm_type, max_norm, seed):
    grads = gradient_sequence(seed, param_shapes, 1, dtype)[0]
    ours = [Parameter(np.zeros(shape, dtype=dtype)) for shape in param_shapes]
    theirs = [
        torch.zeros(shape, dtype=getattr(torch, np.dtype(dtype).name)) for shape in param_shapes
    ]
    for p, tp, g in zip(ours, theirs, grads):
        p.grad = None if g is None else g.copy()
        tp.grad = None if g is None else torch.tensor(g)
    total = clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(total, expected.item(), rtol=tolerance["rtol"] * 10)
    for p, tp in zip(ours, theirs):
        if tp.grad is None:
            assert p.grad is None
        else:
            assert p.grad.dtype == dtype
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), **tolerance)


def test_clip_grad_norm_closed_form():
    p, q = Parameter(np.zeros(1)), Parameter(np.zeros(1))
    p.grad, q.grad = np.array([3.0]), np.array([-4.0])
    assert clip_grad_norm_([p, q], max_norm=10.0) == 5.0
    np.testing.assert_array_equal([p.grad[0], q.grad[0]], [3.0, -4.0])  # under the limit
    assert clip_grad_norm_([p, q], max_norm=1.0) == 5.0
    np.testing.assert_allclose([p.grad[0], q.grad[0]], np.array([3.0, -4.0]) / (5.0 + 1e-6))
    p.grad, q.grad = np.array([3.0]), np.array([-4.0])
    assert clip_grad_norm_([p, q], 2.0, norm_type="inf") == 4.0
    assert clip_grad_norm_(p, 2.0, norm_type=1) == pytest.approx(3.0 * 2.0 / (4.0 + 1e-6))
    assert clip_grad_norm_([Parameter(np.zeros(2))], 1.0) == 0.0  # no gradients


def test_clip_grad_norm_non_finite():
    p = Parameter(np.zeros(3))
    p.grad = np.array([1.0, np.inf, 2.0])
    with pytest.raises(RuntimeError, match="non-finite.*error_if_nonfinite=False"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(p.grad, [1.0, np.inf, 2.0])  # nothing scaled
    p.grad = np.array([1.0, np.nan, 2.0])
    assert math.isnan(clip_grad_norm_([p], 1.0))
    assert np.isnan(p.grad).all()  # as PyTorch: scaled by a NaN coefficient


@pytest.mark.parametrize(
    "max_norm, norm_type, match",
    [(-1.0, 2.0, "max_norm must be >= 0"), (1.0, 0.0, "norm_type must be positive")],
)
def test_clip_grad_norm_bad_arguments(max_norm, norm_type, match):
    with pytest.raises(ValueError, match=match):
        clip_grad_norm_([Parameter(np.zeros(2))], max_norm, norm_type)


# ---------------------------------------------------------------- ExponentialMovingAverage


class Tiny(Module):
    """A weight, a floating buffer and an integer buffer, like a BatchNorm."""

    def __init__(self):
        super().__init__()
        self.weight = Parameter(np.array([1.0, -1.0]))
        self.register_buffer("running_mean", np.array([0.0, 10.0]))
        self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))


def test_ema_without_warmup_is_the_plain_recurrence():
    p = Parameter(np.array([1.0]))
    ema = ExponentialMovingAverage([p], decay=0.9, warmup=False)
    for value in [2.0, 3.0]:
        p.data[...] = value
        ema.update()
    # 0.9 * 1 + 0.1 * 2 = 1.1; 0.9 * 1.1 + 0.1 * 3 = 1.29
    np.testing.assert_allclose(ema.shadow["0"], [1.29], rtol=1e-15)
    assert ema.num_updates == 2


def test_ema_warmup_uses_min_of_decay_and_one_plus_n_over_ten_plus_n():
    p = Parameter(np.array([0.0]))
    ema = ExponentialMovingAverage([p], decay=0.2)
    assert [ema.decay_at(n) for n in (1, 2, 8)] == [2 / 11, 0.2, 0.2]
    assert ExponentialMovingAverage([p], decay=0.999).decay_at(8990) == pytest.approx(0.999)
    p.data[...] = 11.0
    ema.update()  # d = 2/11: 2/11 * 0 + 9/11 * 11 = 9
    np.testing.assert_allclose(ema.shadow["0"], [9.0], rtol=1e-15)
    p.data[...] = 4.0
    ema.update()  # d = min(0.2, 3/12) = 0.2: 0.2 * 9 + 0.8 * 4 = 5
    np.testing.assert_allclose(ema.shadow["0"], [5.0], rtol=1e-15)


def test_ema_averages_float_buffers_and_copies_integer_ones():
    model = Tiny()
    ema = ExponentialMovingAverage(model, decay=0.5, warmup=False)
    assert list(ema.shadow) == list(model.state_dict())
    model.weight.data[...] = [3.0, 1.0]
    model.running_mean[...] = [2.0, 0.0]
    model.num_batches_tracked += 7
    ema.update()
    np.testing.assert_allclose(ema.shadow["weight"], [2.0, 0.0])
    np.testing.assert_allclose(ema.shadow["running_mean"], [1.0, 5.0])
    assert ema.shadow["num_batches_tracked"] == 7
    only_params = ExponentialMovingAverage(model, decay=0.5, use_buffers=False)
    assert list(only_params.shadow) == ["weight"]
    with only_params.average_parameters():
        np.testing.assert_array_equal(model.running_mean, [2.0, 0.0])  # live buffers stay


def test_ema_swaps_the_average_in_and_restores_exactly_even_on_error():
    model = Tiny()
    ema = ExponentialMovingAverage(model, decay=0.5, warmup=False)
    model.weight.data[...] = [0.1, 0.7]
    model.running_mean[...] = [1 / 3, 2 / 3]
    ema.update()
    live = {name: np.array(value) for name, value in model.state_dict().items()}
    weight_array = model.weight.data
    with ema.average_parameters():
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(value, ema.shadow[name])
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, live[name])
    assert model.weight.data is weight_array
    with pytest.raises(KeyError, match="evaluation failed"):
        with ema.average_parameters():
            model.weight.data *= 100  # even if evaluation scribbles on the weights
            raise KeyError("evaluation failed")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, live[name])
    model.load_state_dict(ema.shadow)  # the average exports as a state dict
    np.testing.assert_array_equal(model.weight.data, ema.shadow["weight"])


def test_ema_keeps_float32_and_copy_to():
    p = Parameter(np.array([1.0, 2.0], dtype=np.float32))
    ema = ExponentialMovingAverage([p], decay=0.9)
    p.data *= 3
    ema.update()
    assert ema.shadow["0"].dtype == np.float32
    ema.copy_to()
    np.testing.assert_array_equal(p.data, ema.shadow["0"])


def test_ema_resume_through_tinynet_io_is_exact(tmp_path):
    rng = np.random.default_rng(5)
    values = rng.normal(size=(10, 2))

    def train(ema, model, rows):
        for row in rows:
            model.weight.data[...] = row
            model.running_mean[...] = row[::-1]
            model.num_batches_tracked += 1
            ema.update()

    straight_model = Tiny()
    straight = ExponentialMovingAverage(straight_model, decay=0.95)
    train(straight, straight_model, values)

    model = Tiny()
    ema = ExponentialMovingAverage(model, decay=0.95)
    train(ema, model, values[:6])
    tinynet.io.save({"ema": ema.state_dict(), "model": model.state_dict()}, tmp_path / "c.npz")
    checkpoint = tinynet.io.load(tmp_path / "c.npz")
    resumed_model = Tiny()
    resumed_model.load_state_dict(checkpoint["model"])
    resumed = ExponentialMovingAverage(resumed_model, decay=0.5, warmup=False)
    resumed.load_state_dict(checkpoint["ema"])
    assert (resumed.decay, resumed.warmup, resumed.num_updates) == (0.95, True, 6)
    train(resumed, resumed_model, values[6:])
    for name, value in straight.shadow.items():
        np.testing.assert_array_equal(resumed.shadow[name], value)


def test_ema_load_mismatch_and_bad_arguments():
    ema = ExponentialMovingAverage(Tiny(), decay=0.9)
    before = ema.state_dict()
    other = ExponentialMovingAverage([Parameter(np.zeros(3))]).state_dict()
    with pytest.raises(ValueError, match=r"missing: weight[\s\S]*unexpected: 0"):
        ema.load_state_dict(other)
    wrong_shape = {**before, "shadow": {**before["shadow"], "weight": np.zeros(5)}}
    with pytest.raises(ValueError, match=r"weight: shape \(5,\) in the state dict, \(2,\)"):
        ema.load_state_dict(wrong_shape)
    with pytest.raises(ValueError, match="expected keys"):
        ema.load_state_dict({"shadow": {}})
    without_count = {key: value for key, value in before.items() if key != "num_updates"}
    with pytest.raises(ValueError, match=r"missing \['num_updates'\], unexpected \[\]$"):
        ema.load_state_dict(without_count)  # the warm-up cannot go on without its step count
    after = ema.state_dict()
    for name, value in before["shadow"].items():
        np.testing.assert_array_equal(after["shadow"][name], value)
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\]"):
        ExponentialMovingAverage(Tiny(), decay=1.5)
    with pytest.raises(ValueError, match="empty parameter list"):
        ExponentialMovingAverage([])
    with pytest.raises(TypeError, match="entry 0 is not a floating-point Parameter"):
        ExponentialMovingAverage([np.zeros(2)])
    model = Tiny()
    ema = ExponentialMovingAverage(model)
    model.weight = Parameter(np.zeros(4))
    with pytest.raises(RuntimeError, match="no longer matches"):
        ema.update()


class ScaledNorm(Module):
    """x -> BatchNorm(scale · x) -> dropout, plus a BatchNorm run in training mode only (as
    GoogLeNet's aux heads)."""

    def __init__(self):
        super().__init__()
        self.scale = Parameter(np.array([1.0]))
        self.norm = BatchNorm2d(2, dtype=np.float64)
        self.aux = BatchNorm2d(2, dtype=np.float64)
        self.drop = Dropout(0.5)

    def forward(self, x):
        y = self.norm(x * self.scale)
        if self.training:
            self.aux(y)
        return self.drop(y)


# batch k, channel c: (2, 2, 1, 2) arrays; channel 0 holds 1, 3, 5, 7 then 6, 6, 6, 10
BATCHES = [
    np.array([[[[1.0, 3.0]], [[0.0, 0.0]]], [[[5.0, 7.0]], [[2.0, 2.0]]]]),
    np.array([[[[6.0, 6.0]], [[1.0, 1.0]]], [[[6.0, 10.0]], [[1.0, 5.0]]]]),
]
# batch means: channel 0: 4, 7; channel 1: 1, 2. Unbiased variances (sum of squares / 3):
# channel 0: (9 + 1 + 1 + 9) / 3 = 20/3 and (1 + 1 + 1 + 9) / 3 = 4; channel 1: 4/3 and 4.
MEAN = [(4 + 7) / 2, (1 + 2) / 2]
VAR = [(20 / 3 + 4) / 2, (4 / 3 + 4) / 2]


def test_update_bn_averages_the_batch_statistics_and_restores_everything_else():
    model = ScaledNorm()
    model.norm.num_batches_tracked[...] = 7
    model.aux.running_mean[...] = [9.0, 9.0]
    model.eval().norm.train()  # a mix of modes, to be restored as it was
    generator = default_generator().bit_generator.state
    update_bn([(tinynet.tensor(x), None) for x in BATCHES], model)  # DataLoader-style pairs
    np.testing.assert_allclose(model.norm.running_mean, MEAN, rtol=1e-14)
    np.testing.assert_allclose(model.norm.running_var, VAR, rtol=1e-14)
    assert model.norm.num_batches_tracked == 7 and model.norm.momentum == 0.1
    np.testing.assert_array_equal(model.aux.running_mean, [9.0, 9.0])  # not run in eval mode
    assert [m.training for m in model.modules()] == [False, True, False, False]
    assert default_generator().bit_generator.state == generator  # dropout drew nothing

    update_bn([BATCHES[1]], model)  # bare inputs; the old statistics are forgotten
    np.testing.assert_allclose(model.norm.running_mean, [7.0, 2.0], rtol=1e-14)
    with pytest.raises(ValueError, match="update_bn: batches is empty"):
        update_bn([], model)
    np.testing.assert_allclose(model.norm.running_mean, [7.0, 2.0], rtol=1e-14)
    assert model.norm.num_batches_tracked == 7
    update_bn(iter(()), Tiny())  # no BatchNorm: nothing to measure, no error


def test_ema_update_bn_measures_the_statistics_of_the_averaged_weights():
    model = ScaledNorm()
    ema = ExponentialMovingAverage(model, decay=0.5, warmup=False)
    model.scale.data[...] = 3.0
    model.norm.running_mean[...] = [-1.0, -1.0]
    model.norm.num_batches_tracked += 4
    ema.update()  # averaged scale (1 + 3) / 2 = 2
    live = {name: np.array(value) for name, value in model.state_dict().items()}
    ema.update_bn(BATCHES)
    # BatchNorm sees 2x: means double, variances quadruple
    np.testing.assert_allclose(ema.shadow["norm.running_mean"], 2 * np.array(MEAN), rtol=1e-14)
    np.testing.assert_allclose(ema.shadow["norm.running_var"], 4 * np.array(VAR), rtol=1e-14)
    np.testing.assert_array_equal(ema.shadow["scale"], [2.0])
    assert ema.shadow["norm.num_batches_tracked"] == 4  # counts stay the live model's
    np.testing.assert_array_equal(ema.shadow["aux.running_mean"], [0.0, 0.0])  # not reached
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, live[name], err_msg=name)
    with pytest.raises(ValueError, match="keeps no buffers"):
        ExponentialMovingAverage(model, use_buffers=False).update_bn(BATCHES)
    with pytest.raises(ValueError, match="keeps no buffers"):
        ExponentialMovingAverage(model.parameters()).update_bn(BATCHES)
