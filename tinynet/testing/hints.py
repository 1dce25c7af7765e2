"""Diagnoses of classic mistakes, for ``check_op``'s failure messages.

Each function takes the ``Finding`` (the op, which value is wrong, the user's array and the
expected one, the case's arguments) and returns a sentence when its mistake explains the
numbers, else None: it recomputes what the mistaken version would give and compares, or reruns
the user's functions on a neighbouring case (stride 1, no padding) to see which argument breaks
them. ``diagnose`` runs them all.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinynet.testing.cases import Case, expected, op

POOLS_AND_CONV = ("conv2d", "max_pool2d", "avg_pool2d")


@dataclass
class Finding:
    """One wrong value of one case."""

    op: str
    label: str  # 'output', 'grad_input', 'running_var', ...
    got: np.ndarray | None  # the user's value, float64 (None if it was not an array)
    want: np.ndarray | None  # the expected value
    arguments: dict  # the forward's keyword arguments
    grad_output: np.ndarray
    case: Case
    passes: Callable[[Case], bool]  # whether the user's functions pass on another case


def _same(a, b) -> bool:
    """Equal to float64 rounding (shapes included)."""
    if a is None or b is None or np.shape(a) != np.shape(b):
        return False
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
    return bool(np.allclose(a, b, rtol=1e-6, atol=1e-9 * scale))


def _gradient(finding: Finding, arguments: dict | None = None, grad_output=None):
    """The reference's gradient named by the finding's label on (changed) arguments."""
    arguments = finding.arguments if arguments is None else arguments
    grad_output = finding.grad_output if grad_output is None else grad_output
    grads = expected(finding.op, arguments, grad_output).grads
    key = finding.label.removeprefix("grad_")
    return grads[op(finding.op).differentiable.index(key)]


def _reference_with(finding: Finding, **changes):
    """The reference's value named by the finding's label, with some arguments changed."""
    arguments = dict(finding.arguments, **changes)
    if finding.label == "output":
        return expected(finding.op, arguments).output
    return _gradient(finding, arguments)


# ------------------------------------------------------------------ one function per mistake
def transposed_weight(finding: Finding) -> str | None:
    """grad_weight computed as cols · dYᵀ instead of dY · colsᵀ (or x · dYᵀ for linear)."""
    if finding.label != "grad_weight" or finding.got is None or finding.want is None:
        return None
    got, want = finding.got, finding.want
    if got.size != want.size or want.ndim < 2:
        return None
    out_channels = want.shape[0]
    candidates = [want.reshape(out_channels, -1).T]
    if want.ndim == 4:
        candidates.append(want.transpose(1, 0, 2, 3))
    for candidate in candidates:
        if _same(got.reshape(candidate.shape), candidate) or _same(
            got.reshape(-1), candidate.reshape(-1)
        ):
            formula = "dW = dY · colsᵀ" if finding.op == "conv2d" else "dW = dYᵀ · x"
            return (
                "grad_weight equals the expected gradient transposed (out and in swapped): "
                f"{formula}, shaped (out, in, ...) like the weight"
            )
    return None


def _coverage(finding: Finding) -> np.ndarray:
    """How many windows (of the op's output) each input element falls in, padding counted."""
    arguments, shape = finding.arguments, finding.arguments["input"].shape
    if finding.op == "conv2d":
        kernel = arguments["weight"].shape[2:]
    else:
        kernel = arguments["kernel_size"]
    out_size = expected(finding.op, arguments).output.shape[2:]
    counts = []
    for size, k, s, p, out in zip(shape[2:], kernel, arguments["stride"], arguments["padding"],
                                  out_size):  # fmt: skip
        starts = np.arange(out) * s - p
        positions = np.arange(size)[:, None]
        counts.append(((positions >= starts) & (positions < starts + k)).sum(axis=1))
    return np.outer(counts[0], counts[1])[None, None]


def col2im_overwrites(finding: Finding) -> str | None:
    """col2im (or a pooling backward) that assigns each window's gradient instead of adding:
    right where an element is in one window, wrong only where windows overlap."""
    if finding.op not in POOLS_AND_CONV or finding.label != "grad_input":
        return None
    if finding.got is None or finding.got.shape != finding.want.shape:
        return None
    coverage = np.broadcast_to(_coverage(finding), finding.want.shape)
    wrong = ~np.isclose(finding.got, finding.want, rtol=1e-6, atol=1e-9)
    overlapping = coverage > 1
    if (
        wrong.any()
        and overlapping.any()
        and not overlapping.all()
        and not (wrong & ~overlapping).any()
    ):
        return (
            "grad_input is right where windows do not overlap and wrong only where they do: "
            "col2im must add each window's gradient (+=), not overwrite it (=)"
        )
    return None


def _max_pool_tie_gradients(finding: Finding) -> tuple[np.ndarray, np.ndarray]:
    """grad_input as if every tied maximum of a window got its gradient, and as if the last
    one did."""
    arguments = finding.arguments
    x = arguments["input"]
    (kh, kw), (sh, sw), (ph, pw) = (arguments[k] for k in ("kernel_size", "stride", "padding"))
    y = expected("max_pool2d", arguments).output
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph + kh), (pw, pw + kw)), constant_values=-np.inf)
    every, last = np.zeros_like(padded), np.zeros_like(padded)
    for p, q in itertools.product(range(y.shape[2]), range(y.shape[3])):
        window = (slice(None), slice(None), slice(p * sh, p * sh + kh), slice(q * sw, q * sw + kw))
        ties = padded[window] == y[:, :, p, q][:, :, None, None]
        g = finding.grad_output[:, :, p, q][:, :, None, None]
        every[window] += ties * g
        flat = ties.reshape(ties.shape[0], ties.shape[1], -1)
        last_index = flat.shape[2] - 1 - np.argmax(flat[:, :, ::-1], axis=2)
        one_hot = np.arange(flat.shape[2]) == last_index[:, :, None]
        last[window] += one_hot.reshape(ties.shape) * g
    inside = (slice(None), slice(None), slice(ph, ph + x.shape[2]), slice(pw, pw + x.shape[3]))
    return every[inside], last[inside]


TIE_RULE = (
    "PyTorch's rule: the first maximum of the window in scan order (row by row) gets the whole "
    "gradient"
)


def every_tied_maximum(finding: Finding) -> str | None:
    """The max-pool gradient sent to every tied maximum of a window, or to the last one."""
    if finding.op != "max_pool2d" or finding.label != "grad_input" or finding.got is None:
        return None
    every, last = _max_pool_tie_gradients(finding)
    if _same(finding.got, every):
        return f"grad_input sends the gradient to every tied maximum of a window; {TIE_RULE}"
    if _same(finding.got, last):
        return f"grad_input sends the gradient to the last tied maximum of a window; {TIE_RULE}"
    return None


def _per_channel(arguments: dict):
    """BatchNorm's layout of ``arguments["input"]`` x: the axes its statistics average over
    (every axis but the channels'), the shape that lays a per-channel vector along x, and γ in
    that shape (1 without a weight)."""
    x, weight = arguments["input"], arguments["weight"]
    axes, shape = (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)
    return axes, shape, 1.0 if weight is None else weight.reshape(shape)


def batch_norm_statistics_constant(finding: Finding) -> str | None:
    """BatchNorm's training backward that treats the batch mean and/or variance as constants."""
    arguments = finding.arguments
    if finding.op != "batch_norm" or finding.label != "grad_input" or not arguments["training"]:
        return None
    x, dy = arguments["input"], finding.grad_output
    axes, _, gamma = _per_channel(arguments)
    mu = x.mean(axes, keepdims=True)
    inv_std = 1 / np.sqrt(x.var(axes, keepdims=True) + arguments["eps"])
    x_hat = (x - mu) * inv_std
    d_hat = dy * gamma
    without_both = d_hat * inv_std
    without_mean = (d_hat - x_hat * (d_hat * x_hat).mean(axes, keepdims=True)) * inv_std
    without_var = (d_hat - d_hat.mean(axes, keepdims=True)) * inv_std
    terms = {
        "both the batch mean and the batch variance": without_both,
        "the batch mean": without_mean,
        "the batch variance": without_var,
    }
    for missing, candidate in terms.items():
        if _same(finding.got, candidate):
            return (
                f"grad_input has no terms through {missing}: in training mode the mean and "
                "the variance are functions of every input, so dx = γ/σ · (dŷ - mean(dŷ) - "
                "x̂ · mean(dŷ · x̂)), means per channel"
            )
    return None


def running_var_biased(finding: Finding) -> str | None:
    """The running variance updated with the biased batch variance."""
    arguments = finding.arguments
    if finding.op != "batch_norm" or not finding.label.startswith("running_var"):
        return None
    x = arguments["input"]
    axes, _, _ = _per_channel(arguments)
    momentum = arguments["momentum"]
    biased = (1 - momentum) * arguments["running_var"] + momentum * x.var(axes)
    if _same(finding.got, biased):
        return (
            "running_var took the biased batch variance: as PyTorch, update it with the unbiased "
            "one, var · m / (m - 1) for the m values of a channel"
        )
    return None


def exp_overflow(finding: Finding) -> str | None:
    """softmax, log_softmax or cross-entropy without subtracting the maximum: exp overflows."""
    if finding.op not in ("softmax", "log_softmax", "cross_entropy") or finding.got is None:
        return None
    if np.all(np.isfinite(finding.got)) or np.max(np.abs(finding.arguments["input"])) < 700:
        return None
    return (
        "NaN or inf from logits as large as "
        f"{np.max(np.abs(finding.arguments['input'])):.4g}: exp overflows above 709; subtract "
        "the maximum along the axis first (softmax(x) = softmax(x - max x))"
    )


def _conv_with_pads(arguments: dict, pads) -> np.ndarray:
    """conv2d's reference output with explicit (top, bottom, left, right) zero padding."""
    top, bottom, left, right = pads
    padded = dict(arguments, padding=(0, 0))
    padded["input"] = np.pad(arguments["input"], ((0, 0), (0, 0), (top, bottom), (left, right)))
    return expected("conv2d", padded).output


def padding_one_side(finding: Finding) -> str | None:
    """conv2d's output as if one side were padded one row or column more or less."""
    if finding.op != "conv2d" or finding.label != "output" or finding.got is None:
        return None
    ph, pw = finding.arguments["padding"]
    kh, kw = finding.arguments["weight"].shape[2:]
    h, w = finding.arguments["input"].shape[2:]
    sides = ("top", "bottom", "left", "right")
    for side, change in itertools.product(range(4), (1, -1)):
        pads = [ph, ph, pw, pw]
        pads[side] += change
        if pads[side] < 0 or h + pads[0] + pads[1] < kh or w + pads[2] + pads[3] < kw:
            continue
        if _same(finding.got, _conv_with_pads(finding.arguments, pads)):
            return (
                f"the output is the convolution with {pads[side]} instead of "
                f"{(ph, ph, pw, pw)[side]} zeros at the {sides[side]}: pad every side by "
                "padding (h, w), top and bottom by h, left and right by w"
            )
    return None


def bias_wrong_axes(finding: Finding) -> str | None:
    """grad_bias summed (or averaged) over other axes of grad_output than all but the channel."""
    if finding.label != "grad_bias" or finding.got is None:
        return None
    dy, got = finding.grad_output, finding.got
    channel = dy.ndim - 1 if finding.op == "linear" else 1
    right = tuple(a for a in range(dy.ndim) if a != channel)
    candidates = [
        (how, axes, reduce(dy, axis=axes))
        for count in range(dy.ndim + 1)
        for axes in itertools.combinations(range(dy.ndim), count)
        for how, reduce in (("summed", np.sum), ("averaged", np.mean))
        if (axes, how) != (right, "summed")
    ]
    # A candidate of got's very shape first: a batch of 1 makes several sums equal in value.
    # Then the likelier mistakes: the channel kept, as many axes summed as can be, the last ones.
    candidates.sort(
        key=lambda c: (np.shape(c[2]) != got.shape, channel in c[1], -len(c[1]), [-a for a in c[1]])
    )
    for how, axes, candidate in candidates:
        if np.size(candidate) == got.size and _same(
            np.reshape(got, np.shape(candidate)), candidate
        ):
            what = f"grad_output {how} over axes {axes}" if axes else "grad_output itself"
            return (
                f"grad_bias is {what}; it is grad_output summed over every axis but the channel "
                f"axis {channel}: {right}"
            )
    return None


def _neighbour(finding: Finding, **changes) -> Case | None:
    """The finding's case with some arguments changed, if that is a case too."""
    params = finding.case.params
    if not hasattr(params, "_replace"):
        return None
    return finding.case._replace(params=params._replace(**changes))


def only_stride_one(finding: Finding) -> str | None:
    """Right with stride 1, wrong with this stride: windows not started at p · stride."""
    if finding.op not in POOLS_AND_CONV or finding.arguments["stride"] == (1, 1):
        return None
    neighbour = _neighbour(finding, stride=(1, 1))
    if neighbour is None or not finding.passes(neighbour):
        return None
    return (
        f"this case passes with stride (1, 1) and fails with stride {finding.arguments['stride']}"
        ": output (p, q)'s window starts at (p · sh - ph, q · sw - pw), the output has "
        "(H + 2ph - kh) // sh + 1 rows, and the backward sends each window's gradient back to "
        "those same positions"
    )


def only_without_padding(finding: Finding) -> str | None:
    """Right without padding, wrong with it."""
    if finding.op not in POOLS_AND_CONV or finding.arguments["padding"] == (0, 0):
        return None
    h, w = finding.arguments["input"].shape[2:]
    kernel = finding.arguments.get("kernel_size") or finding.arguments["weight"].shape[2:]
    if h < kernel[0] or w < kernel[1]:
        return None
    neighbour = _neighbour(finding, padding=(0, 0))
    if neighbour is None or not finding.passes(neighbour):
        return None
    return (
        f"this case passes with padding (0, 0) and fails with padding "
        f"{finding.arguments['padding']}: check how the padding enters the output size, the "
        "window positions and (backward) the crop back to the input"
    )


def ignores_grad_output(finding: Finding) -> str | None:
    """A backward that computes the gradient for grad_output = 1 and never multiplies by it."""
    if not finding.label.startswith("grad_") or finding.got is None or "[" in finding.label:
        return None
    ones = np.ones_like(finding.grad_output)
    if _same(finding.got, _gradient(finding, grad_output=ones)):
        return (
            f"{finding.label} is the gradient for grad_output = 1: multiply by the grad_output "
            "the backward is given (the chain rule)"
        )
    return None


def float32_precision(finding: Finding) -> str | None:
    """Right to float32's precision only."""
    if finding.got is None or finding.want is None or finding.got.shape != finding.want.shape:
        return None
    scale = max(1.0, float(np.max(np.abs(finding.want), initial=0.0)))
    if np.allclose(finding.got, finding.want, rtol=1e-4, atol=1e-6 * scale):
        return (
            f"{finding.label} is right to about float32 precision only: the arrays are float64; "
            "compute in float64 (np.float32 somewhere?)"
        )
    return None


def relu_at_zero(finding: Finding) -> str | None:
    """relu's gradient at exactly 0."""
    if finding.op != "relu" or finding.label != "grad_input" or finding.got is None:
        return None
    zero = finding.arguments["input"] == 0
    wrong = ~np.isclose(finding.got, finding.want)
    if zero.any() and not (wrong & ~zero).any():
        return "at input exactly 0 the gradient is 0, as in PyTorch: dy/dx = [x > 0]"
    return None


def cross_entropy_sum(finding: Finding) -> str | None:
    """cross-entropy summed over the batch instead of averaged."""
    if finding.op != "cross_entropy" or finding.got is None or finding.want is None:
        return None
    n = finding.arguments["input"].shape[0]
    if n > 1 and _same(finding.got, finding.want * n):
        return (
            f"{finding.label} is {n} times the expected one, the batch size: the loss is the mean "
            "over the batch (reduction='mean'), so its gradient is divided by N too"
        )
    return None


def label_smoothing_ignored(finding: Finding) -> str | None:
    """cross-entropy with the one-hot target where label smoothing asks for a smoothed one."""
    if finding.op != "cross_entropy" or finding.arguments["label_smoothing"] == 0:
        return None
    if _same(finding.got, _reference_with(finding, label_smoothing=0.0)):
        return (
            f"{finding.label} is the one without label smoothing: the target of sample n is "
            "q = (1 - ε) onehot(t_n) + ε / C, with ε = label_smoothing"
        )
    return None


def count_include_pad_flipped(finding: Finding) -> str | None:
    """avg_pool2d dividing by the other count: padding counted where it must not be, or not."""
    if finding.op != "avg_pool2d" or finding.arguments["padding"] == (0, 0):
        return None
    include = finding.arguments["count_include_pad"]
    if _same(finding.got, _reference_with(finding, count_include_pad=not include)):
        counted = "counts" if include else "does not count"
        return (
            f"{finding.label} divides as if count_include_pad were {not include}: with "
            f"count_include_pad={include} the divisor {counted} the zero padding in the window "
            "(never the part of a ceil_mode window beyond the padding)"
        )
    return None


def batch_norm_wrong_statistics(finding: Finding) -> str | None:
    """BatchNorm using the batch's statistics in evaluation, or the running ones in training."""
    arguments = finding.arguments
    if finding.op != "batch_norm" or arguments["running_mean"] is None:
        return None
    if finding.label.startswith("running"):
        return None
    training = arguments["training"]
    # normalised with the batch's statistics, the running ones left alone (one value per channel
    # has no unbiased variance to update them with)
    other = (
        dict(training=False)
        if training
        else dict(training=True, running_mean=None, running_var=None)
    )
    if _same(finding.got, _reference_with(finding, **other)):
        if training:
            return (
                f"{finding.label} uses the running statistics; in training BatchNorm normalises "
                "with the batch's mean and (biased) variance, per channel"
            )
        return (
            f"{finding.label} uses the batch's statistics; in evaluation (training=False) "
            "BatchNorm normalises with running_mean and running_var"
        )
    return None


def dropout_scale(finding: Finding) -> str | None:
    """Dropout's kept units not scaled by 1 / (1 - p), or scaled by 1 / p."""
    if finding.op != "dropout" or finding.got is None or finding.want is None:
        return None
    p = finding.arguments["p"]
    for wrong, factor in (("not scaled", 1 - p), ("divided by p", (1 - p) / p if p else None)):
        if factor is not None and _same(finding.got, finding.want * factor):
            return (
                f"{finding.label}: the kept units are {wrong}; they are divided by 1 - p (the "
                "expected value of each unit stays the same): input * mask / (1 - p)"
            )
    return None


def softmax_jacobian_diagonal(finding: Finding) -> str | None:
    """softmax's backward as if each output depended on its own input only: g · y (1 - y)."""
    if finding.op != "softmax" or finding.label != "grad_input":
        return None
    y = expected("softmax", finding.arguments).output
    if _same(finding.got, finding.grad_output * y * (1 - y)):
        return (
            "grad_input is grad_output · y (1 - y), the Jacobian's diagonal only: every output "
            "depends on every input along dim, so dx = y · (g - Σ_dim g · y)"
        )
    return None


def right_values_wrong_shape(finding: Finding) -> str | None:
    """The expected values, in another shape (a sum with keepdims=True, a row for a column)."""
    got, want = finding.got, finding.want
    if got is None or want is None or got.shape == want.shape or got.size != want.size:
        return None
    if _same(got.reshape(want.shape), want):
        return (
            f"{finding.label} holds the right values in shape {got.shape}; return it in the "
            f"shape of its {finding.label.removeprefix('grad_')}, {want.shape} (a sum taken "
            "with keepdims=True, or an array left unreshaped)"
        )
    return None


def kernel_flipped(finding: Finding) -> str | None:
    """conv2d computed as a textbook convolution: the kernel flipped (rotated 180° or mirrored)."""
    if finding.op != "conv2d" or finding.label not in ("output", "grad_input"):
        return None
    weight = finding.arguments["weight"]
    turns = (((2, 3), "rotated 180°"), ((2,), "flipped upside down"), ((3,), "mirrored"))
    for axes, how in turns:
        flipped = np.flip(weight, axes)
        if not np.array_equal(flipped, weight) and _same(
            finding.got, _reference_with(finding, weight=flipped)
        ):
            return (
                f"{finding.label} is that of a conv2d whose kernel is {how}: PyTorch's "
                "conv2d is a cross-correlation, y[p, q] = Σ W[i, j] · x[p·s + i, q·s + j], with "
                "W as it is given, no flip"
            )
    return None


def batch_norm_unbiased_variance(finding: Finding) -> str | None:
    """BatchNorm in training normalised with the unbiased batch variance (m - 1)."""
    arguments = finding.arguments
    if finding.op != "batch_norm" or finding.label not in ("output", "grad_input"):
        return None
    x = arguments["input"]
    axes, shape, gamma = _per_channel(arguments)
    m = x.size // x.shape[1]
    if not arguments["training"] or m < 2:
        return None
    beta = 0.0 if arguments["bias"] is None else arguments["bias"].reshape(shape)
    unbiased = x.var(axes, keepdims=True) * m / (m - 1)
    inv_std = 1 / np.sqrt(unbiased + arguments["eps"])
    x_hat = (x - x.mean(axes, keepdims=True)) * inv_std
    if finding.label == "output":
        candidates = [gamma * x_hat + beta]
    else:  # the biased formula fed with the unbiased statistics, and the exact gradient of it
        g = finding.grad_output * gamma
        centred = g - g.mean(axes, keepdims=True)
        along = x_hat * (g * x_hat).mean(axes, keepdims=True)
        candidates = [(centred - along) * inv_std, (centred - along * m / (m - 1)) * inv_std]
    if any(_same(finding.got, candidate) for candidate in candidates):
        return (
            f"{finding.label} uses the unbiased batch variance (divided by m - 1): in training "
            "BatchNorm normalises with the biased one, mean((x - μ)²) over the m values of a "
            "channel; only the running variance is updated with the unbiased one"
        )
    return None


def max_pool_zero_padding(finding: Finding) -> str | None:
    """max_pool2d padded with zeros, where the padding must never win a window (-inf)."""
    arguments = finding.arguments
    if finding.op != "max_pool2d" or finding.label not in ("output", "grad_input"):
        return None
    (ph, pw), (h, w) = arguments["padding"], arguments["input"].shape[2:]
    if (ph, pw) == (0, 0):
        return None
    zeros = np.pad(arguments["input"], ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    padded = dict(arguments, input=zeros, padding=(0, 0))
    if finding.label == "output":
        candidate = expected("max_pool2d", padded).output
    else:
        candidate = _gradient(finding, padded)[:, :, ph : ph + h, pw : pw + w]
    if _same(finding.got, candidate):
        return (
            f"{finding.label} is that of max pooling over zeros as padding: a padded pixel must "
            "never win a window, so pad with -inf (a window of negative pixels has a negative "
            "maximum)"
        )
    return None


HINTS: tuple[Callable[[Finding], str | None], ...] = (
    right_values_wrong_shape,
    exp_overflow,
    transposed_weight,
    every_tied_maximum,
    batch_norm_statistics_constant,
    running_var_biased,
    bias_wrong_axes,
    padding_one_side,
    kernel_flipped,
    batch_norm_unbiased_variance,
    max_pool_zero_padding,
    relu_at_zero,
    cross_entropy_sum,
    label_smoothing_ignored,
    count_include_pad_flipped,
    batch_norm_wrong_statistics,
    dropout_scale,
    softmax_jacobian_diagonal,
    ignores_grad_output,
    col2im_overwrites,
    only_stride_one,
    only_without_padding,
    float32_precision,
)


def diagnose(finding: Finding) -> list[str]:
    """The sentences of every hint that explains the finding (usually one or none)."""
    found: list[str] = []
    for hint in HINTS:
        try:
            sentence = hint(finding)
        except Exception:  # noqa: BLE001 - a hint is a guess; it must never hide the finding
            sentence = None
        if sentence:
            found.append(sentence)
    return found
