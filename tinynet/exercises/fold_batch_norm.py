"""Exercise 11: fold an eval-mode BatchNorm into the convolution before it, as an inference
engine does."""

import numpy as np

from tinynet.exercises.exercise import Exercise


def fold_batch_norm(weight, bias, running_mean, running_var, gamma, beta, eps):
    """The weights and bias of one convolution that computes conv(x, W, b) followed by
    BatchNorm in eval mode, so an inference engine runs one op where the network has two.

    weight (O, C, kh, kw), bias (O,) or None (a conv without bias adds 0), and BatchNorm's
    running_mean, running_var, gamma (its weight), beta (its bias), each (O,), and eps.
    In eval mode BatchNorm is an affine map per output channel o, with running statistics:

        bn(y)[o] = (y[o] - mean[o]) / √(var[o] + eps) · γ[o] + β[o]
                 = s[o] · y[o] + (β[o] - s[o] · mean[o]),   s[o] = γ[o] / √(var[o] + eps)

    and a convolution is linear in its weights, so s[o] · conv(x, W, b)[o] = conv(x, s·W, s·b)[o]:

        W'[o] = s[o] · W[o]                  (every input channel and tap of filter o)
        b'[o] = s[o] · (b[o] - mean[o]) + β[o]

    Returns (W', b'): W' of weight's shape and b' of shape (O,).

    Hint: s is one number per OUTPUT channel; broadcast it over W's other three axes with
    s[:, None, None, None]. The variance enters under the square root, with eps inside it."""
    scale = gamma / np.sqrt(running_var + eps)  # s, one per output channel
    centred = -running_mean if bias is None else bias - running_mean
    return weight * scale[:, None, None, None], scale * centred + beta


# (O, C, kh, kw, bias?, eps), grouped by what each group adds; a failure's hint is its group's.
CASES = (
    (
        "one output channel, a 1x1 kernel",
        "W'[o] = s[o]·W[o] and b'[o] = s[o]·(b[o] - mean[o]) + β[o], with "
        "s[o] = γ[o] / √(var[o] + eps)",
        [(1, 1, 1, 1, True, 1e-5)],
    ),
    (
        "several output channels",
        "s is per OUTPUT channel (W's first axis): s[:, None, None, None]",
        [(3, 2, 1, 1, True, 1e-5), (4, 3, 3, 3, True, 1e-3)],
    ),
    (
        "a conv without bias",
        "bias None is a bias of zeros: b'[o] = β[o] - s[o]·mean[o]",
        [(3, 2, 3, 3, False, 1e-5)],
    ),
    (
        "a large eps",
        "eps goes inside the square root, with the variance: √(var + eps)",
        [(3, 4, 3, 1, True, 0.5)],
    ),
)


def _conv_then_batch_norm(x, weight, bias, mean, var, gamma, beta, eps):
    """What the two ops compute, through tinynet's reference ops (the definition)."""
    from tinynet import reference

    y = reference.conv2d(x, weight, bias, padding=1)
    return reference.batch_norm(y, mean, var, gamma, beta, training=False, eps=eps).data


def check(answer, max_examples=None, seed=0):
    """Every case of CASES, values drawn from ``seed``: conv with (W', b') must equal conv then
    eval-mode BatchNorm on a random input (max_examples: the cases are fixed, not drawn)."""
    from tinynet import reference

    rng = np.random.default_rng(seed)
    for group, hint, cases in CASES:
        for o, c, kh, kw, has_bias, eps in cases:
            weight = rng.standard_normal((o, c, kh, kw))
            bias = rng.standard_normal(o) if has_bias else None
            mean, beta = rng.standard_normal(o), rng.standard_normal(o)
            var = rng.uniform(0.01, 2.0, o)
            gamma = rng.uniform(0.5, 2.0, o) * rng.choice([-1.0, 1.0], o)
            x = rng.standard_normal((2, c, 5, 4))
            bias_text = f"of shape {(o,)}" if has_bias else "None"
            call = (
                f"fold_batch_norm(weight of shape {weight.shape}, bias {bias_text}, ..., eps={eps})"
            )
            given = (weight, bias, mean, var, gamma, beta)
            arguments = [a if a is None else a.copy() for a in given]
            try:
                folded = answer(*arguments, eps)
                new_weight, new_bias = (np.asarray(a) for a in folded)
            except NotImplementedError:
                raise
            except Exception as error:
                raise AssertionError(f"{call} ({group}) raised {type(error).__name__}: {error}\n"
                                     f"hint: {hint}") from error  # fmt: skip
            if new_weight.shape != weight.shape or new_bias.shape != (o,):
                raise AssertionError(
                    f"{call} ({group}): returned W' of shape {new_weight.shape} and b' of shape "
                    f"{new_bias.shape}; expected {weight.shape} and {(o,)}\nhint: {hint}"
                )
            want = _conv_then_batch_norm(x, weight, bias, mean, var, gamma, beta, eps)
            got = reference.conv2d(x, new_weight, new_bias, padding=1).data
            wrong = ~np.isclose(got, want, rtol=1e-9, atol=1e-9)
            if wrong.any():
                n, channel, p, q = np.argwhere(wrong)[0]
                raise AssertionError(
                    f"{call} ({group}): conv with your (W', b') differs from conv then BatchNorm "
                    f"in {wrong.sum()} of {want.size} outputs; the first at output channel "
                    f"{channel} (image {n}, pixel ({p}, {q})): {got[n, channel, p, q]!r}, "
                    f"expected {want[n, channel, p, q]!r}\nhint: {hint}"
                )


EXERCISE = Exercise.of_function(
    fold_batch_norm,
    "Fold an eval-mode BatchNorm into the convolution before it: one op instead of two.",
    ("09_inference_plan.py",),
    check,
)
