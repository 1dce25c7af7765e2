"""One training step, as the textbook writes it: the loop every run of tinynet goes through.

    outputs = model(images)              # forward
    loss = loss_fn(outputs, labels)      # how wrong the outputs are
    optimizer.zero_grad()                # forget the last step's gradients
    loss.backward()                      # dL/dθ for every parameter θ, by the chain rule
    optimizer.step()                     # θ <- θ - lr · dL/dθ (with momentum, weight decay)

``tinynet.train.Trainer`` calls :func:`accumulated_step` for every optimizer step: the same
lines over K batches (``--accumulate K``), each batch's backward adding into ``.grad`` before
the one update, which is :func:`training_step` when K is 1. What a run adds attaches at the
:class:`StepSeams`, named points between those lines, so the lines stay as they are: under MPI
each process takes its rows of each batch (``local_rows``), backpropagates its share and the
gradients are summed over the processes (``backward``, ``before_update``); a diverging loss is
caught (``after_backward``), gradients are clipped and logged before the weights move
(``before_update``); the learning-rate schedule and the weights' moving average follow each
update (``after_update``). Lesson 8 (``examples/lessons/08_training_loop.py``) writes the loop
out by hand and gets the Trainer's numbers exactly.

Why K batches of B give the step of one batch of K·B: the loss is a mean over the images, so
the big batch's loss is Σ_k (B_k / Σ_j B_j) · L_k, with L_k the mean over batch k, and the
gradient of a sum is the sum of the gradients. Each batch's loss is scaled by its share
B_k / Σ_j B_j before its backward and ``.grad`` sums them; the update then sees the big
batch's gradient (to rounding: the sum runs in another order), so momentum, weight decay and
the learning rate act on it as on one step. What differs is what depends on the batch beyond
that mean: BatchNorm normalises each batch of B with its own statistics (and updates its
running statistics K times per step), not the K·B images' together.
"""

from __future__ import annotations


class StepSeams:
    """What a run attaches between the lines of :func:`training_step` and
    :func:`accumulated_step`: by default nothing (the plain loop). A run overrides the methods
    it needs."""

    def local_rows(self, images, labels):
        """The rows of a batch this process computes (MPI: its share; alone: all of them)."""
        return images, labels

    def backward(self, loss) -> None:
        """In place of ``loss.backward()`` (MPI: each process backpropagates its share)."""
        loss.backward()

    def after_backward(self, loss, outputs, labels) -> None:
        """After each batch's backward, with its (unscaled) loss, outputs and labels: the
        gradients summed so far are in ``.grad``."""

    def before_update(self) -> None:
        """After the last backward, before ``optimizer.step()``: the gradients are in
        ``.grad``."""

    def after_update(self) -> None:
        """After ``optimizer.step()``: the weights have moved."""


PLAIN = StepSeams()


def training_step(model, images, labels, loss_fn, optimizer, seams: StepSeams = PLAIN):
    """One step of gradient descent on a batch; returns ``(loss, outputs)``.

    model:     a Module in training mode; ``model(images)`` gives the outputs
    images, labels: the rows this process computes (see ``StepSeams.local_rows``)
    loss_fn:   ``loss_fn(outputs, labels)`` -> a scalar Tensor, the mean over the batch
    optimizer: holds the model's parameters; ``zero_grad()`` and ``step()``
    seams:     what a run attaches around the lines (see :class:`StepSeams`); none by default
    """
    outputs = model(images)
    loss = loss_fn(outputs, labels)
    optimizer.zero_grad()
    seams.backward(loss)
    seams.after_backward(loss, outputs, labels)
    seams.before_update()
    optimizer.step()
    seams.after_update()
    return loss, outputs


def accumulated_step(model, batches, loss_fn, optimizer, seams: StepSeams = PLAIN):
    """One step of gradient descent on the gradient summed over ``batches`` (a list of
    ``(images, labels)``, K >= 1 of them): the step of their concatenation as one batch, for a
    network without BatchNorm (see the module's docstring). With one batch it is
    :func:`training_step`, to the bit. Returns the unscaled ``(loss, outputs)`` of each batch.

    Each batch's forward graph is freed by its backward before the next batch's forward, so
    the memory a step needs is that of one batch, plus the summed gradients.
    """
    if not batches:
        raise ValueError("accumulated_step: batches must hold at least one (images, labels)")
    total = sum(len(labels) for _, labels in batches)
    optimizer.zero_grad()
    results = []
    for images, labels in batches:
        share = len(labels) / total  # of the whole step's images (before MPI takes its rows)
        images, labels = seams.local_rows(images, labels)
        outputs = model(images)
        loss = loss_fn(outputs, labels)
        seams.backward(loss if len(batches) == 1 else loss * share)
        seams.after_backward(loss, outputs, labels)
        results.append((loss, outputs))
    seams.before_update()
    optimizer.step()
    seams.after_update()
    return results
