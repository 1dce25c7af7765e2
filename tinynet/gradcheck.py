"""Check an op's backward against central finite differences.

For a function f(x_1, ..., x_k) -> outputs and a fixed random cotangent v (one array per output,
seeded), both sides compute the gradient of the scalar  L = Σ <v, f(x)>:

    analytic  dL/dx_i[j]  from one ``backward`` pass with gradient v
    numeric   (L(x_i[j] + eps) - L(x_i[j] - eps)) / (2 eps)   for every element j of every x_i

Checking the vector-Jacobian product for a random v tests every element of every input's
gradient; an error in the backward escapes only if it is orthogonal to v, which has probability
zero. Use float64 inputs: in float32 the finite differences themselves are too coarse.
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
    """How the gradient of one input compares (errors are maxima over its elements)."""

    index: int
    shape: tuple[int, ...]
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
            status = "ok" if r.ok else "FAILED"
            lines.append(
                f"input {r.index} {r.shape}: max abs error {r.max_abs_error:.3e}, "
                f"max rel error {r.max_rel_error:.3e}  {status}"
            )
            for where, analytic, numeric in r.worst:
                lines.append(
                    f"    at {where}: analytic {analytic:.10g}, numeric {numeric:.10g}, "
                    f"abs error {abs(analytic - numeric):.3e}"
                )
        return "\n".join(lines)


def _outputs(fn, inputs) -> list[Tensor]:
    out = fn(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    for i, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: fn must return Tensors; output {i} is {type(o).__name__}")
    return outs


def check_gradients(
    fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, seed: int = 0
) -> GradcheckResult:
    """Compare analytic and numeric gradients of ``fn`` for every input that requires grad.

    Returns a ``GradcheckResult`` (per-input maximum errors and the worst elements); an element
    fails when |analytic - numeric| > atol + rtol * |numeric|. ``fn`` must be deterministic.
    The inputs' ``.grad`` are left as they were.
    """
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
    saved_grads = {i: inputs[i].grad for i in checked}
    for i in checked:
        inputs[i].grad = None
        # Perturbation writes through a flat view, which needs contiguous memory.
        inputs[i].data = np.ascontiguousarray(inputs[i].data)
    try:
        return _compare(fn, inputs, checked, eps, atol, rtol, seed)
    finally:
        for i, grad in saved_grads.items():
            inputs[i].grad = grad


def _compare(fn, inputs, checked, eps, atol, rtol, seed) -> GradcheckResult:
    with enable_grad():
        outs = _outputs(fn, inputs)
    rng = np.random.default_rng(seed)
    cotangents = [rng.standard_normal(o.shape).astype(o.dtype) for o in outs]

    def loss() -> float:
        with no_grad():
            return float(sum(np.sum(v * o.data) for v, o in zip(cotangents, _outputs(fn, inputs))))

    # Analytic: one backward of L = Σ <v, out>, seeded per output.
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
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        numeric = np.empty_like(x.data)
        flat = x.data.reshape(-1)  # a view: perturbing it perturbs the input in place
        for j in range(flat.size):
            original = flat[j]
            flat[j] = original + eps
            plus = loss()
            flat[j] = original - eps
            minus = loss()
            flat[j] = original
            numeric.reshape(-1)[j] = (plus - minus) / (2 * eps)
        error = np.abs(analytic - numeric)
        failing = np.argwhere(error > atol + rtol * np.abs(numeric))
        worst = sorted(failing.tolist(), key=lambda w: -error[tuple(w)])[:5]
        reports.append(
            InputReport(
                index=i,
                shape=x.shape,
                max_abs_error=float(error.max(initial=0.0)),
                max_rel_error=float(
                    (error / np.maximum(np.abs(numeric), np.finfo(np.float64).tiny)).max(
                        initial=0.0
                    )
                ),
                worst=[
                    (tuple(w), float(analytic[tuple(w)]), float(numeric[tuple(w)])) for w in worst
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
    raise_exception: bool = True,
) -> bool:
    """True if ``fn``'s backward matches central differences for every input that requires grad.

    fn:     a function of the ``inputs`` returning a Tensor or a tuple of Tensors
    inputs: Tensors (float64 where requires_grad=True) and any other arguments of fn
    On a mismatch, raises ``GradcheckError`` naming the input, the element indices, the analytic
    and numeric values and the errors (or returns False with ``raise_exception=False``).

    >>> x = tinynet.tensor(np.random.rand(2, 3), dtype=np.float64, requires_grad=True)
    >>> tinynet.gradcheck(lambda x: (x * x).sum(), [x])
    True
    """
    result = check_gradients(fn, inputs, eps=eps, atol=atol, rtol=rtol, seed=seed)
    if not result.ok and raise_exception:
        raise GradcheckError(
            f"gradcheck: backward disagrees with finite differences "
            f"(eps={eps}, atol={atol}, rtol={rtol})\n{result}"
        )
    return result.ok
