"""tinynet.testing.check_op: correct plain-NumPy ops pass; each classic wrong answer fails with a
message that shows the smallest case, the wrong value's worst element, and a hint naming the
mistake; a user's function that raises, returns the wrong shape, type or number of gradients, or
NaN gets a clear error; the printed case reruns; forward=None checks a backward alone."""

import re
import sys
from pathlib import Path

import pytest

from tinynet.testing import OPS, check_op

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


def test_conv_right_only_for_stride_one():
    message = failure("conv2d", wrong_ops.conv2d_stride_one_only, numpy_ops.conv2d_backward)
    assert "passes with stride (1, 1) and fails with stride" in message
