"""The ops ``check_op`` knows: for each, the cases it draws, the keyword arguments a case is
called with, which of them have gradients, and the expected answer from ``tinynet.reference``.

A case is its shapes and arguments (one of the NamedTuples of ``tinynet.testing.strategies``)
plus the seed its arrays come from: ``case_arguments(name, case)`` rebuilds exactly the arrays
the user's functions were called with, so a printed case can be pasted and rerun. The expected
output and gradients are the composed twins' (``tinynet.reference``), run in float64 through
tinynet's autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from hypothesis import strategies as st

from tinynet import reference
from tinynet.tensor import Tensor
from tinynet.testing import strategies as cases
from tinynet.testing.strategies import pair, uniform

# Logits of 1e4: e^x overflows float64 above 709, so only a softmax that subtracts the maximum
# first gets them right.
LOGIT_SCALES = [3.0, 1e4]


VALUES = ("uniform", "ties")  # the kinds of values a case's arrays hold (see Case)


class Case(NamedTuple):
    """One call of an op: ``params`` (shapes and arguments, a strategies NamedTuple), the
    ``seed`` of its arrays, and ``values``: 'uniform' (uniform in [-2, 2)) or 'ties' (small
    integers, so max pooling has tied maxima and relu exact zeros)."""

    params: Any
    seed: int = 0
    values: str = "uniform"


class Op(NamedTuple):
    """What ``check_op`` knows of one op."""

    params: st.SearchStrategy  # the shapes and arguments it is drawn with
    values: tuple[str, ...]  # the kinds of values its arrays are drawn with
    arguments: Callable[[Any, Callable], dict]  # (params, make_array) -> the forward's keywords
    differentiable: tuple[str, ...]  # the keywords that have gradients, in the forward's order
    twin: Callable[..., Tensor]  # the reference, called with the same keywords


def _conv_arguments(p, array):
    bias = array((p.c_out,)) if p.with_bias else None
    return dict(
        input=array((p.n, p.c_in, p.h, p.w)),
        weight=array((p.c_out, p.c_in, p.kh, p.kw)),
        bias=bias,
        stride=p.stride,
        padding=p.padding,
    )


def _conv_params():
    """conv_cases with stride and padding as pairs; 'same' only where it pads both sides
    equally (an even kernel's 'same' pads one more at the end, which no pair says)."""
    symmetric = cases.conv_cases().filter(lambda c: all(a == b for a, b in c.pads))
    return symmetric.map(
        lambda c: c._replace(stride=pair(c.stride), padding=(c.pads[0][0], c.pads[1][0]))
    )


def _pool_params(op):
    """pool_cases with kernel_size, stride and padding as pairs (stride None is the kernel)."""
    return cases.pool_cases(op=op).map(
        lambda c: c._replace(
            kernel_size=pair(c.kernel_size),
            stride=pair(c.stride if c.stride is not None else c.kernel_size),
            padding=pair(c.padding),
        )
    )


def _adaptive_params():
    """adaptive_pool_cases with output_size as a pair of ints (None: the input's side)."""
    return cases.adaptive_pool_cases().map(
        lambda c: c._replace(
            output_size=tuple(
                side if size is None else size
                for size, side in zip(pair(c.output_size), c.shape[2:])
            )
        )
    )


def _batch_norm_arguments(p, array):
    channels = p.shape[1]
    running = p.running or not p.training
    return dict(
        input=array(p.shape),
        running_mean=array((channels,)) if running else None,
        running_var=array((channels,), 0.25, 2.0) if running else None,
        weight=array((channels,)) if p.affine else None,
        bias=array((channels,)) if p.affine else None,
        training=p.training,
        momentum=p.momentum,
        eps=p.eps,
    )


def _softmax_op(twin) -> Op:
    """softmax or log_softmax along ``dim``, on logits up to 3 or up to 1e4 in magnitude."""
    return Op(
        cases.softmax_cases(scales=LOGIT_SCALES),
        ("uniform",),
        lambda p, array: dict(input=array(p.shape, -p.scale, p.scale), dim=p.dim),
        ("input",),
        lambda input, dim: twin(input, dim),  # noqa: A006
    )


def _dropout_twin(input, mask, p):  # noqa: A002
    return input * (mask / (1.0 - p))


def _cross_entropy_twin(input, target, label_smoothing):  # noqa: A002
    return reference.cross_entropy(input, target, label_smoothing=label_smoothing)


OPS: dict[str, Op] = {
    "linear": Op(
        cases.linear_cases(),
        ("uniform",),
        lambda p, array: dict(
            input=array(p.lead + (p.n_in,)),
            weight=array((p.n_out, p.n_in)),
            bias=array((p.n_out,)) if p.with_bias else None,
        ),
        ("input", "weight", "bias"),
        lambda input, weight, bias: reference.linear(input, weight, bias),  # noqa: A006
    ),
    "relu": Op(
        cases.shapes(),
        ("uniform", "ties"),
        lambda p, array: dict(input=array(p)),
        ("input",),
        lambda input: reference.relu(input),  # noqa: A006
    ),
    "softmax": _softmax_op(reference.softmax),
    "log_softmax": _softmax_op(reference.log_softmax),
    "cross_entropy": Op(
        cases.classification_cases(scales=LOGIT_SCALES),
        ("uniform",),
        lambda p, array: dict(
            input=array((p.n, p.classes), -p.scale, p.scale),
            target=array.integers(p.n, p.classes),
            label_smoothing=p.label_smoothing,
        ),
        ("input",),
        _cross_entropy_twin,
    ),
    "conv2d": Op(
        _conv_params(),
        ("uniform",),
        _conv_arguments,
        ("input", "weight", "bias"),
        reference.conv2d,
    ),
    "max_pool2d": Op(
        _pool_params("max_pool2d"),
        ("uniform", "ties"),
        lambda p, array: dict(input=array(p.shape), **p.kwargs),
        ("input",),
        reference.max_pool2d,
    ),
    "avg_pool2d": Op(
        _pool_params("avg_pool2d"),
        ("uniform",),
        lambda p, array: dict(input=array(p.shape), **p.kwargs),
        ("input",),
        reference.avg_pool2d,
    ),
    "adaptive_avg_pool2d": Op(
        _adaptive_params(),
        ("uniform",),
        lambda p, array: dict(input=array(p.shape), output_size=p.output_size),
        ("input",),
        reference.adaptive_avg_pool2d,
    ),
    "batch_norm": Op(
        cases.batch_norm_cases(),
        ("uniform",),
        _batch_norm_arguments,
        ("input", "weight", "bias"),
        reference.batch_norm,
    ),
    "local_response_norm": Op(
        cases.lrn_cases(),
        ("uniform",),
        lambda p, array: dict(input=array(p.shape), size=p.size, alpha=p.alpha, beta=p.beta, k=p.k),
        ("input",),
        reference.local_response_norm,
    ),
    "dropout": Op(
        cases.dropout_cases(),
        ("uniform",),
        lambda p, array: dict(input=array(p.shape), mask=array.mask(p), p=p.p),
        ("input",),
        _dropout_twin,
    ),
    "cat": Op(
        cases.cat_cases(),
        ("uniform",),
        lambda p, array: dict(tensors=[array(shape) for shape in p.shapes], dim=p.dim),
        ("tensors",),
        reference.cat,
    ),
}


def op(name: str) -> Op:
    """The op called ``name``, or a ValueError listing the ones there are."""
    if name not in OPS:
        raise ValueError(f"check_op: name must be one of {sorted(OPS)}; got {name!r}")
    return OPS[name]


class _Arrays:
    """Makes a case's arrays one after another from its seed: each call the next array, so the
    same case always gives the same arrays."""

    def __init__(self, seed: int, values: str):
        if values not in VALUES:
            raise ValueError(f"check_op: a case's values must be one of {VALUES}; got {values!r}")
        self.rng = np.random.default_rng(seed)
        self.values = values

    def __call__(self, shape, low=-2.0, high=2.0):
        if self.values == "ties":
            return self.rng.integers(-2, 3, shape).astype(np.float64)
        return self.rng.uniform(low, high, shape)

    def integers(self, n, classes):
        """n class indices in [0, classes)."""
        return self.rng.integers(0, classes, n)

    def mask(self, p):
        """The units dropout keeps: u >= p for u uniform in [0, 1)."""
        return self.rng.random(p.shape) >= p.p


def drawn_cases(name: str) -> st.SearchStrategy:
    """The cases ``check_op(name, ...)`` draws: shapes and arguments, a seed, a kind of values."""
    spec = op(name)
    return st.builds(Case, spec.params, cases.seeds, st.sampled_from(spec.values))


def case_arguments(name: str, case: Case) -> dict:
    """The keyword arguments ``check_op(name, ...)`` calls the forward with on ``case``: float64
    arrays, sizes, strides and paddings as pairs ``(h, w)``."""
    return op(name).arguments(case.params, _Arrays(case.seed, case.values))


def case_grad_output(name: str, case: Case) -> np.ndarray:
    """The gradient of the output ``check_op(name, ...)`` calls the backward with on ``case``."""
    return grad_output_of(case, expected(name, case_arguments(name, case)).output)


def grad_output_of(case: Case, output: np.ndarray) -> np.ndarray:
    """The gradient of the output the backward is called with: uniform in [-2, 2), not ones, so
    a backward that ignores it is caught."""
    return uniform(case.seed + 1, output.shape)


class Expected(NamedTuple):
    """The reference's answer to one case."""

    output: np.ndarray
    grads: tuple  # one per differentiable argument, a list for cat's tensors, None where None
    state: dict  # arguments the forward updates in place (batch_norm's running statistics)


def expected(name: str, arguments: dict, grad_output: np.ndarray | None = None) -> Expected:
    """The reference's output, and, given ``grad_output``, the gradient of every differentiable
    argument, in float64 (``arguments`` are left as they are)."""
    spec = op(name)
    keywords = {key: _copy(value) for key, value in arguments.items()}
    leaves = []
    for key in spec.differentiable:
        if isinstance(keywords[key], list):
            keywords[key] = [Tensor(a, requires_grad=True) for a in keywords[key]]
            leaves += keywords[key]
        elif keywords[key] is not None:
            keywords[key] = Tensor(keywords[key], requires_grad=True)
            leaves.append(keywords[key])
    y = spec.twin(**keywords)
    running = ("running_mean", "running_var")
    state = {key: keywords[key] for key in running if keywords.get(key) is not None}
    if grad_output is None:
        return Expected(y.data, (), state)
    y.backward(np.asarray(grad_output, dtype=np.float64))
    grads = []
    for key in spec.differentiable:
        value = keywords[key]
        if isinstance(value, list):
            grads.append([t.grad for t in value])
        else:
            grads.append(None if value is None else value.grad)
    return Expected(y.data, tuple(grads), state)


def _copy(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
