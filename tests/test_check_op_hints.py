"""Each diagnosis of tinynet/testing/hints.py on its own: it names its mistake when the numbers
are that mistake's, and says nothing on a value that is wrong some other way."""

import sys
from pathlib import Path

import numpy as np
import pytest

from tinynet.testing import Case, case_arguments, case_grad_output, check_op, hints
from tinynet.testing.cases import expected
from tinynet.testing.strategies import BatchNorm, Classification, Conv, Pool, Softmax

sys.path.insert(0, str(Path(__file__).parent / "user_ops"))
import numpy_ops  # noqa: E402
import wrong_ops  # noqa: E402

CONV = Case(Conv(n=2, c_in=2, c_out=3, h=5, w=5, kh=3, kw=2, stride=(2, 1), padding=(1, 1)), 4)
POOL = Case(Pool("max_pool2d", (1, 2, 5, 5), (3, 3), (2, 2), (1, 1), False), 2, "ties")
BN = Case(
    BatchNorm((4, 3, 2, 2), training=True, running=True, affine=True, momentum=0.1, eps=1e-5), 1
)
# corners in one window, the rest in several
OVERLAPPING = Case(
    Conv(n=1, c_in=2, c_out=2, h=4, w=4, kh=2, kw=2, stride=(1, 1), padding=(0, 0)), 3
)


def finding(name, case, label, got, passes=lambda other: False):
    arguments = case_arguments(name, case)
    grad_output = case_grad_output(name, case)
    reference = expected(name, arguments, grad_output)
    if label == "output":
        want = reference.output
    elif label.startswith("running"):
        want = reference.state[label]
    else:
        want = reference.grads[["input", "weight", "bias"].index(label.removeprefix("grad_"))]
    return hints.Finding(name, label, got, want, arguments, grad_output, case, passes)


def backward_of(function, name, case):
    return function(case_grad_output(name, case), **case_arguments(name, case))


def noise(like):
    return np.random.default_rng(0).normal(size=np.shape(like))


def test_transposed_weight():
    got = backward_of(wrong_ops.conv2d_backward_weight_transposed, "conv2d", CONV)[1]
    assert "transposed" in hints.transposed_weight(finding("conv2d", CONV, "grad_weight", got))
    assert hints.transposed_weight(finding("conv2d", CONV, "grad_weight", noise(got))) is None


def test_col2im_overwrites():
    got = backward_of(wrong_ops.conv2d_backward_col2im_overwrites, "conv2d", OVERLAPPING)[0]
    sentence = hints.col2im_overwrites(finding("conv2d", OVERLAPPING, "grad_input", got))
    assert "col2im must add" in sentence
    wrong = finding("conv2d", OVERLAPPING, "grad_input", noise(got))
    assert hints.col2im_overwrites(wrong) is None
    shape = case_arguments("conv2d", CONV)["input"].shape
    assert (
        hints.col2im_overwrites(finding("conv2d", CONV, "grad_input", noise(np.ones(shape))))
        is None
    )


def test_every_tied_maximum():
    got = backward_of(wrong_ops.max_pool2d_backward_every_tie, "max_pool2d", POOL)
    sentence = hints.every_tied_maximum(finding("max_pool2d", POOL, "grad_input", got))
    assert "every tied maximum" in sentence and "first maximum" in sentence
    assert hints.every_tied_maximum(finding("max_pool2d", POOL, "grad_input", noise(got))) is None


def test_batch_norm_statistics_constant():
    got = backward_of(wrong_ops.batch_norm_backward_constant_statistics, "batch_norm", BN)[0]
    sentence = hints.batch_norm_statistics_constant(finding("batch_norm", BN, "grad_input", got))
    assert "no terms through both the batch mean and the batch variance" in sentence
    wrong = finding("batch_norm", BN, "grad_input", noise(got))
    assert hints.batch_norm_statistics_constant(wrong) is None


def test_running_var_biased():
    arguments = case_arguments("batch_norm", BN)
    x = arguments["input"]
    got = 0.9 * arguments["running_var"] + 0.1 * x.var(axis=(0, 2, 3))
    assert "unbiased" in hints.running_var_biased(finding("batch_norm", BN, "running_var", got))
    assert hints.running_var_biased(finding("batch_norm", BN, "running_var", got + 1)) is None


@pytest.mark.parametrize(
    "name, case",
    [
        ("softmax", Case(Softmax((2, 3), 1, 1e4), 0)),
        ("cross_entropy", Case(Classification(3, 4, 1e4, 0.1), 0)),
    ],
)
def test_exp_overflow(name, case):
    arguments = case_arguments(name, case)
    got = np.full_like(expected(name, arguments).output, np.nan)
    assert "subtract the maximum" in hints.exp_overflow(finding(name, case, "output", got))
    small = Case(case.params._replace(scale=3.0), 0)
    assert hints.exp_overflow(finding(name, small, "output", got)) is None


def test_padding_one_side():
    got = wrong_ops.conv2d_padding_one_side(**case_arguments("conv2d", CONV))
    sentence = hints.padding_one_side(finding("conv2d", CONV, "output", got))
    assert "with 2 instead of 1 zeros at the bottom" in sentence
    assert hints.padding_one_side(finding("conv2d", CONV, "output", noise(got))) is None


def test_bias_wrong_axes():
    got = backward_of(wrong_ops.conv2d_backward_bias_wrong_axes, "conv2d", CONV)[2]
    sentence = hints.bias_wrong_axes(finding("conv2d", CONV, "grad_bias", got))
    assert sentence.startswith("grad_bias is grad_output summed over axes (2, 3)")
    assert hints.bias_wrong_axes(finding("conv2d", CONV, "grad_bias", noise(got))) is None


def test_only_stride_one_and_only_without_padding_rerun_the_users_functions():
    got = wrong_ops.conv2d_stride_one_only(**case_arguments("conv2d", CONV))
    stride_one = finding("conv2d", CONV, "output", got, lambda c: c.params.stride == (1, 1))
    assert "passes with stride (1, 1) and fails with stride (2, 1)" in hints.only_stride_one(
        stride_one
    )
    never = finding("conv2d", CONV, "output", got)
    assert hints.only_stride_one(never) is None
    no_padding = finding("conv2d", CONV, "output", got, lambda c: c.params.padding == (0, 0))
    assert "passes with padding (0, 0)" in hints.only_without_padding(no_padding)
    assert hints.only_without_padding(never) is None


def test_ignores_grad_output():
    arguments = case_arguments("conv2d", CONV)
    ones = np.ones_like(case_grad_output("conv2d", CONV))
    got = numpy_ops.conv2d_backward(ones, **arguments)[0]
    assert "multiply by the grad_output" in hints.ignores_grad_output(
        finding("conv2d", CONV, "grad_input", got)
    )
    assert hints.ignores_grad_output(finding("conv2d", CONV, "grad_input", noise(got))) is None


def test_float32_precision():
    want = expected("conv2d", case_arguments("conv2d", CONV)).output
    got = want.astype(np.float32).astype(np.float64) * (1 + 1e-6)
    assert "float32" in hints.float32_precision(finding("conv2d", CONV, "output", got))
    assert hints.float32_precision(finding("conv2d", CONV, "output", want + 0.1)) is None


def test_relu_at_zero():
    case = Case((3, 4), 0, "ties")
    arguments = case_arguments("relu", case)
    grad_output = case_grad_output("relu", case)
    got = grad_output * (arguments["input"] >= 0)
    assert (arguments["input"] == 0).any()
    assert "at input exactly 0" in hints.relu_at_zero(finding("relu", case, "grad_input", got))
    assert hints.relu_at_zero(finding("relu", case, "grad_input", noise(got))) is None


def check_failure(name, forward, backward=None):
    with pytest.raises(AssertionError) as raised:
        check_op(name, forward, backward, max_examples=40)
    return str(raised.value)


def test_cross_entropy_summed_over_the_batch():
    def summed(input, target, label_smoothing):  # noqa: A002
        return numpy_ops.cross_entropy(input, target, label_smoothing) * len(target)

    assert "the loss is the mean over the batch" in check_failure("cross_entropy", summed)


def test_label_smoothing_ignored():
    def one_hot(input, target, label_smoothing):  # noqa: A002
        return numpy_ops.cross_entropy(input, target, 0.0)

    assert "is the one without label smoothing" in check_failure("cross_entropy", one_hot)


def test_count_include_pad_flipped():
    def flipped(input, kernel_size, stride, padding, ceil_mode, count_include_pad):  # noqa: A002
        return numpy_ops.avg_pool2d(
            input, kernel_size, stride, padding, ceil_mode, not count_include_pad
        )

    assert "divides as if count_include_pad were" in check_failure("avg_pool2d", flipped)


def test_batch_norm_with_the_wrong_statistics():
    def always_batch(input, running_mean, running_var, weight, bias, training, momentum, eps):  # noqa: A002
        return numpy_ops.batch_norm(input, None, None, weight, bias, True, momentum, eps)

    message = check_failure("batch_norm", always_batch)
    assert "in evaluation (training=False) BatchNorm normalises with running_mean" in message


def test_dropout_not_scaled():
    message = check_failure("dropout", lambda input, mask, p: input * mask)
    assert "the kept units are not scaled; they are divided by 1 - p" in message


def test_softmax_backward_with_the_diagonal_only():
    def diagonal(grad_output, input, dim):  # noqa: A002
        y = numpy_ops.softmax(input, dim)
        return grad_output * y * (1 - y)

    message = check_failure("softmax", None, diagonal)
    assert "the Jacobian's diagonal only" in message


def test_right_values_in_the_wrong_shape():
    def kept_dims(grad_output, input, weight, bias, stride, padding):  # noqa: A002
        grads = numpy_ops.conv2d_backward(grad_output, input, weight, bias, stride, padding)
        return grads[0], grads[1], None if bias is None else grads[2].reshape(1, -1, 1, 1)

    message = check_failure("conv2d", None, kept_dims)
    assert "hint: grad_bias holds the right values in shape (1, 1, 1, 1); return it" in message
    got = backward_of(numpy_ops.conv2d_backward, "conv2d", CONV)[2]
    wrong = finding("conv2d", CONV, "grad_bias", noise(got).reshape(1, -1, 1, 1))
    assert hints.right_values_wrong_shape(wrong) is None


def test_kernel_flipped():
    def convolution(input, weight, bias, stride, padding):  # noqa: A002 - the textbook's
        return numpy_ops.conv2d(input, weight[:, :, ::-1, ::-1], bias, stride, padding)

    message = check_failure("conv2d", convolution)
    assert "output is that of a conv2d whose kernel is" in message
    assert "PyTorch's conv2d is a cross-correlation" in message
    got = convolution(**case_arguments("conv2d", CONV))
    assert "rotated 180°" in hints.kernel_flipped(finding("conv2d", CONV, "output", got))
    assert hints.kernel_flipped(finding("conv2d", CONV, "output", noise(got))) is None


def test_batch_norm_with_the_unbiased_variance():
    def unbiased(input, running_mean, running_var, weight, bias, training, momentum, eps):  # noqa: A002
        output = numpy_ops.batch_norm(
            input, running_mean, running_var, weight, bias, training, momentum, eps
        )  # for the running statistics, which take the unbiased variance as they should
        if not training:
            return output
        axes = (0,) + tuple(range(2, input.ndim))
        shape = (1, -1) + (1,) * (input.ndim - 2)
        x_hat = (input - input.mean(axes, keepdims=True)) / np.sqrt(
            input.var(axes, ddof=1, keepdims=True) + eps
        )
        if weight is None:
            return x_hat
        return weight.reshape(shape) * x_hat + bias.reshape(shape)

    message = check_failure("batch_norm", unbiased)
    assert "hint: output uses the unbiased batch variance (divided by m - 1)" in message
    got = unbiased(**case_arguments("batch_norm", BN))
    assert hints.batch_norm_unbiased_variance(finding("batch_norm", BN, "output", got))
    wrong = finding("batch_norm", BN, "output", noise(got))
    assert hints.batch_norm_unbiased_variance(wrong) is None


def test_max_pool_padded_with_zeros():
    def zeros_around(grad_output, input, kernel_size, stride, padding, ceil_mode):  # noqa: A002
        (ph, pw), (h, w) = padding, input.shape[2:]
        x = np.pad(input, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        grad = numpy_ops.max_pool2d_backward(grad_output, x, kernel_size, stride, (0, 0), ceil_mode)
        return grad[:, :, ph : ph + h, pw : pw + w]

    case = Case(Pool("max_pool2d", (1, 2, 4, 4), (2, 2), (2, 2), (1, 1), False), 0)
    arguments = case_arguments("max_pool2d", case)
    arguments["input"] = -np.abs(arguments["input"]) - 0.1  # every corner window's max is a pad
    got = zeros_around(case_grad_output("max_pool2d", case), **arguments)
    right = finding("max_pool2d", case, "grad_input", got)
    right.arguments = arguments
    assert "a padded pixel must never win a window, so pad with -inf" in (
        hints.max_pool_zero_padding(right)
    )
    right.got = noise(got)
    assert hints.max_pool_zero_padding(right) is None
    message = check_failure("max_pool2d", None, zeros_around)
    assert "grad_input is that of max pooling over zeros as padding" in message
