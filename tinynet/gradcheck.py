"""Check an op's backward against central finite differences.

For a function f(x_1, ..., x_k) -> outputs and a fixed random cotangent v (one array per output,
seeded), both sides compute the gradient of the scalar  L = Σ <v, f(x)>:

    analytic  dL/dx_i[j]  from one ``backward`` pass with gradient v
    numeric   (L(x_i[j] + eps) - L(x_i[j] - eps)) / (2 eps)   for every element j of every x_i

Checking the vector-Jacobian product for a random v tests every element of every input's
gradient; an error in the backward escapes only if it is orthogonal to v, which has probability
zero. Use float64 inputs: in float32 the finite differences themselves are too coarse.

Kinks. At a ReLU input of 0 or a max-pool tie the function has no derivative, and if one lies
within eps of the point the finite difference is meaningless. Tests of single ops avoid that by
construction (values away from 0, distinct values). For a whole network, where that is not
possible, ``skip_kinks=True`` also differences each element with eps/2: on a smooth function
the two estimates agree to rounding, so where they disagree a kink lies within eps and the
element is reported as skipped instead of compared. A wrong backward on smooth ground still
fails: both estimates agree with each other and not with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinynet.function import enable_grad, no_grad
from tinynet.tensor import Tensor


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree; the message says where and by how much."""


@dataclass
class InputReport:
    """How the gradient of one input compares (errors are maxima over its compared elements)."""

    index: int
    shape: tuple[int, ...]
    compared: int  # elements compared
    skipped: int  # elements skipped because a kink lies within eps (skip_kinks=True only)
    max_abs_error: float
    max_rel_error: float
    worst: list[tuple[tuple[int, ...], float, float]] = field(default_factory=list)
    """Up to five failing elements: (index, analytic, numeric)."""

    @property
    def ok(self) -> bool:
        return not self.worst


@dataclass
class GradcheckResult:
    inputs: list[InputReport]

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.inputs)

    def __str__(self) -> str:
        lines = []
        for r in self.inputs:
            skipped = f", {r.skipped} skipped at kinks" if r.skipped else ""
            lines.append(
                f"input {r.index} {r.shape}, {r.compared} elements compared{skipped}: "
                f"max abs error {r.max_abs_error:.3e}, max rel error {r.max_rel_error:.3e}  "
                + ("ok" if r.ok else "FAILED")
            )
            for where, analytic, numeric in r.worst:
                lines.append(
                    f"    at {where}: analytic {analytic:.10g}, numeric {numeric:.10g}, "
                    f"abs error {abs(analytic - numeric):.3e}"
                )
        return "\n".join(lines)


@dataclass(frozen=True)
class _Settings:
    eps: float
    atol: float
    rtol: float
    seed: int
    samples: int | None
    skip_kinks: bool

    def close(self, a, b) -> np.ndarray:
        return np.abs(a - b) <= self.atol + self.rtol * np.abs(b)


def _outputs(fn, inputs) -> list[Tensor]:
    out = fn(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    for i, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: fn must return Tensors; output {i} is {type(o).__name__}")
    return outs


def check_gradients(
    fn,
    inputs,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
    samples: int | None = None,
    skip_kinks: bool = False,
) -> GradcheckResult:
    """Compare analytic and numeric gradients of ``fn`` for every input that requires grad.

    Returns a ``GradcheckResult`` (per-input maximum errors and the worst elements); an element
    fails when |analytic - numeric| > atol + rtol * |numeric|. ``fn`` must be deterministic.
    samples: compare only this many elements of each input, drawn at random (seeded), instead
        of all: for large tensors such as a network's weights, where each element costs two
        evaluations of fn.
    skip_kinks: skip (and count) elements with a kink within eps; see the module docstring.
    The inputs' ``.grad`` are left as they were.
    """
    if samples is not None and (not isinstance(samples, int) or samples < 1):
        raise ValueError(f"gradcheck: samples must be a positive int or None; got {samples!r}")
    inputs = list(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(
                f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need float64 "
                f"inputs (use tensor.double())"
            )
    settings = _Settings(eps, atol, rtol, seed, samples, skip_kinks)
    saved_grads = {i: inputs[i].grad for i in checked}
    for i in checked:
        inputs[i].grad = None
        # Perturbation writes through a flat view, which needs contiguous memory.
        inputs[i].data = np.ascontiguousarray(inputs[i].data)
    try:
        return _compare(fn, inputs, checked, settings)
    finally:
        for i, grad in saved_grads.items():
            inputs[i].grad = grad


def _compare(fn, inputs, checked, settings: _Settings) -> GradcheckResult:
    with enable_grad():
        outs = _outputs(fn, inputs)
    rng = np.random.default_rng(settings.seed)
    cotangents = [rng.standard_normal(o.shape).astype(o.dtype) for o in outs]

    def loss() -> float:
        with no_grad():
            return float(sum(np.sum(v * o.data) for v, o in zip(cotangents, _outputs(fn, inputs))))

    def central_difference(flat, j, eps) -> float:
        original = flat[j]
        flat[j] = original + eps
        plus = loss()
        flat[j] = original - eps
        minus = loss()
        flat[j] = original
        return (plus - minus) / (2 * eps)

    # Analytic: one backward of L = Σ <v, out>.
    total = None
    for v, o in zip(cotangents, outs):
        if o.requires_grad:
            term = (o * Tensor(v)).sum()
            total = term if total is None else total + term
    if total is None:
        raise ValueError("gradcheck: no output of fn depends on an input that requires grad")
    total.backward()

    reports = []
    for i in checked:
        x = inputs[i]
        flat = x.data.reshape(-1)  # a view: perturbing it perturbs the input in place
        if settings.samples is None or settings.samples >= flat.size:
            elements = np.arange(flat.size)
        else:
            elements = np.sort(rng.choice(flat.size, settings.samples, replace=False))
        numeric = np.array([central_difference(flat, j, settings.eps) for j in elements])
        smooth = np.ones(len(elements), dtype=bool)
        if settings.skip_kinks:
            halved = np.array([central_difference(flat, j, settings.eps / 2) for j in elements])
            smooth = settings.close(numeric, halved)
        analytic = (x.grad if x.grad is not None else np.zeros_like(x.data)).reshape(-1)[elements]
        error = np.where(smooth, np.abs(analytic - numeric), 0.0)
        relative = error / np.maximum(np.abs(numeric), np.finfo(np.float64).tiny)
        failing = np.flatnonzero(smooth & ~settings.close(analytic, numeric))
        worst = failing[np.argsort(-error[failing])][:5]
        reports.append(
            InputReport(
                index=i,
                shape=x.shape,
                compared=int(smooth.sum()),
                skipped=int((~smooth).sum()),
                max_abs_error=float(error.max(initial=0.0)),
                max_rel_error=float(relative.max(initial=0.0)),
                worst=[
                    (
                        tuple(int(v) for v in np.unravel_index(elements[k], x.shape)),
                        float(analytic[k]),
                        float(numeric[k]),
                    )
                    for k in worst
                ],
            )
        )
    return GradcheckResult(reports)


def gradcheck(
    fn,
    inputs,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
    samples: int | None = None,
    skip_kinks: bool = False,
    raise_exception: bool = True,
) -> bool:
    """True if ``fn``'s backward matches central differences for every input that requires grad.

    fn:     a function of the ``inputs`` returning a Tensor or a tuple of Tensors
    inputs: Tensors (float64 where requires_grad=True) and any other arguments of fn
    samples: compare that many random elements of each input instead of all (large tensors)
    skip_kinks: skip elements within eps of a ReLU/max-pool kink (whole networks)
    On a mismatch, raises ``GradcheckError`` naming the input, the element indices, the analytic
    and numeric values and the errors (or returns False with ``raise_exception=False``).

    >>> x = tinynet.tensor(np.random.rand(2, 3), dtype=np.float64, requires_grad=True)
    >>> tinynet.gradcheck(lambda x: (x * x).sum(), [x])
    True
    """
    result = check_gradients(fn, inputs, eps, atol, rtol, seed, samples, skip_kinks)
    if not result.ok and raise_exception:
        raise GradcheckError(
            f"gradcheck: backward disagrees with finite differences "
            f"(eps={eps}, atol={atol}, rtol={rtol})\n{result}"
        )
    return result.ok
