"""tinynet.testing.check_op: correct plain-NumPy ops pass; each classic wrong answer fails with a
message that shows the smallest case, the wrong value's worst element, and a hint naming the
mistake; a user's function that raises, returns the wrong shape, type or number of gradients, or
NaN gets a clear error; the printed case reruns; forward=None checks a backward alone."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import seed as hypothesis_seed

from tinynet.testing import OPS, Case, case_arguments, case_grad_output, check_op, drawn_cases
from tinynet.testing.strategies import Conv, Pool

sys.path.insert(0, str(Path(__file__).parent / "user_ops"))  # a user's folder of own ops
import numpy_ops  # noqa: E402
import wrong_ops  # noqa: E402

EXAMPLES = 30


def failure(name, forward, backward=None, **kwargs):
    """check_op's AssertionError message (the check must fail)."""
    kwargs.setdefault("max_examples", EXAMPLES)
    with pytest.raises(AssertionError) as raised:
        check_op(name, forward, backward, **kwargs)
    return str(raised.value)


@pytest.mark.parametrize("name", sorted(OPS))
def test_correct_ops_pass(name):
    check_op(
        name,
        getattr(numpy_ops, name),
        getattr(numpy_ops, f"{name}_backward"),
        max_examples=EXAMPLES,
    )


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_checks_a_backward_alone(name):
    check_op(name, None, getattr(numpy_ops, f"{name}_backward"), max_examples=10)


# ------------------------------------------------------------------ the classic wrong answers
def test_grad_weight_transposed():
    message = failure("conv2d", None, wrong_ops.conv2d_backward_weight_transposed)
    assert "grad_weight" in message.splitlines()[0]
    assert "hint: grad_weight equals the expected gradient transposed" in message


def test_col2im_overwriting_instead_of_adding():
    message = failure("conv2d", numpy_ops.conv2d, wrong_ops.conv2d_backward_col2im_overwrites)
    assert message.startswith("check_op('conv2d'): grad_input:")
    assert "col2im must add each window's gradient (+=), not overwrite it (=)" in message


def test_max_pool_gradient_to_every_tied_maximum():
    message = failure("max_pool2d", numpy_ops.max_pool2d, wrong_ops.max_pool2d_backward_every_tie)
    assert "values='ties'" in message
    assert "grad_input sends the gradient to every tied maximum of a window" in message
    assert "the first maximum of the window in scan order (row by row)" in message


def test_batch_norm_backward_without_the_statistics_terms():
    message = failure(
        "batch_norm", numpy_ops.batch_norm, wrong_ops.batch_norm_backward_constant_statistics
    )
    assert "training=True" in message
    assert "grad_input has no terms through both the batch mean and the batch variance" in message


def test_softmax_without_subtracting_the_maximum():
    message = failure("softmax", wrong_ops.softmax_without_max, numpy_ops.softmax_backward)
    assert "output:" in message and "NaN or infinite" in message
    assert "subtract the maximum along the axis first" in message
    assert "scale=10000.0" in message


def test_padding_off_by_one_on_one_side():
    message = failure("conv2d", wrong_ops.conv2d_padding_one_side, numpy_ops.conv2d_backward)
    assert re.search(
        r"the output is the convolution with \d instead of \d zeros at the bottom", message
    )


def test_bias_gradient_summed_over_the_wrong_axes():
    message = failure("conv2d", numpy_ops.conv2d, wrong_ops.conv2d_backward_bias_wrong_axes)
    assert "grad_bias" in message.splitlines()[0]
    assert "hint: grad_bias is grad_output summed over axes (2, 3)" in message
    assert "summed over every axis but the channel axis 1: (0, 2, 3)" in message


@pytest.mark.parametrize(
    "forward, backward",
    [
        (wrong_ops.conv2d_stride_one_only, numpy_ops.conv2d_backward),
        (numpy_ops.conv2d, wrong_ops.conv2d_backward_stride_one_only),
    ],
)
def test_conv_right_only_for_stride_one(forward, backward):
    message = failure("conv2d", forward, backward)
    assert "passes with stride (1, 1) and fails with stride" in message


# ------------------------------------------------------------------ what the message holds
def test_the_printed_case_reruns_and_rebuilds_the_arrays():
    message = failure("conv2d", numpy_ops.conv2d, wrong_ops.conv2d_backward_col2im_overwrites)
    snippet = message.split("rerun this case:\n", 1)[1]
    namespace = {
        "conv2d": numpy_ops.conv2d,
        "conv2d_backward_col2im_overwrites": wrong_ops.conv2d_backward_col2im_overwrites,
    }
    with pytest.raises(AssertionError) as rerun:
        exec(textwrap.dedent(snippet), namespace)  # noqa: S102 - the snippet a user pastes
    assert str(rerun.value) == message
    arguments, case = namespace["arguments"], namespace["case"]
    assert arguments["input"].shape == (
        case.params.n,
        case.params.c_in,
        case.params.h,
        case.params.w,
    )
    assert namespace["grad_output"].ndim == 4
    assert re.search(r"worst at index \(\d+, \d+, \d+, \d+\): yours -?\d", message)


def test_the_same_seed_finds_the_same_case():
    def run():
        return failure("conv2d", wrong_ops.conv2d_stride_one_only, None, seed=5, max_examples=15)

    assert run() == run()


def test_a_passing_case_given_explicitly_passes():
    case = Case(Conv(n=1, c_in=2, c_out=3, h=5, w=4, kh=2, kw=3, stride=(2, 1), padding=(1, 0)), 7)
    check_op("conv2d", numpy_ops.conv2d, numpy_ops.conv2d_backward, case=case)
    arguments = case_arguments("conv2d", case)
    assert [arguments[k].shape for k in ("input", "weight", "bias")] == [
        (1, 2, 5, 4),
        (2, 3, 2, 3)[:0] + (3, 2, 2, 3),
        (3,),
    ]
    assert case_grad_output("conv2d", case).shape == (1, 3, 3, 2)


# ------------------------------------------------------------------ what the user's code returns
def test_a_forward_that_raises_is_named_with_its_error():
    def forward(input, weight, bias, stride, padding):  # noqa: A002
        raise IndexError("index 3 is out of bounds")

    with pytest.raises(AssertionError) as raised:
        check_op("conv2d", forward, max_examples=5)
    assert str(raised.value).startswith(
        "check_op('conv2d'): forward raised IndexError: index 3 is out of bounds"
    )
    assert isinstance(raised.value.__cause__, IndexError)  # its traceback stays reachable


def test_a_function_with_other_parameter_names_is_told_the_names_it_is_called_with():
    message = failure("conv2d", None, lambda g, x, w, b, stride, padding: (x, w, b))
    assert "backward raised TypeError" in message
    assert (
        "hint: check_op calls backward(grad_output, input, weight, bias, stride, padding) by "
        "keyword, with torch.nn.functional's argument names" in message
    )

    def inner(input):  # noqa: A002 - a TypeError from inside the function: no such hint
        return np.maximum(input, 0, 1, 2, 3)

    assert "hint: check_op calls" not in failure("relu", inner)


def test_a_wrong_output_shape_names_both_shapes():
    message = failure("relu", lambda input: input[..., None])
    assert re.match(
        r"check_op\('relu'\): output: expected shape \(.*\); got shape \(.*, 1\)", message
    )


def test_an_output_that_is_not_an_array_is_named():
    message = failure("relu", lambda input: "relu")
    assert "output: expected a float array of shape" in message and "got str 'relu'" in message


def test_nan_in_the_output_is_named():
    message = failure("relu", lambda input: np.where(input > 1, np.nan, np.maximum(input, 0)))
    assert "NaN or infinite" in message and "yours nan, expected" in message


def test_a_backward_with_too_few_gradients_is_named():
    def backward(grad_output, input, weight, bias, stride, padding):  # noqa: A002
        return numpy_ops.conv2d_backward(grad_output, input, weight, bias, stride, padding)[:2]

    message = failure("conv2d", None, backward)
    assert (
        "backward: expected a tuple of 3 (grad_input, grad_weight, grad_bias); got a tuple of 2"
        in (message)
    )


def test_a_gradient_for_a_missing_bias_must_be_none():
    def backward(grad_output, input, weight, bias, stride, padding):  # noqa: A002
        grad_input, grad_weight, _ = numpy_ops.conv2d_backward(
            grad_output, input, weight, bias, stride, padding
        )
        return grad_input, grad_weight, grad_output.sum(axis=(0, 2, 3))

    message = failure("conv2d", None, backward)
    assert "grad_bias: bias is None, so its gradient must be None; got an array of shape" in message


def test_a_bare_array_is_accepted_for_one_input_and_a_list_for_cat():
    check_op("relu", None, lambda grad_output, input: grad_output * (input > 0), max_examples=5)
    check_op("cat", None, lambda g, tensors, dim: list(numpy_ops.cat_backward(g, tensors, dim)))
    message = failure(
        "cat", None, lambda g, tensors, dim: numpy_ops.cat_backward(g, tensors, dim)[:1]
    )
    expected = "expected a tuple of 2 gradients, one per tensor of tensors; got a tuple of 1"
    assert f"check_op('cat'): backward: {expected}" in message


def test_a_forward_that_writes_into_its_input_is_named():
    def relu(input):  # noqa: A002
        np.maximum(input, 0, out=input)
        return input

    assert "forward changed its argument input in place; it must not" in failure("relu", relu)

    def relu_backward(grad_output, input):  # noqa: A002 - right values, in grad_output's memory
        np.multiply(grad_output, input > 0, out=grad_output)
        return grad_output

    message = failure("relu", None, relu_backward)
    assert "backward changed its argument grad_output in place; it must not" in message


def test_batch_norm_checks_the_running_statistics_updated_in_place():
    def forgets_the_update(input, running_mean, running_var, weight, bias, training, momentum, eps):  # noqa: A002
        return numpy_ops.batch_norm(
            input, None if training else running_mean, None if training else running_var,
            weight, bias, training, momentum, eps,
        )  # fmt: skip

    message = failure("batch_norm", forgets_the_update)
    assert "running_mean (updated in place by the forward):" in message
    assert "training=True" in message


def test_a_function_whose_answer_changes_between_calls_is_named():
    calls = []

    def relu(input):  # noqa: A002
        calls.append(1)
        return np.maximum(input, 0) + (len(calls) == 3)  # wrong on the third call only

    message = failure("relu", relu)
    assert "a case failed once and passed when it was run again" in message
    assert "check_op('relu'): output:" in message  # the failure it saw


def test_name_and_functions_are_checked_first():
    with pytest.raises(
        ValueError, match=r"check_op: name must be one of \[.*'conv2d'.*\]; got 'conv'"
    ):
        check_op("conv", numpy_ops.conv2d)
    with pytest.raises(ValueError, match="needs forward, backward or both; got neither"):
        check_op("conv2d", None)
    with pytest.raises(TypeError, match="backward must be a function or None; got tuple"):
        check_op("conv2d", numpy_ops.conv2d, (1, 2))
    with pytest.raises(ValueError, match=r"values must be one of \('uniform', 'ties'\); got 'tie'"):
        check_op("relu", numpy_ops.relu, case=Case((2, 3), 0, "tie"))
    for count in (0, 2.5, True):  # not hypothesis' own error, which names its settings
        with pytest.raises(ValueError, match=rf"max_examples must be an int >= 1 .*; got {count}"):
            check_op("relu", numpy_ops.relu, max_examples=count)


def test_importing_tinynet_loads_neither_the_checker_nor_hypothesis():
    code = "import sys, tinynet; print({'tinynet.testing', 'hypothesis'} & set(sys.modules))"
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert (run.returncode, run.stdout.strip()) == (0, "set()"), run.stderr


# ------------------------------------------------------------------ the tie rule is PyTorch's
def test_the_max_pool_tie_rule_is_pytorchs(torch):
    """The first maximum in scan order gets the gradient, in PyTorch as in check_op's reference
    (and so in numpy_ops' argmax); over tied windows that overlap, with padding and ceil_mode."""
    case = Case(Pool("max_pool2d", (2, 2, 5, 6), (3, 2), (2, 1), (1, 1), True), 3, "ties")
    arguments = case_arguments("max_pool2d", case)
    grad_output = case_grad_output("max_pool2d", case)
    x = torch.tensor(arguments["input"], requires_grad=True)
    kwargs = {k: v for k, v in arguments.items() if k != "input"}
    torch.nn.functional.max_pool2d(x, **kwargs).backward(torch.tensor(grad_output))
    ours = numpy_ops.max_pool2d_backward(grad_output, **arguments)
    assert len(np.unique(arguments["input"])) < arguments["input"].size / 4  # many ties
    np.testing.assert_array_equal(ours, x.grad.numpy())
    check_op("max_pool2d", numpy_ops.max_pool2d, numpy_ops.max_pool2d_backward, case=case)


# ------------------------------------------------------------------ what the cases hold
def _ties_in_a_window(case):
    """Whether two taps of one max-pool window hold its maximum."""
    arguments = case_arguments("max_pool2d", case)
    x, kernel, stride, padding, ceil_mode = arguments.values()
    out_size, extra = numpy_ops.pool_geometry(x.shape[2:], kernel, stride, padding, ceil_mode)
    windows = numpy_ops.im2col(numpy_ops.pad(x, padding, -np.inf, extra), kernel, stride, out_size)
    taps = windows.reshape(windows.shape[:2] + (-1,) + out_size)
    return bool(((taps == taps.max(axis=2, keepdims=True)).sum(axis=2) > 1).any())


EDGES = {
    "conv2d": {
        "a batch and channels of 1": lambda c: (
            (c.params.n, c.params.c_in, c.params.c_out) == (1, 1, 1)
        ),
        "a rectangular kernel": lambda c: c.params.kh != c.params.kw,
        "a stride larger than the kernel": lambda c: (
            c.params.stride[0] > c.params.kh or c.params.stride[1] > c.params.kw
        ),
        "padding on both axes": lambda c: min(c.params.padding) > 0,
    },
    "max_pool2d": {
        "ceil_mode with padding": lambda c: c.params.ceil_mode and min(c.params.padding) > 0,
        "tied maxima in a window": _ties_in_a_window,
    },
    "avg_pool2d": {
        "padding not counted": lambda c: (
            not c.params.count_include_pad and max(c.params.padding) > 0
        ),
    },
    "softmax": {"logits of 1e4": lambda c: c.params.scale == 1e4},
    "cross_entropy": {
        "logits of 1e4 with label smoothing": lambda c: (
            c.params.scale == 1e4 and 0 < c.params.label_smoothing < 1
        ),
    },
    "batch_norm": {
        "training with running statistics": lambda c: c.params.training and c.params.running,
        "evaluation": lambda c: not c.params.training,
    },
    "relu": {"exact zeros": lambda c: c.values == "ties"},
}


@pytest.mark.parametrize("name", EDGES)
def test_the_cases_drawn_hold_what_breaks_implementations(name):
    """Each edge within the first 100 cases check_op draws by default."""
    seen = set()

    @settings(max_examples=100, database=None, phases=[Phase.generate])
    @given(drawn_cases(name))
    def draw(case):
        seen.update(what for what, condition in EDGES[name].items() if condition(case))

    hypothesis_seed(0)(draw)()
    assert seen == set(EDGES[name])
