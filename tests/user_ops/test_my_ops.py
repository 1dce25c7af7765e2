"""A test file as a user of tinynet writes it for their own ops: plain NumPy functions in
numpy_ops.py and wrong_ops.py beside it, checked with check_op from pytest."""

import pytest
from numpy_ops import conv2d, conv2d_backward, max_pool2d, max_pool2d_backward
from wrong_ops import conv2d_backward_col2im_overwrites

from tinynet.testing import check_op


def test_my_conv2d():
    check_op("conv2d", conv2d, conv2d_backward, max_examples=25)


def test_my_max_pool2d():
    check_op("max_pool2d", max_pool2d, max_pool2d_backward, max_examples=25)


def test_my_broken_conv2d_backward_is_caught():
    with pytest.raises(AssertionError, match="col2im must add each window's gradient"):
        check_op("conv2d", conv2d, conv2d_backward_col2im_overwrites, max_examples=25)
