"""Check your own op against tinynet: ``check_op`` runs anyone's plain-NumPy forward and backward
on cases drawn by hypothesis and compares them with tinynet's reference in float64;
``strategies`` holds the case strategies themselves, for people's own hypothesis tests.

    from tinynet.testing import check_op
    check_op("conv2d", my_conv2d, my_conv2d_backward)

This is the machinery side (it needs hypothesis): ``import tinynet`` does not import it.
docs/testing.md has every op's call, the max-pool tie rule, and how to rerun a failing case.
"""

from tinynet.testing import strategies
from tinynet.testing.cases import OPS, Case, case_arguments, case_grad_output, drawn_cases
from tinynet.testing.check import check_op

__all__ = [
    "OPS",
    "Case",
    "case_arguments",
    "case_grad_output",
    "check_op",
    "drawn_cases",
    "strategies",
]
