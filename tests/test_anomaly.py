"""tinynet.detect_anomaly(): the first NaN or infinity, forward or backward, stops the run with an
error naming the op, the module path, the direction, the step and the op's inputs; nothing is
reported (or run) when it is off; ``tinynet train --detect-anomaly`` says it in one line."""

import threading

import numpy as np
import pytest

import tinynet
import tinynet.functional as F
from tinynet import nn
from tinynet.anomaly import AnomalyError, at_step, detect_anomaly, is_anomaly_enabled
from tinynet.cli import EXIT_ERROR, main
from tinynet.models.registry import model_entry
from tinynet.reference import PRIMITIVES

from datafiles import needs_sklearn

BRANCH_CONV = "inception4a.branch3.1.conv"  # the 5x5 conv of inception4a's third branch


@pytest.fixture(scope="module")
def small():
    """The main job's network at an eighth of its width, with a fixed batch of two images."""
    tinynet.manual_seed(0)
    model = model_entry("small").build(in_channels=1, num_classes=10, width=0.125)
    images = np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)
    return model, tinynet.tensor(images), np.array([3, 7])


def loss_of(model, images, labels):
    outputs = model(images)
    return F.cross_entropy(getattr(outputs, "logits", outputs), labels)


def module_at(model, path):
    return dict(model.named_modules())[path]


@pytest.fixture
def overflowing(small):
    """``small`` with inception4a's branch-3 5x5 conv weighted 1e38: after a ReLU its inputs
    are >= 0 and not all 0, so its output's sums pass float32's largest value (3.4e38)."""
    model, images, labels = small
    weight = module_at(model, BRANCH_CONV).weight
    kept = weight.data.copy()
    weight.data[...] = 1e38
    yield model, images, labels
    weight.data[...] = kept


# ------------------------------------------------------------------ forward
def test_a_forward_overflow_in_a_branch_names_its_conv(overflowing):
    model, images, labels = overflowing
    with np.errstate(over="ignore"), pytest.raises(AnomalyError) as caught:
        with detect_anomaly():
            loss_of(model, images, labels)
    error = caught.value
    assert (error.op, error.module, error.direction, error.step) == ("Conv2d", BRANCH_CONV,
                                                                     "forward", None)  # fmt: skip
    text = str(error)
    assert text.startswith(f"anomaly: op Conv2d (Conv2dFunction) in module {BRANCH_CONV} (Conv2d)")
    assert "inf in its output" in text and "its inputs are finite: the value went bad here" in text
    assert "outside any training step: plain use" in text
    x, weight, output = error.inputs
    assert x.name == "input 0" and x.nans == x.infs == 0 and x.min >= 0 < x.max
    assert weight.name == f"input 1 ({BRANCH_CONV}.weight)"
    assert weight.min == weight.max == np.float32(1e38)
    assert weight.shape == module_at(model, BRANCH_CONV).weight.shape
    assert output.name == "output" and output.infs > 0 and output.dtype == np.float32
    assert f"{weight}" in text  # the statistics, one line per input


def test_the_reference_twins_name_the_same_module(overflowing):
    """Under use_reference the conv is composed of primitives: the one that overflows is named,
    in the same module."""
    model, images, labels = overflowing
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(AnomalyError) as caught:
        with tinynet.use_reference(), detect_anomaly():
            loss_of(model, images, labels)
    assert caught.value.module == BRANCH_CONV and caught.value.direction == "forward"
    assert caught.value.op in PRIMITIVES


def test_a_parameter_that_holds_nan_is_named_as_where_it_came_from(small):
    model, images, labels = small
    bias = model.fc.bias
    kept = bias.data.copy()
    bias.data[4] = np.nan
    try:
        with pytest.raises(AnomalyError) as caught, detect_anomaly():
            loss_of(model, images, labels)
    finally:
        bias.data[...] = kept
    assert caught.value.module == "fc" and caught.value.direction == "forward"
    assert "input 2 (fc.bias) already held 1 NaN: it came from outside the ops" in str(caught.value)


def test_functional_calls_outside_any_module_say_so():
    x = tinynet.tensor([1.0, 0.0, 2.0])
    with np.errstate(divide="ignore"), pytest.raises(AnomalyError) as caught:
        with detect_anomaly():
            F.log(x)
    error = caught.value
    assert (error.op, error.module, error.direction) == ("Log", None, "forward")
    assert "op Log (LogFunction) outside any module made 1 inf in its output" in str(error)
    assert error.inputs[0].min == 0 and error.inputs[0].max == 2 and error.inputs[0].mean == 1


def test_an_array_with_no_finite_value_says_so_rather_than_min_nan():
    x = tinynet.tensor(np.zeros(3, dtype=np.float32))
    with np.errstate(divide="ignore"), pytest.raises(AnomalyError) as caught:
        with detect_anomaly():
            F.log(x)
    assert "output: shape (3,) float32, no finite value, 0 NaN, 3 inf" in str(caught.value)
    assert "nan" not in str(caught.value)


class Shared(nn.Module):
    """One Linear called twice; a second one registered under two names; a functional op in the
    top-level forward."""

    def __init__(self):
        super().__init__()
        self.twice = nn.Linear(2, 2)
        self.encoder = nn.Linear(2, 2)
        self.decoder = self.encoder  # tied: one module, two names

    def forward(self, x):
        return F.exp(self.decoder(self.twice(self.twice(x))))


def test_shared_modules_and_the_top_level_forward_are_named():
    model = Shared()
    x = tinynet.tensor([[1.0, 2.0]])
    cases = [  # (layer whose bias is made infinite, module named, words in the message)
        (model.twice, "twice", "in module twice (Linear)"),
        (model.encoder, "encoder", "in module encoder (Linear, also registered as decoder)"),
    ]
    for layer, path, words in cases:
        kept = layer.bias.data.copy()
        layer.bias.data[...] = np.inf
        try:
            with pytest.raises(AnomalyError) as caught, detect_anomaly():
                model(x)
        finally:
            layer.bias.data[...] = kept
        assert caught.value.module == path and words in str(caught.value)
    model.decoder.weight.data[...] = 0.0
    model.decoder.bias.data[...] = 100.0  # exp(100) > float32's largest value
    with np.errstate(over="ignore"), pytest.raises(AnomalyError) as caught:
        with detect_anomaly():
            model(x)
    assert caught.value.op == "Exp" and caught.value.module == ""
    assert "in the top-level module's own forward (Shared)" in str(caught.value)


def test_a_module_its_caller_does_not_hold_is_named_by_its_class():
    class Loose(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(2, 2)]  # a plain list: not registered, not in state_dict

        def forward(self, x):
            return self.layers[0](x)

    model = Loose()
    model.layers[0].bias.data[...] = np.inf
    with pytest.raises(AnomalyError) as caught, detect_anomaly():
        model(tinynet.tensor([[1.0, 2.0]]))
    assert caught.value.module == "<Linear not registered>"


def test_an_infinity_asked_for_is_carried_but_a_nan_made_of_it_is_not():
    """Max pooling's twin pads with -inf (a constant argument): no anomaly through the slices,
    the stack and the max. The same padding multiplied by 0 is a NaN."""
    x = tinynet.tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), requires_grad=True)
    with detect_anomaly(), tinynet.use_reference():
        pooled = F.max_pool2d(x, 3, stride=2, padding=1)
        pooled.sum().backward()
    assert np.isfinite(pooled.data).all() and np.isfinite(x.grad).all()
    with np.errstate(invalid="ignore"), pytest.raises(AnomalyError) as caught:
        with detect_anomaly():
            F.pad(x, (1, 1, 1, 1), value=-np.inf) * 0.0
    assert caught.value.op == "Mul" and "made 20 NaN" in str(caught.value)


# ------------------------------------------------------------------ backward
def backward_anomaly(small, handle) -> AnomalyError:
    """What a backward of ``small``'s loss raises with the hook of ``handle`` planted (then
    removed)."""
    model, images, labels = small
    try:
        with pytest.raises(AnomalyError) as caught, detect_anomaly():
            loss_of(model, images, labels).backward()
    finally:
        handle.remove()
    return caught.value


def test_a_nan_gradient_from_a_tensor_hook_names_the_op_that_receives_it(small):
    """A hook on inception4a's branch-2 output returns NaN: the op that made that output (the
    branch's last ReLU) receives it, in backward."""
    branch = module_at(small[0], "inception4a.branch2")

    def plant(module, args, output):
        output.register_hook(lambda grad: np.full_like(grad, np.nan))

    error = backward_anomaly(small, branch.register_forward_hook(plant))
    assert (error.op, error.direction) == ("ReLU", "backward")
    assert error.module == "inception4a.branch2.1"  # BasicConv2d: conv -> bn -> relu
    text = str(error)
    assert "the gradient received by op ReLU (ReLUFunction) in module inception4a.branch2.1" in text
    assert "a hook registered on that tensor returned it" in text
    arriving = error.inputs[-1]
    assert arriving.name == "gradient arriving" and arriving.nans == np.prod(arriving.shape)
    assert error.inputs[0].name == "input 0" and error.inputs[0].nans == 0  # the forward's input


def test_a_nan_gradient_from_a_module_backward_hook_names_the_op_that_receives_it(small):
    """inception4a.branch2's full backward hook returns NaN for its input's gradient: the op
    that made inception4a's input (the max pool before it) receives it."""
    branch = module_at(small[0], "inception4a.branch2")
    handle = branch.register_full_backward_hook(
        lambda module, grad_input, grad_output: (np.full_like(grad_input[0], np.nan),)
    )
    error = backward_anomaly(small, handle)
    assert (error.op, error.module, error.direction) == ("MaxPool2d", "maxpool3", "backward")
    assert "the full backward hook of module inception4a.branch2 (Sequential) returned it" in str(
        error
    )


def test_an_op_whose_backward_makes_an_infinity_is_named():
    """d√x/dx = 1/(2√x) is infinite at 0: the op is Pow, outside any module, in backward."""
    x = tinynet.tensor([0.0, 4.0], requires_grad=True)
    with np.errstate(divide="ignore"), pytest.raises(AnomalyError) as caught:
        with detect_anomaly():
            (x**0.5).sum().backward()
    error = caught.value
    assert (error.op, error.module, error.direction) == ("Pow", None, "backward")
    assert "turned a finite gradient into 1 inf in its gradient for input 0" in str(error)
    names = [s.name for s in error.inputs]
    assert names == ["input 0", "input 1", "gradient arriving", "gradient for input 0"]
    assert x.grad is None  # stopped before the gradient reached the leaf


def test_a_leaf_hook_and_a_bad_seed_are_named():
    x = tinynet.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda grad: grad * np.inf)
    leaf = "gradient of a leaf tensor of shape \\(2,\\) holds 2 inf"
    with pytest.raises(AnomalyError, match=leaf), detect_anomaly():
        (x * 3.0).sum().backward()
    y = tinynet.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(AnomalyError, match="backward\\(\\) was started with") as caught:
        with detect_anomaly():
            (y * 3.0).backward(np.array([1.0, np.nan], dtype=np.float32))
    assert caught.value.op == "Mul"


# ------------------------------------------------------------------ on, off, nested
def test_a_clean_run_raises_nothing_and_computes_the_same(small):
    model, images, labels = small
    model.zero_grad()
    tinynet.manual_seed(1)  # the same dropout masks in both runs
    loss_of(model, images, labels).backward()
    plain = {name: p.grad for name, p in model.named_parameters()}
    model.zero_grad()
    tinynet.manual_seed(1)
    with detect_anomaly():
        loss_of(model, images, labels).backward()
    assert plain["fc.weight"] is not None
    for name, p in model.named_parameters():
        if plain[name] is None:  # the aux heads: not in this loss
            assert p.grad is None, name
        else:
            np.testing.assert_array_equal(p.grad, plain[name], err_msg=name)
    with detect_anomaly(), tinynet.use_reference():  # the twins too (max pools pad with -inf)
        loss_of(model, images, labels).backward()


def test_off_it_checks_nothing():
    x = tinynet.tensor([0.0], requires_grad=True)
    with np.errstate(divide="ignore"):
        y = F.log(x)  # -inf, passed on as before
        y.sum().backward()
    assert y.data[0] == -np.inf and x.grad[0] == np.inf
    assert not is_anomaly_enabled()


def test_nested_blocks_restore_the_setting_on_exit_also_after_an_error():
    assert not is_anomaly_enabled()
    with detect_anomaly():
        assert is_anomaly_enabled()
        with detect_anomaly(enabled=False):
            assert not is_anomaly_enabled()
            with np.errstate(divide="ignore"):
                F.log(tinynet.tensor([0.0]))  # not checked in here
        assert is_anomaly_enabled()
        with detect_anomaly():
            assert is_anomaly_enabled()
        assert is_anomaly_enabled()
    assert not is_anomaly_enabled()
    with np.errstate(divide="ignore"), pytest.raises(AnomalyError):
        with detect_anomaly():
            F.log(tinynet.tensor([0.0]))
    assert not is_anomaly_enabled()
    with pytest.raises(KeyError), detect_anomaly():
        raise KeyError("not an anomaly")
    assert not is_anomaly_enabled()


def test_a_decorated_function_and_other_threads():
    seen = {}

    @detect_anomaly()
    def watched():
        seen["inside"] = is_anomaly_enabled()
        thread = threading.Thread(target=lambda: seen.update(thread=is_anomaly_enabled()))
        thread.start()
        thread.join()

    watched()
    assert seen == {"inside": True, "thread": False} and not is_anomaly_enabled()


def test_the_step_is_named_inside_at_step():
    with np.errstate(divide="ignore"), pytest.raises(AnomalyError) as caught:
        with detect_anomaly(), at_step(12, "epoch 2, step 5 of 7"):
            F.log(tinynet.tensor([0.0]))
    assert caught.value.step == 12
    assert "(forward; training step 12: epoch 2, step 5 of 7)" in str(caught.value)
    assert isinstance(caught.value, RuntimeError)


# ------------------------------------------------------------------ the command
TINY = ["--epochs", "1", "--width", "0.125", "--batch-size", "16", "--max-batches", "2", "--no-ema"]


@needs_sklearn
def test_train_detect_anomaly_stops_at_the_step_and_says_it_in_one_line(tmp_path, capsys):
    """At lr 1e30 the first step's update leaves weights near 1e29: the second step's forward
    overflows, in the first conv whose sums pass float32's range."""
    out = tmp_path / "run"
    code = main(["train", *TINY, "--lr", "1e30", "--detect-anomaly", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("tinynet train: error: anomaly: op Conv2d (Conv2dFunction) in module ")
    assert "(forward; training step 2: epoch 1, step 2 of 2)" in line
    assert "its inputs are finite: the value went bad here" in line
    assert ".conv.weight): shape" in line  # the statistics of its inputs, on that one line
    assert not out.exists()  # no checkpoint of a run that went bad before its first epoch ended


@needs_sklearn
def test_train_detect_anomaly_on_a_clean_run_trains_as_usual(tmp_path, capsys):
    code = main(["train", *TINY, "--detect-anomaly", "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "test top-1" in captured.out and "error" not in captured.err
    assert (tmp_path / "run" / "checkpoint.npz").exists()
