"""tinynet.gradcheck: passes correct backwards, catches wrong ones, and says where."""

import numpy as np
import pytest

import tinynet
import tinynet.functional as F
from tinynet import Function, GradcheckError


class Square(Function):
    """y = x²; dL/dx = 2 x g."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class SquareWithBug(Square):
    """A backward that is right everywhere except at one element."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        result = 2 * x * grad
        result.reshape(-1)[4] *= 1.5
        return result


def _x(shape=(2, 3)):
    data = np.random.default_rng(0).uniform(-1, 1, shape)
    return tinynet.tensor(data, requires_grad=True)


def test_a_correct_user_function_passes():
    assert tinynet.gradcheck(Square.apply, [_x()])


def test_a_wrong_backward_is_caught_with_its_location_and_values():
    x = _x()
    with pytest.raises(GradcheckError) as failure:
        tinynet.gradcheck(SquareWithBug.apply, [x])
    message = str(failure.value)
    assert "input 0 (2, 3), 6 elements compared" in message and "FAILED" in message
    assert "at (1, 1)" in message  # flat element 4 of a (2, 3) tensor
    assert "analytic" in message and "numeric" in message and "abs error" in message


def test_raise_exception_false_returns_false():
    assert tinynet.gradcheck(SquareWithBug.apply, [_x()], raise_exception=False) is False


def test_check_gradients_reports_each_input():
    a, b = _x((3,)), _x((2, 3))
    c = tinynet.tensor(np.ones(3))  # a constant: not checked
    result = tinynet.check_gradients(lambda a, b, c: a * b + c, [a, b, c])
    assert result.ok
    assert [r.index for r in result.inputs] == [0, 1]
    assert all(r.max_abs_error < 1e-8 for r in result.inputs)
    assert "input 1 (2, 3)" in str(result)


def test_several_outputs_are_checked_together():
    x = _x()
    assert tinynet.gradcheck(lambda x: (F.exp(x), x.sum(dim=1)), [x])


def test_float32_inputs_are_refused():
    x = tinynet.tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="input 0 is float32.*float64"):
        tinynet.gradcheck(Square.apply, [x])


def test_nothing_to_check_is_an_error():
    with pytest.raises(ValueError, match="requires_grad=True"):
        tinynet.gradcheck(Square.apply, [tinynet.tensor(np.ones(3))])


def test_inputs_grad_and_values_are_left_as_they_were():
    x = _x()
    before = x.data.copy()
    x.grad = np.full(x.shape, 7.0)
    tinynet.gradcheck(Square.apply, [x])
    np.testing.assert_array_equal(x.grad, np.full(x.shape, 7.0))
    np.testing.assert_array_equal(x.data, before)


def test_non_contiguous_inputs_are_handled():
    x = tinynet.tensor(np.random.default_rng(1).uniform(-1, 1, (3, 4)).T, requires_grad=True)
    assert tinynet.gradcheck(Square.apply, [x])


def test_samples_checks_a_seeded_subset_and_still_catches_errors():
    x = _x((4, 5))
    result = tinynet.check_gradients(Square.apply, [x], samples=6)
    assert result.ok and result.inputs[0].compared == 6
    # Element 4 is wrong; with every element sampled the bug is found.
    assert not tinynet.check_gradients(SquareWithBug.apply, [x], samples=20).ok
    with pytest.raises(ValueError, match="samples must be a positive int"):
        tinynet.check_gradients(Square.apply, [x], samples=0)


def test_skip_kinks_skips_an_element_at_a_kink_and_still_catches_bugs():
    # |x| has a kink at 0: the element there is skipped, the others compared.
    x = tinynet.tensor([1e-7, 0.5, -2.0], dtype=np.float64, requires_grad=True)
    absolute = lambda x: F.relu(x) + F.relu(-x)
    assert not tinynet.check_gradients(absolute, [x]).ok  # the kink breaks a plain check
    result = tinynet.check_gradients(absolute, [x], skip_kinks=True)
    assert result.ok and (result.inputs[0].compared, result.inputs[0].skipped) == (2, 1)
    assert "1 skipped at kinks" in str(result)
    # A wrong backward on smooth ground is still caught.
    assert not tinynet.check_gradients(SquareWithBug.apply, [_x()], skip_kinks=True).ok
