"""tinynet.nn: registration and names, state dicts, modes, layers against their ops and PyTorch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet
import tinynet.functional as F
from tinynet import nn

from compare import assert_close, to_torch
from strategies import seeds, uniform


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 5 * 5, 2))

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))))


EXPECTED_KEYS = [
    "conv.weight",
    "bn.weight",
    "bn.bias",
    "bn.running_mean",
    "bn.running_var",
    "bn.num_batches_tracked",
    "head.1.weight",
    "head.1.bias",
]


def test_names_follow_pytorch():
    block = Block()
    assert list(block.state_dict()) == EXPECTED_KEYS
    assert [n for n, _ in block.named_parameters()] == [
        "conv.weight",
        "bn.weight",
        "bn.bias",
        "head.1.weight",
        "head.1.bias",
    ]
    assert [n for n, _ in block.named_modules()] == ["", "conv", "bn", "head", "head.0", "head.1"]
    assert block.conv.bias is None
    assert len(list(block.children())) == 3


def test_state_dict_matches_torch_names_and_shapes(torch):
    ours = Block()
    theirs = torch.nn.Sequential()
    theirs.conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    theirs.bn = torch.nn.BatchNorm2d(4)
    theirs.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 2))
    t_state = theirs.state_dict()
    assert list(t_state) == list(ours.state_dict())
    for key, value in ours.state_dict().items():
        assert tuple(t_state[key].shape) == value.shape, key


def test_state_dict_is_a_snapshot_and_round_trips():
    block, other = Block(), Block()
    state = block.state_dict()
    state["conv.weight"][...] = 0  # a copy: the model is unchanged
    assert np.any(block.conv.weight.data != 0)
    other.load_state_dict(block.state_dict())
    for key, value in block.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value)


def test_load_state_dict_reports_every_problem_and_changes_nothing():
    block = Block()
    before = block.state_dict()
    bad = Block().state_dict()
    del bad["bn.running_var"]
    bad["head.1.weight"] = np.zeros((3, 100), np.float32)
    bad["extra.weight"] = np.zeros(2)
    bad["conv.weight"] = np.ones((4, 3, 3, 3), np.float32)  # valid, must not be applied either
    with pytest.raises(ValueError) as failure:
        block.load_state_dict(bad)
    message = str(failure.value)
    assert "nothing was loaded" in message
    assert "missing key: bn.running_var" in message
    assert "unexpected key: extra.weight" in message
    assert "head.1.weight: shape (3, 100) in the state dict, (2, 100) in the model" in message
    for key, value in before.items():
        np.testing.assert_array_equal(block.state_dict()[key], value)


def test_load_state_dict_non_strict_returns_missing_and_unexpected():
    block = Block()
    state = Block().state_dict()
    del state["bn.bias"]
    state["other"] = np.zeros(1)
    missing, unexpected = block.load_state_dict(state, strict=False)
    assert missing == ["bn.bias"] and unexpected == ["other"]
    np.testing.assert_array_equal(block.conv.weight.data, state["conv.weight"])
    state["conv.weight"] = np.zeros((1, 1, 1, 1))
    with pytest.raises(ValueError, match="conv.weight: shape"):
        block.load_state_dict(state, strict=False)


def test_train_eval_propagate_and_zero_grad_clears():
    block = Block()
    assert block.eval() is block and not block.bn.training and not block.head[1].training
    block.train()
    assert all(m.training for m in block.modules())
    out = block(tinynet.tensor(np.random.default_rng(0).random((2, 3, 5, 5), np.float32)))
    out.sum().backward()
    assert all(p.grad is not None for p in block.parameters())
    block.zero_grad()
    assert all(p.grad is None for p in block.parameters())


def test_to_double_converts_parameters_and_float_buffers():
    block = Block().double()
    assert all(p.dtype == np.float64 for p in block.parameters())
    assert block.bn.running_mean.dtype == np.float64
    assert block.bn.num_batches_tracked.dtype == np.int64
    out = block(tinynet.tensor(np.ones((1, 3, 5, 5))))
    assert out.dtype == np.float64


def test_repr_is_readable():
    text = repr(Block())
    assert "Conv2d(3, 4, kernel_size=(3, 3), stride=1, padding=1, bias=False)" in text
    assert "(head): Sequential(" in text and "(1): Linear(in_features=100, out_features=2" in text


def test_forward_hooks_run_and_remove():
    layer, seen = nn.ReLU(), []
    handle = layer.register_forward_hook(lambda m, inputs, out: seen.append(out.shape))
    layer(tinynet.ones(2, 3))
    handle.remove()
    layer(tinynet.ones(2, 3))
    assert seen == [(2, 3)]


def test_setting_attributes_before_init_is_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.layer = nn.ReLU()

    with pytest.raises(RuntimeError, match=r"super\(\).__init__\(\)"):
        Broken()


def test_seeded_initialisation_is_reproducible_and_within_pytorch_bounds():
    tinynet.manual_seed(0)
    a = nn.Conv2d(16, 8, 3)
    tinynet.manual_seed(0)
    b = nn.Conv2d(16, 8, 3)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    bound = 1 / np.sqrt(16 * 9)  # kaiming_uniform_(a=√5): U(±1/sqrt(fan_in)), bias alike
    assert np.abs(a.weight.data).max() <= bound and np.abs(a.bias.data).max() <= bound
    assert np.abs(a.weight.data).max() > 0.9 * bound  # actually spread over the range
    assert a.weight.dtype == np.float32
    linear = nn.Linear(50, 3)
    assert np.abs(linear.weight.data).max() <= 1 / np.sqrt(50)


def test_trunc_normal_respects_its_bounds():
    w = np.empty(10_000)
    nn.init.trunc_normal_(w, 0.0, 1.0, -0.5, 0.5, generator=np.random.default_rng(0))
    assert w.min() >= -0.5 and w.max() <= 0.5 and w.std() > 0.2
    with pytest.raises(ValueError, match="need a < b"):
        nn.init.trunc_normal_(w, a=1.0, b=1.0)


@pytest.mark.parametrize(
    "layer, op",
    [
        (lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), lambda x: F.max_pool2d(x, 3, 2, 1, True)),
        (lambda: nn.AvgPool2d(3, 2), lambda x: F.avg_pool2d(x, 3, 2)),
        (lambda: nn.AdaptiveAvgPool2d(2), lambda x: F.adaptive_avg_pool2d(x, 2)),
        (lambda: nn.LocalResponseNorm(3), lambda x: F.local_response_norm(x, 3)),
        (lambda: nn.ReLU(), F.relu),
        (lambda: nn.Flatten(), lambda x: F.flatten(x, 1)),
    ],
)
def test_parameterless_layers_equal_their_ops(layer, op):
    x = tinynet.tensor(np.random.default_rng(1).standard_normal((2, 4, 6, 6)).astype(np.float32))
    np.testing.assert_array_equal(layer()(x).data, op(x).data)


def test_dropout_layer_follows_the_mode():
    layer = nn.Dropout(0.5, generator=np.random.default_rng(0))
    x = tinynet.ones(100)
    assert np.any(layer(x).data == 0)
    layer.eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match=r"p must be a probability"):
        nn.Dropout(2.0)


@pytest.mark.parametrize("momentum", [0.1, None])
@given(seed=seeds, steps=st.integers(1, 4))
def test_batchnorm2d_matches_torch_over_training_and_eval(torch, momentum, seed, steps):
    ours = nn.BatchNorm2d(3, eps=1e-3, momentum=momentum, dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(3, eps=1e-3, momentum=momentum).double()
    for step in range(steps):
        x = uniform(seed + step, (4, 3, 2, 5), -3, 3)
        assert_close(ours(tinynet.tensor(x)), theirs(to_torch(torch, x)).detach().numpy())
    for key, value in theirs.state_dict().items():
        assert_close(getattr(ours, key.split(".")[-1]), value.numpy(), np.float64)
    ours.eval(), theirs.eval()
    x = uniform(seed, (2, 3, 2, 2))
    assert_close(ours(tinynet.tensor(x)), theirs(to_torch(torch, x)).detach().numpy())


def test_batchnorm2d_needs_4d_input():
    with pytest.raises(ValueError, match=r"BatchNorm2d: input must be 4-D.*got shape \(2, 3\)"):
        nn.BatchNorm2d(3)(tinynet.ones(2, 3))


def test_bad_layer_arguments_are_errors():
    with pytest.raises(ValueError, match="in_channels must be a positive int; got 0"):
        nn.Conv2d(0, 4, 3)
    with pytest.raises(ValueError, match="out_features must be a positive int; got -1"):
        nn.Linear(3, -1)
    with pytest.raises(ValueError, match=r"kernel_size must be >= 1"):
        nn.Conv2d(3, 4, 0)
