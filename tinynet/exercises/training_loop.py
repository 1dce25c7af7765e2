"""Exercise 10: the training loop, with SGD (momentum, weight decay) written by hand."""

import numpy as np

from tinynet.exercises.exercise import Exercise


def training_loop(model, loss_fn, batches, lr, momentum, weight_decay):
    """Train ``model`` one SGD step per batch, the update written by you (not tinynet.optim).

    model:        an nn.Module; ``model.parameters()`` are its Parameters (``.data``, ``.grad``)
    loss_fn:      loss_fn(output, labels) -> a scalar Tensor (the mean cross-entropy)
    batches:      (images, labels) pairs: a Tensor for ``model`` and the labels for ``loss_fn``
    lr γ, momentum μ, weight_decay λ: SGD's hyper-parameters

    For each batch: the forward pass and the loss, the gradients cleared (``model.zero_grad()``:
    backward adds into ``.grad``), ``loss.backward()``, then for every parameter θ with a
    gradient ∇ (PyTorch's SGD, tinynet.optim.SGD):

        g = ∇ + λ θ                     the L2 penalty's gradient, before the momentum
        b = g at the first step;  b = μ b + g after it    (b: θ's momentum buffer)
        θ = θ - γ b                     in place: update ``θ.data`` itself

    Returns the list of the batches' losses (floats, each before its step).

    Hint: keep one momentum buffer per parameter across the steps, e.g. in a dict keyed by
    id(parameter); tinynet.optim is not allowed here, the update is the exercise."""
    buffers = {}  # id(parameter) -> its momentum buffer b
    losses = []
    for images, labels in batches:
        loss = loss_fn(model(images), labels)
        model.zero_grad()
        loss.backward()
        for parameter in model.parameters():
            if parameter.grad is None:
                continue
            g = parameter.grad + weight_decay * parameter.data
            b = buffers.get(id(parameter))
            b = g if b is None else momentum * b + g
            buffers[id(parameter)] = b
            parameter.data -= lr * b
        losses.append(loss.item())
    return losses


HYPER = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
STEPS = 5


def _model(seed):
    """A small classifier of 8x8 digits in float64, its weights drawn from ``seed``."""
    from tinynet import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).double()
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.uniform(-0.3, 0.3, p.data.shape)
    return model


def _batches(count, size, seed):
    """``count`` batches of ``size`` training digits (8x8, one channel), shuffled by ``seed``."""
    from tinynet import tensor
    from tinynet.data.datasets import digits

    train = digits(image_size=8).train
    order = np.random.default_rng(seed).permutation(len(train))[: count * size]
    batches = []
    for chunk in order.reshape(count, size):
        images, labels = train[chunk]
        batches.append((tensor(images.astype(np.float64)), labels))
    return batches


def _stepped(batches, seed, accumulate=False, hyper=HYPER):
    """The model after tinynet.optim.SGD's steps on ``batches``, and the losses (``accumulate``:
    the gradients never cleared, a classic mistake the check recognises)."""
    from tinynet.functional import cross_entropy
    from tinynet.optim import SGD

    model = _model(seed)
    optimizer = SGD(model.parameters(), **hyper)
    losses = []
    for images, labels in batches:
        loss = cross_entropy(model(images), labels)
        if not accumulate:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, losses


# What a learner's weights equal when they match one of these instead: the mistake it names.
MISTAKES = (
    (
        "weight decay left out: add λ·θ to the gradient before the momentum",
        dict(HYPER, weight_decay=0.0),
        False,
    ),
    (
        "no momentum: keep a buffer b = μ b + g per parameter and step by it",
        dict(HYPER, momentum=0.0),
        False,
    ),
    (
        "that is Nesterov's update; plain momentum steps by the buffer b itself",
        dict(HYPER, nesterov=True),
        False,
    ),
    (
        "the gradients add up over the steps: clear them (model.zero_grad()) before backward",
        HYPER,
        True,
    ),
)


def _run(answer, batches, seed):
    """The learner's loop on a fresh model: (model, losses)."""
    from tinynet.functional import cross_entropy

    model = _model(seed)
    losses = answer(model, cross_entropy, batches, **HYPER)
    return model, losses


def _same(model, other) -> bool:
    return all(np.allclose(a.data, b.data, rtol=1e-9, atol=1e-12)
               for a, b in zip(model.parameters(), other.parameters()))  # fmt: skip


def check(answer, max_examples=None, seed=0):
    """Five steps equal tinynet.optim.SGD's (weights and losses), then the loss falls over 40
    steps on the digits (max_examples: the steps are fixed, not drawn)."""
    batches = _batches(STEPS, 16, seed)
    model, losses = _run(answer, batches, seed)
    reference, expected = _stepped(batches, seed)
    call = (f"training_loop(model, cross_entropy, {STEPS} batches of 16 digits, lr=0.1, "
            f"momentum=0.9, weight_decay=0.01)")  # fmt: skip
    if not isinstance(losses, (list, tuple)) or len(losses) != STEPS:
        raise AssertionError(f"{call} returned {losses!r}; expected a list of {STEPS} losses")
    if not _same(model, reference):
        first = next(k for k in range(1, STEPS + 1)
                     if not _same(_run(answer, batches[:k], seed)[0],
                                  _stepped(batches[:k], seed)[0]))  # fmt: skip
        name, got, want = next(
            (name, a.data, b.data)
            for (name, a), b in zip(model.named_parameters(), reference.parameters())
            if not np.allclose(a.data, b.data, rtol=1e-9, atol=1e-12)
        )
        worst = np.unravel_index(np.abs(got - want).argmax(), got.shape)
        recognised = (mistake for mistake, hyper, accumulate in MISTAKES
                      if _same(model, _stepped(batches, seed, accumulate, hyper)[0]))  # fmt: skip
        hint = next(recognised, "θ = θ - γ b with b = μ b + (∇ + λ θ), b starting as that g")
        raise AssertionError(
            f"{call}: the weights first differ from tinynet.optim.SGD's after step {first}; "
            f"after {STEPS} steps {name}{list(map(int, worst))} is {got[worst]!r}, expected "
            f"{want[worst]!r}\nhint: {hint}"
        )
    if not np.allclose(losses, expected, rtol=1e-9):
        raise AssertionError(f"{call} returned the losses {list(losses)}; expected {expected} "
                             f"(each batch's loss before its step, as a float)")  # fmt: skip
    falling = _run(answer, _batches(40, 32, seed + 1), seed)[1]
    if not np.mean(falling[-5:]) < 0.5 * np.mean(falling[:5]):
        raise AssertionError(
            f"training_loop: over 40 steps on the digits the loss went from {falling[:5]} to "
            f"{falling[-5:]}; expected it to halve at least"
        )


EXERCISE = Exercise.of_function(
    training_loop,
    "SGD with momentum and weight decay by hand: five steps equal tinynet.optim.SGD's.",
    ("04_train_digits.py", "08_training_loop.py"),
    check,
    # the model's layers, Tensor and the loss; not tinynet.optim: the update is the exercise
    allowed=("tinynet.Tensor", "tinynet.tensor", "tinynet.nn", "tinynet.functional.cross_entropy"),
    imports="",
)
