"""Module and Tensor hooks: PyTorch's calling conventions, replaced values and gradients, and
removable handles; the capture helper built on them."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet
import tinynet.functional as F
from tinynet import nn


class TwoLayer(nn.Module):
    """conv -> relu -> flatten -> linear, small enough to mirror in PyTorch weight for weight."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).flatten(1))


def _model_and_input():
    tinynet.manual_seed(0)
    model = TwoLayer().double()
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4))
    return model, x


def _array(value) -> np.ndarray:
    """A Tensor's data, or an ndarray gradient as it is."""
    return value.data if isinstance(value, tinynet.Tensor) else np.asarray(value)


def _torch_twin(torch, model):
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(48, 5),
    ).double()  # fmt: skip
    state = model.state_dict()
    twin[0].weight.data = torch.tensor(state["conv.weight"])
    twin[0].bias.data = torch.tensor(state["conv.bias"])
    twin[3].weight.data = torch.tensor(state["fc.weight"])
    twin[3].bias.data = torch.tensor(state["fc.bias"])
    return twin


def test_hooks_capture_and_replace_values_and_gradients_as_pytorch(torch):
    model, x = _model_and_input()
    twin = _torch_twin(torch, model)

    def run(conv, fc, params, make_input, to_numpy):
        seen = {}
        conv.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
        conv.register_forward_hook(lambda m, args, out: seen.update(conv=to_numpy(out)))
        fc.register_forward_hook(lambda m, args, out: out + 1)

        def backward_hook(m, grad_input, grad_output):
            seen["grad_output"] = to_numpy(grad_output[0])
            seen["grad_input"] = to_numpy(grad_input[0])
            return (grad_input[0] * 3,)

        fc.register_full_backward_hook(backward_hook)
        inp = make_input(x)
        out = run_model(inp)
        out.register_hook(lambda g: g * 0.5)
        (out * out).sum().backward()
        seen["out"] = to_numpy(out)
        seen["input_grad"] = to_numpy(inp.grad)
        seen.update({name: to_numpy(p.grad) for name, p in params})
        return seen

    run_model = model
    ours = run(model.conv, model.fc, model.named_parameters(),
               lambda a: tinynet.tensor(a, requires_grad=True), _array)  # fmt: skip
    run_model = twin
    theirs = run(twin[0], twin[3], [("conv.weight", twin[0].weight), ("conv.bias", twin[0].bias),
                                    ("fc.weight", twin[3].weight), ("fc.bias", twin[3].bias)],
                 lambda a: torch.tensor(a, requires_grad=True),
                 lambda t: t.detach().numpy())  # fmt: skip
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_full_backward_hook_on_a_module_whose_input_needs_no_grad_matches_pytorch(torch):
    model, x = _model_and_input()
    twin = _torch_twin(torch, model)
    ours, theirs = [], []
    model.conv.register_full_backward_hook(
        lambda m, gi, go: ours.append((gi, np.array(go[0])))
    )
    twin[0].register_full_backward_hook(
        lambda m, gi, go: theirs.append((gi, go[0].numpy()))
    )
    model(tinynet.tensor(x)).sum().backward()
    twin(torch.tensor(x)).sum().backward()
    assert ours[0][0] == theirs[0][0] == (None,)
    np.testing.assert_allclose(ours[0][1], theirs[0][1], rtol=1e-10)


def test_tensor_hook_replaces_the_gradient_a_leaf_accumulates():
    w = tinynet.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    w.register_hook(lambda g: seen.append(g.copy()))
    w.register_hook(lambda g: g * 10)
    (w * 3).sum().backward()
    np.testing.assert_array_equal(seen[0], [3.0, 3.0])
    np.testing.assert_array_equal(w.grad, [30.0, 30.0])


@given(scale=st.floats(-4, 4), size=st.integers(1, 5))
def test_a_tensor_hook_scaling_the_gradient_scales_every_gradient_behind_it(scale, size):
    x = tinynet.tensor(np.linspace(-1, 1, size), requires_grad=True)
    hidden = x.exp()
    hidden.register_hook(lambda g: g * scale)
    (hidden * hidden).sum().backward()
    np.testing.assert_allclose(x.grad, scale * 2 * np.exp(2 * x.data), rtol=1e-12, atol=1e-300)
    assert hidden.grad is None  # a hook does not make a non-leaf keep its gradient


def test_full_backward_hook_on_a_module_with_two_differentiable_inputs_says_so():
    class Add(nn.Module):
        def forward(self, a, b):
            return a + b

    add = Add()
    add.register_full_backward_hook(lambda *args: None)
    a = tinynet.tensor([1.0], requires_grad=True)
    with pytest.raises(NotImplementedError, match="Add was called with 2 inputs that require"):
        add(a, a * 2)


def test_handles_remove_hooks_and_work_as_context_managers():
    layer = nn.Linear(2, 2)
    calls = []
    with layer.register_forward_hook(lambda *a: calls.append("hook")):
        layer(tinynet.tensor(np.ones((1, 2), np.float32)))
    handle = layer.register_forward_pre_hook(lambda *a: calls.append("pre"))
    handle.remove()
    handle.remove()  # twice is harmless, as in PyTorch
    layer(tinynet.tensor(np.ones((1, 2), np.float32)))
    assert calls == ["hook"]


def test_prepend_runs_a_hook_before_the_ones_already_there():
    layer = nn.Linear(2, 2)
    order = []
    layer.register_forward_hook(lambda *a: order.append("first registered"))
    layer.register_forward_hook(lambda *a: order.append("prepended"), prepend=True)
    layer(tinynet.tensor(np.ones((1, 2), np.float32)))
    assert order == ["prepended", "first registered"]


def test_bad_hooks_give_one_line_errors():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tinynet.tensor([1.0]).register_hook(lambda g: g)
    w = tinynet.tensor([1.0, 2.0], requires_grad=True)
    w.register_hook(lambda g: np.ones(3))
    with pytest.raises(RuntimeError, match=r"shape \(3,\) for a tensor of shape \(2,\)"):
        (w * 2).sum().backward()
    layer = nn.Linear(2, 2)
    layer.register_full_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
    out = layer(tinynet.tensor(np.ones((1, 2), np.float32), requires_grad=True))
    with pytest.raises(RuntimeError, match="returned 2 gradients for 1 inputs"):
        out.sum().backward()


def test_capture_records_named_activations_and_their_gradients():
    model, x = _model_and_input()
    with tinynet.capture(model, ["conv", "fc"]) as record:
        out = model(tinynet.tensor(x))
        out.sum().backward()
    expected = F.conv2d(tinynet.tensor(x), model.conv.weight, model.conv.bias, padding=1)
    np.testing.assert_allclose(record.activations["conv"], expected.data)
    np.testing.assert_array_equal(record.gradients["fc"], np.ones((2, 5)))
    relu_mask = expected.data > 0  # dL/dconv = W_fc^T 1, through the ReLU
    grad = (np.ones((2, 5)) @ model.fc.weight.data).reshape(2, 3, 4, 4) * relu_mask
    np.testing.assert_allclose(record.gradients["conv"], grad)
    assert not model.conv._forward_hooks and not model.fc._forward_hooks


def test_capture_of_an_unknown_module_names_it():
    model, _ = _model_and_input()
    with pytest.raises(ValueError, match=r"'conv9' is not a module of TwoLayer"):
        with tinynet.capture(model, ["conv9"]):
            pass
