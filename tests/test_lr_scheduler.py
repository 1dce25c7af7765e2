"""StepLR, CosineAnnealingLR, LinearLR/LinearWarmup and SequentialLR: the lr sequences against
PyTorch's schedulers over many steps, closed forms, exact resumption through tinynet.io, errors."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet.io
from tinynet.nn import Parameter
from tinynet.optim import (
    SGD,
    Adam,
    CosineAnnealingLR,
    LinearLR,
    LinearWarmup,
    SequentialLR,
    StepLR,
)

# PyTorch updates the lr recursively, tinynet in closed form: the same values up to rounding
# (the recursion near a cosine's minimum loses a few more digits).
RTOL = 1e-10

BASE_LRS = [0.1, 0.025]

# ---------------------------------------------------------------- helpers


def optimizers(torch, base_lrs=BASE_LRS):
    """A tinynet SGD and a torch SGD with one param group per base lr."""
    ours = SGD([{"params": [Parameter(np.zeros(1))], "lr": lr} for lr in base_lrs], lr=1.0)
    theirs = torch.optim.SGD(
        [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in base_lrs], lr=1.0
    )
    return ours, theirs


def assert_same_sequence(ours, theirs, steps):
    """Step both schedulers ``steps`` times; their lrs must agree at every step (and with the
    optimisers' param groups)."""
    for step in range(steps + 1):
        if step:
            theirs.optimizer.step()  # no gradients: only tells torch the order is right
            ours.step()
            theirs.step()
        expected = theirs.get_last_lr()
        np.testing.assert_allclose(ours.get_last_lr(), expected, rtol=RTOL, atol=1e-16)
        actual = [group["lr"] for group in ours.optimizer.param_groups]
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-16, err_msg=f"step {step}")


def build(kind, optimizer, settings):
    """(tinynet scheduler) for ``kind`` with the torch-named settings."""
    if kind == "LinearWarmup":
        return LinearWarmup(optimizer, settings["total_iters"], settings["start_factor"])
    return {"StepLR": StepLR, "CosineAnnealingLR": CosineAnnealingLR, "LinearLR": LinearLR}[kind](
        optimizer, **settings
    )


def build_torch(torch, kind, optimizer, settings):
    if kind == "LinearWarmup":
        kind, settings = "LinearLR", dict(settings, end_factor=1.0)
    return getattr(torch.optim.lr_scheduler, kind)(optimizer, **settings)


step_settings = st.fixed_dictionaries(
    {"step_size": st.integers(1, 10), "gamma": st.floats(0.05, 1.0)}
)
cosine_settings = st.fixed_dictionaries(
    {"T_max": st.integers(1, 40), "eta_min": st.sampled_from([0.0, 1e-4]) | st.floats(0, 0.02)}
)
linear_settings = st.fixed_dictionaries(
    {
        "start_factor": st.floats(0.01, 1.0),
        "end_factor": st.floats(0.0, 1.0),
        "total_iters": st.integers(1, 20),
    }
)
warmup_settings = st.fixed_dictionaries(
    {"start_factor": st.floats(0.01, 1.0), "total_iters": st.integers(1, 20)}
)
SETTINGS = {
    "StepLR": step_settings,
    "CosineAnnealingLR": cosine_settings,
    "LinearLR": linear_settings,
    "LinearWarmup": warmup_settings,
}

# ---------------------------------------------------------------- PyTorch parity


@pytest.mark.parametrize("kind", list(SETTINGS))
@given(data=st.data())
def test_matches_torch_over_many_steps(torch, kind, data):
    settings = data.draw(SETTINGS[kind], label="settings")
    ours, theirs = optimizers(torch)
    scheduler = build(kind, ours, settings)
    reference = build_torch(torch, kind, theirs, settings)
    # Well past the end of every schedule (a cosine climbs back up after T_max, as torch's).
    assert_same_sequence(scheduler, reference, steps=120)


@given(
    warmup=warmup_settings,
    decay_kind=st.sampled_from(["StepLR", "CosineAnnealingLR"]),
    data=st.data(),
)
def test_warmup_then_decay_matches_torch_sequential_lr(torch, warmup, decay_kind, data):
    decay = data.draw(SETTINGS[decay_kind], label="decay")
    milestone = warmup["total_iters"] + data.draw(st.integers(-1, 3), label="shift") or 1
    ours, theirs = optimizers(torch)
    scheduler = SequentialLR(
        ours, [build("LinearWarmup", ours, warmup), build(decay_kind, ours, decay)], [milestone]
    )
    reference = torch.optim.lr_scheduler.SequentialLR(
        theirs,
        [
            build_torch(torch, "LinearWarmup", theirs, warmup),
            build_torch(torch, decay_kind, theirs, decay),
        ],
        [milestone],
    )
    assert_same_sequence(scheduler, reference, steps=80)


def test_three_phases_match_torch_sequential_lr(torch):
    ours, theirs = optimizers(torch)
    scheduler = SequentialLR(
        ours,
        [LinearWarmup(ours, 5, 0.1), StepLR(ours, 3, 0.5), CosineAnnealingLR(ours, 20, 1e-3)],
        milestones=[5, 14],
    )
    lr_scheduler = torch.optim.lr_scheduler
    reference = lr_scheduler.SequentialLR(
        theirs,
        [
            lr_scheduler.LinearLR(theirs, 0.1, 1.0, 5),
            lr_scheduler.StepLR(theirs, 3, 0.5),
            lr_scheduler.CosineAnnealingLR(theirs, 20, 1e-3),
        ],
        milestones=[5, 14],
    )
    assert_same_sequence(scheduler, reference, steps=60)


# ---------------------------------------------------------------- closed forms (no PyTorch)


def lr_sequence(scheduler, steps):
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(steps):
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


def sgd(lr=0.1):
    return SGD([Parameter(np.zeros(1))], lr=lr, momentum=0.9)


def test_paper_schedule_loses_four_percent_every_eight_epochs():
    optimizer = sgd(0.01)
    lrs = lr_sequence(StepLR(optimizer, step_size=8, gamma=0.96), 40)
    expected = [0.01 * 0.96 ** (epoch // 8) for epoch in range(41)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-15)
    assert lrs[7] == 0.01 and lrs[8] == pytest.approx(0.0096)
    assert optimizer.param_groups[0]["lr"] == lrs[-1]
    assert optimizer.param_groups[0]["initial_lr"] == 0.01


def test_cosine_closed_form():
    lrs = lr_sequence(CosineAnnealingLR(sgd(0.1), T_max=10, eta_min=0.02), 20)
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.02)
    assert lrs[5] == pytest.approx(0.06) and lrs[20] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs[:10], lrs[1:11]))


def test_linear_warmup_closed_form():
    scheduler = LinearWarmup(sgd(0.1), warmup_steps=4, start_factor=0.2)
    lrs = lr_sequence(scheduler, 8)
    np.testing.assert_allclose(lrs, [0.02, 0.04, 0.06, 0.08] + [0.1] * 5, rtol=1e-15)
    assert scheduler.warmup_steps == 4


def test_warmup_then_step_decay_closed_form():
    optimizer = sgd(1.0)
    warmup = LinearWarmup(optimizer, warmup_steps=2, start_factor=0.5)
    scheduler = SequentialLR(optimizer, [warmup, StepLR(optimizer, 2, 0.5)], milestones=[3])
    # epochs 0-2: warm-up (0.5, 0.75, 1); from epoch 3 the step decay counts from 0.
    np.testing.assert_allclose(
        lr_sequence(scheduler, 8), [0.5, 0.75, 1, 1, 1, 0.5, 0.5, 0.25, 0.25], rtol=1e-15
    )


# ---------------------------------------------------------------- resumption


def make_schedule(kind, optimizer):
    if kind == "StepLR":
        return StepLR(optimizer, step_size=3, gamma=0.5)
    if kind == "CosineAnnealingLR":
        return CosineAnnealingLR(optimizer, T_max=9, eta_min=1e-3)
    if kind == "LinearWarmup":
        return LinearWarmup(optimizer, warmup_steps=6, start_factor=0.1)
    warmup = LinearWarmup(optimizer, warmup_steps=4, start_factor=0.1)
    return SequentialLR(optimizer, [warmup, CosineAnnealingLR(optimizer, 10)], milestones=[4])


def train(optimizer, scheduler, params, gradients):
    lrs = []
    for grads in gradients:
        for p, g in zip(params, grads):
            p.grad = g.copy()
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    return lrs


@pytest.mark.parametrize("kind", ["StepLR", "CosineAnnealingLR", "LinearWarmup", "SequentialLR"])
def test_resume_with_optimizer_through_tinynet_io_is_exact(tmp_path, kind):
    rng = np.random.default_rng(7)
    initial = [rng.normal(size=(3, 2)), rng.normal(size=4)]
    gradients = [[rng.normal(size=a.shape) for a in initial] for _ in range(14)]

    def setup(arrays):
        params = [Parameter(np.array(a)) for a in arrays]
        optimizer = Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.03}], lr=0.1)
        return params, optimizer, make_schedule(kind, optimizer)

    params, optimizer, scheduler = setup(initial)
    straight = train(optimizer, scheduler, params, gradients)
    straight_params = [p.data.copy() for p in params]

    params, optimizer, scheduler = setup(initial)
    first = train(optimizer, scheduler, params, gradients[:5])
    tinynet.io.save(
        {
            "params": [p.data for p in params],
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        tmp_path / "checkpoint.npz",
    )
    checkpoint = tinynet.io.load(tmp_path / "checkpoint.npz")
    params, optimizer, scheduler = setup(checkpoint["params"])  # the scheduler resets the lr ...
    optimizer.load_state_dict(checkpoint["optimizer"])  # ... which the optimiser restores
    scheduler.load_state_dict(checkpoint["scheduler"])
    assert scheduler.get_last_lr() == first[-1] == [g["lr"] for g in optimizer.param_groups]
    assert first + train(optimizer, scheduler, params, gradients[5:]) == straight
    for p, expected in zip(params, straight_params):
        np.testing.assert_array_equal(p.data, expected)


def test_last_epoch_resumes_from_initial_lr():
    optimizer = sgd(0.1)
    scheduler = StepLR(optimizer, 2, 0.5)
    for _ in range(4):
        scheduler.step()
    resumed = StepLR(optimizer, 2, 0.5, last_epoch=4)
    assert resumed.last_epoch == 5 and resumed.get_last_lr() == [0.1 * 0.5**2]
    with pytest.raises(KeyError, match="no 'initial_lr'.*load the optimiser's state dict"):
        StepLR(sgd(), 2, last_epoch=3)


def test_load_state_dict_errors_change_nothing():
    optimizer = sgd(0.1)
    scheduler = StepLR(optimizer, 2, 0.5)
    scheduler.step()
    before = scheduler.state_dict()
    with pytest.raises(ValueError, match="expected keys.*another scheduler's state"):
        scheduler.load_state_dict(CosineAnnealingLR(sgd(), 5).state_dict())
    two_groups = SGD([{"params": [Parameter(np.zeros(1))]}, {"params": [Parameter(np.zeros(1))]}])
    with pytest.raises(ValueError, match="base_lrs has 2 entries; the optimiser has 1"):
        scheduler.load_state_dict(StepLR(two_groups, 2, 0.5).state_dict())
    sequential = make_schedule("SequentialLR", sgd())
    with pytest.raises(ValueError, match="expected keys"):
        sequential.load_state_dict({**sequential.state_dict(), "schedulers": [before, before]})
    assert scheduler.state_dict() == before


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda o: StepLR(o, step_size=0), ValueError, "step_size must be an integer >= 1"),
        (lambda o: StepLR(o, step_size=2.5), ValueError, "step_size must be an integer"),
        (lambda o: StepLR(o, 2, gamma=-0.1), ValueError, "gamma must be >= 0"),
        (lambda o: CosineAnnealingLR(o, T_max=0), ValueError, "T_max must be an integer >= 1"),
        (lambda o: CosineAnnealingLR(o, 10, eta_min=-1), ValueError, "eta_min must be >= 0"),
        (lambda o: LinearLR(o, start_factor=0), ValueError, r"start_factor must be in \(0, 1\]"),
        (lambda o: LinearLR(o, start_factor=1.5), ValueError, "start_factor"),
        (lambda o: LinearLR(o, end_factor=2), ValueError, r"end_factor must be in \[0, 1\]"),
        (lambda o: LinearLR(o, total_iters=0), ValueError, "total_iters must be an integer"),
        (lambda o: LinearWarmup(o, 0), ValueError, "warmup_steps must be an integer >= 1"),
        (lambda o: StepLR(o, 2, last_epoch=-2), ValueError, "last_epoch must be an integer >= -1"),
        (lambda o: StepLR("sgd", 2), TypeError, "str is not an Optimizer"),
        (lambda o: SequentialLR(o, [], []), ValueError, "at least one scheduler"),
        (
            lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3)], []),
            ValueError,
            "one milestone fewer than schedulers; got 2 schedulers and 0",
        ),
        (
            lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(sgd(), 3)], [4]),
            ValueError,
            r"same optimizer; schedulers\[1\] \(StepLR\)",
        ),
        (
            lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3), StepLR(o, 4)], [5, 5]),
            ValueError,
            "milestones must increase",
        ),
        (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3)], [0]), ValueError, "milestone"),
        (lambda o: SequentialLR(o, [o], []), TypeError, r"schedulers\[0\] is a SGD"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make(sgd())


def test_cosine_is_periodic_past_t_max():
    scheduler = CosineAnnealingLR(sgd(1.0), T_max=4)
    assert scheduler.lr_at(8) == pytest.approx([1.0]) and scheduler.lr_at(4) == [0.0]
    assert math.isclose(scheduler.lr_at(6)[0], 0.5)
