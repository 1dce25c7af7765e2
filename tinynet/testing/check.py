"""``check_op``: check anyone's plain-NumPy op, forward and backward, against tinynet's reference.

    from tinynet.testing import check_op

    def test_my_conv():
        check_op("conv2d", my_conv2d, my_conv2d_backward)

The forward is called by keyword with ``torch.nn.functional``'s argument names, sizes, strides and
paddings always as pairs ``(h, w)``; the backward with the output's gradient first, then the same
keywords, and returns one gradient per differentiable input in the forward's order (``None``
where that input is ``None``; a bare array for an op with one). The expected answers are the
composed twins' (``tinynet.reference``) in float64. Cases are drawn by hypothesis (see
``tinynet.testing.cases``); on a failure hypothesis shrinks it to the smallest case it finds,
and ``AssertionError`` says that case (pasteable, to rerun it), which output or gradient is
wrong, its worst element, and a hint where a classic mistake explains the numbers
(``tinynet.testing.hints``).
"""

from __future__ import annotations

import textwrap
import traceback
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Flaky

from tinynet.testing import hints
from tinynet.testing.cases import (
    Case,
    case_arguments,
    drawn_cases,
    expected,
    grad_output_of,
    op,
)

# float64 on both sides: what differs is rounding, a few ulps of the largest value involved.
RTOL = 1e-6
ATOL = 1e-9
SMALL = 24  # arrays up to this size are printed in full in a failure message


UNREPEATABLE = (
    "a case failed once and passed when it was run again: the function gives different answers "
    "for the same arguments (does it keep state between calls, draw random numbers, or change "
    "an array it keeps?). The first failure:"
)


class Failure(NamedTuple):
    """What is wrong in one case: ``label`` names the value (output, grad_weight, running_var,
    ...), ``problem`` says what is wrong with it; ``got``/``want`` are the user's and the
    expected arrays where there are two to compare."""

    label: str
    problem: str
    got: np.ndarray | None = None
    want: np.ndarray | None = None
    raised: BaseException | None = None


class _CaseFailed(Exception):
    """Raised inside hypothesis' run so it shrinks the case; carries the failure."""

    def __init__(self, case: Case, failure: Failure):
        super().__init__(failure.problem)
        self.case, self.failure = case, failure


def check_op(
    name: str,
    forward: Callable | None,
    backward: Callable | None = None,
    *,
    max_examples: int = 100,
    seed: int = 0,
    case: Case | None = None,
) -> None:
    """Check ``forward`` (and ``backward``, if given) against tinynet's reference op ``name``.

    name:         'linear', 'relu', 'softmax', 'log_softmax', 'cross_entropy', 'conv2d',
                  'max_pool2d', 'avg_pool2d', 'adaptive_avg_pool2d', 'batch_norm',
                  'local_response_norm', 'dropout' or 'cat' (docs/testing.md has every call).
    forward:      ``forward(**arguments) -> output``; None checks the backward alone.
    backward:     ``backward(grad_output, **arguments) -> (grad, ...)``; None checks the forward.
    max_examples: how many cases hypothesis draws.
    seed:         the cases drawn (the same seed draws the same cases).
    case:         run this one case only (as a failure message prints it), no drawing.

    Raises AssertionError on the smallest failing case found; returns None when every case
    passes.
    """
    op(name)  # a ValueError naming the ops there are, before anything runs
    if forward is None and backward is None:
        raise ValueError(f"check_op({name!r}): needs forward, backward or both; got neither")
    for role, function in (("forward", forward), ("backward", backward)):
        if function is not None and not callable(function):
            raise TypeError(
                f"check_op({name!r}): {role} must be a function or None; "
                f"got {type(function).__name__}"
            )
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(
            f"check_op({name!r}): max_examples must be an int >= 1 (how many cases to draw); "
            f"got {max_examples!r}"
        )

    def check(one: Case) -> None:
        failure = check_case(name, forward, backward, one)
        if failure is not None:
            raise _CaseFailed(one, failure)

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # the user's overflows and NaNs are reported as findings, not as warnings per case
            warnings.simplefilter("ignore", RuntimeWarning)
            _run(check, name, case, max_examples, seed)
    except _CaseFailed as failed:
        message = failure_message(name, forward, backward, failed.case, failed.failure)
        raise AssertionError(message) from failed.failure.raised
    except Flaky as flaky:
        failed = next(
            (e for e in getattr(flaky, "exceptions", ()) if isinstance(e, _CaseFailed)), None
        )
        message = f"check_op({name!r}): {UNREPEATABLE}"
        if failed is not None:
            seen = failure_message(name, forward, backward, failed.case, failed.failure)
            message += "\n" + seen.replace("smallest failing case:", "the case:", 1)
        raise AssertionError(message) from None


def _run(check, name, case, max_examples, seed) -> None:
    """``check`` on ``case``, or on the cases hypothesis draws for op ``name``, shrinking a
    failure."""
    if case is not None:
        check(case)
        return
    run = hypothesis_seed(seed)(given(drawn_cases(name))(check))
    settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )(run)()


def check_case(name: str, forward, backward, case: Case) -> Failure | None:
    """The first thing wrong with the user's functions on ``case``, or None."""
    spec = op(name)
    arguments = case_arguments(name, case)
    reference = expected(name, arguments)
    grad_output = grad_output_of(case, reference.output)
    if forward is not None:
        given_arguments = _copies(arguments)
        try:
            output = forward(**given_arguments)
        except Exception as error:  # noqa: BLE001 - the user's code: any error is a finding
            return _raised("forward", error)
        failure = (
            compare("output", output, reference.output)
            or _changed_in_place("forward", arguments, given_arguments, reference.state)
            or _state(reference.state, given_arguments)
        )
        if failure:
            return failure
    if backward is not None:
        want = expected(name, arguments, grad_output).grads
        given_arguments = _copies(arguments)
        given_grad_output = grad_output.copy()
        try:
            grads = backward(given_grad_output, **given_arguments)
        except Exception as error:  # noqa: BLE001
            return _raised("backward", error)
        if name == "cat":  # one gradient per tensor of tensors (a bare array for one tensor)
            grads = (grads if isinstance(grads, (tuple, list)) else (grads,),)
        labels = [f"grad_{key}" for key in spec.differentiable]
        failure = _grads_shape(grads, spec.differentiable, labels)
        if failure:
            return failure
        if not isinstance(grads, (tuple, list)):
            grads = (grads,)
        for key, label, got, want_one in zip(spec.differentiable, labels, grads, want):
            if isinstance(want_one, list):
                failure = _tensor_list_grads(label, got, want_one)
            elif want_one is None:
                failure = (
                    None
                    if got is None
                    else Failure(
                        label,
                        f"{label}: {key} is None, so its gradient must be None; got "
                        f"{_describe(got)}",
                    )
                )
            else:
                failure = compare(label, got, want_one)
            if failure:
                return failure
        # grad_output too: a framework passes the same gradient on to every input of an op
        return _changed_in_place(
            "backward",
            {"grad_output": grad_output, **arguments},
            {"grad_output": given_grad_output, **given_arguments},
            {},
        )
    return None


def compare(label: str, got, want: np.ndarray) -> Failure | None:
    """Whether ``got`` is an array of ``want``'s shape whose values equal it to rounding."""
    if got is None:
        return Failure(label, f"{label}: expected an array of shape {want.shape}; got None")
    try:
        array = np.asarray(got)
    except Exception:  # noqa: BLE001 - anything that is not an array is reported as such
        array = None
    if array is None or array.dtype.kind not in "fiub" or array.dtype == object:
        return Failure(
            label, f"{label}: expected a float array of shape {want.shape}; got {_describe(got)}"
        )
    if array.shape != want.shape:
        return Failure(
            label,
            f"{label}: expected shape {want.shape}; got shape {array.shape}",
            array.astype(np.float64),
            want,
        )
    array = array.astype(np.float64)
    finite_wanted = np.isfinite(want)
    bad_nan = ~np.isfinite(array) & finite_wanted
    if bad_nan.any():
        index = tuple(int(i) for i in np.argwhere(bad_nan)[0])
        return Failure(
            label,
            f"{label}: {int(bad_nan.sum())} of {array.size} elements are NaN or infinite; "
            f"the first at index {index}: yours {float(array[index])!r}, expected "
            f"{float(want[index])!r}",
            array,
            want,
        )
    wrong = ~close(array, want)
    if not wrong.any():
        return None
    excess = np.abs(array - want) / tolerance(want)
    index = np.unravel_index(int(np.argmax(np.where(wrong, excess, -np.inf))), want.shape)
    index = tuple(int(i) for i in index)
    return Failure(
        label,
        f"{label}: {int(wrong.sum())} of {want.size} elements differ; the worst at index "
        f"{index}: yours {float(array[index])!r}, expected {float(want[index])!r}",
        array,
        want,
    )


def tolerance(want: np.ndarray) -> np.ndarray:
    """How far from ``want`` a float64 result may be: rounding of the largest value involved."""
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    return ATOL * scale + RTOL * np.abs(want)


def close(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Elementwise: whether ``got`` equals ``want`` to ``tolerance``."""
    with np.errstate(invalid="ignore"):
        return (np.abs(got - want) <= tolerance(want)) | (got == want)


def _grads_shape(grads, differentiable, labels) -> Failure | None:
    """Whether the backward returned one gradient per differentiable input."""
    count = len(differentiable)
    if isinstance(grads, (tuple, list)) and len(grads) == count:
        return None
    if count == 1 and isinstance(grads, np.ndarray):
        return None
    expected_form = f"a tuple of {count} ({', '.join(labels)})"
    if count == 1:
        expected_form += f" or a bare array ({labels[0]})"
    got = (
        f"a {type(grads).__name__} of {len(grads)}"
        if isinstance(grads, (tuple, list))
        else (_describe(grads))
    )
    return Failure("backward", f"backward: expected {expected_form}; got {got}")


def _tensor_list_grads(label, got, want) -> Failure | None:
    """cat's gradient: one array per tensor of ``tensors``."""
    if not isinstance(got, (tuple, list)) or len(got) != len(want):
        return Failure(
            "backward",
            f"backward: expected a tuple of {len(want)} gradients, one per tensor of tensors; "
            f"got {_describe(got)}",
        )
    for i, (one, want_one) in enumerate(zip(got, want)):
        failure = compare(f"{label}[{i}]", one, want_one)
        if failure:
            return failure
    return None


def _state(want_state: dict, given_arguments: dict) -> Failure | None:
    """batch_norm's running statistics, which the forward updates in place (as PyTorch's)."""
    for key, want in want_state.items():
        failure = compare(f"{key} (updated in place by the forward)", given_arguments[key], want)
        if failure:
            return failure
    return None


def _changed_in_place(role, arguments, given_arguments, updated) -> Failure | None:
    """Whether the user's function wrote into an argument it must leave alone."""
    for key, value in arguments.items():
        if key in updated or not isinstance(value, (np.ndarray, list)):
            continue
        given = given_arguments[key]
        pairs = zip(value, given) if isinstance(value, list) else [(value, given)]
        if not all(np.array_equal(a, b) for a, b in pairs):
            return Failure(key, f"{role} changed its argument {key} in place; it must not")
    return None


def _refused_the_call(error) -> bool:
    """A TypeError raised by the call itself (the function never ran): its parameters' names."""
    frames = traceback.extract_tb(error.__traceback__) if isinstance(error, TypeError) else []
    return len(frames) == 1


def _raised(role: str, error: Exception) -> Failure:
    return Failure(role, f"{role} raised {type(error).__name__}: {error}", raised=error)


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {value!r}"[:120]


def _copies(arguments: dict) -> dict:
    return {
        key: (
            value.copy()
            if isinstance(value, np.ndarray)
            else [v.copy() for v in value]
            if isinstance(value, list)
            else value
        )
        for key, value in arguments.items()
    }


def _summary(value) -> str:
    """An argument as the failure message prints it: small arrays in full, others by shape."""
    if isinstance(value, np.ndarray) and value.size <= SMALL:
        return repr(value).replace("\n", "\n" + " " * 8)
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}, {value.dtype}"
    if isinstance(value, list):
        return "[" + ", ".join(_summary(v) for v in value) + "]"
    return repr(value)


def _name_of(function, role: str) -> str:
    """How the rerun snippet calls the user's function: its name, or its role for a lambda."""
    if function is None:
        return "None"
    name = getattr(function, "__name__", "")
    return name if name.isidentifier() else role


def failure_message(name, forward, backward, case: Case, failure: Failure) -> str:
    """The AssertionError's text: what is wrong, on which case, why (if a hint knows), and how
    to rerun it."""
    arguments = case_arguments(name, case)
    reference = expected(name, arguments)
    grad_output = grad_output_of(case, reference.output)
    lines = [f"check_op({name!r}): {failure.problem}"]
    lines.append("smallest failing case:")
    lines += [f"    {key} = {_summary(value)}" for key, value in arguments.items()]
    if failure.label.startswith("grad") or failure.label == "backward":
        lines.append(f"    grad_output = {_summary(grad_output)}")
    if failure.raised is None:
        finding = hints.Finding(
            op=name,
            label=failure.label,
            got=failure.got,
            want=failure.want,
            arguments=arguments,
            grad_output=grad_output,
            case=case,
            passes=lambda other: check_case(name, forward, backward, other) is None,
        )
        lines += [f"hint: {hint}" for hint in hints.diagnose(finding)]
    elif _refused_the_call(failure.raised):
        first = "grad_output, " if failure.label == "backward" else ""
        lines.append(
            f"hint: check_op calls {failure.label}({first}{', '.join(arguments)}) by keyword, "
            "with torch.nn.functional's argument names: your function must take those names"
        )
    forward_name, backward_name = (
        _name_of(function, role)
        for function, role in ((forward, "forward"), (backward, "backward"))
    )
    params_class = type(case.params).__name__
    imports = "from tinynet.testing import Case, case_arguments, case_grad_output, check_op"
    if isinstance(case.params, tuple) and params_class != "tuple":
        imports += f"\nfrom tinynet.testing.strategies import {params_class}"
    snippet = textwrap.indent(
        f"{imports}\n"
        f"case = {case!r}\n"
        f"arguments = case_arguments({name!r}, case)  # the arrays, as the forward gets them\n"
        f"grad_output = case_grad_output({name!r}, case)  # the backward's first argument\n"
        f"check_op({name!r}, {forward_name}, {backward_name}, case=case)",
        "    ",
    )
    lines.append("rerun this case:\n" + snippet)
    return "\n".join(lines)
