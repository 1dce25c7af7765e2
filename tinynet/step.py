"""One training step, as the textbook writes it: the loop every run of tinynet goes through.

    outputs = model(images)              # forward
    loss = loss_fn(outputs, labels)      # how wrong the outputs are
    optimizer.zero_grad()                # forget the last step's gradients
    loss.backward()                      # dL/dθ for every parameter θ, by the chain rule
    optimizer.step()                     # θ <- θ - lr · dL/dθ (with momentum, weight decay)

``tinynet.train.Trainer`` calls :func:`training_step` for every batch; what a run adds attaches
at the :class:`StepSeams`, named points between those lines, so the six lines stay as they
are: under MPI each process backpropagates its share of the batch and the gradients are summed
over the processes (``backward``, ``before_update``); a diverging loss is caught, gradients are
clipped and logged before the weights move (``before_update``); the learning-rate schedule and
the weights' moving average follow each update (``after_update``). Lesson 8
(``examples/lessons/08_training_loop.py``) writes the loop out by hand and gets the Trainer's
numbers exactly.
"""

from __future__ import annotations


class StepSeams:
    """What a run attaches between the lines of :func:`training_step`: by default nothing (the
    plain loop). A run overrides the methods it needs."""

    def backward(self, loss) -> None:
        """In place of ``loss.backward()`` (MPI: each process backpropagates its share)."""
        loss.backward()

    def before_update(self, loss, outputs) -> None:
        """After the backward, before ``optimizer.step()``: the gradients are in ``.grad``."""

    def after_update(self) -> None:
        """After ``optimizer.step()``: the weights have moved."""


PLAIN = StepSeams()


def training_step(model, images, labels, loss_fn, optimizer, seams: StepSeams = PLAIN):
    """One step of gradient descent on a batch; returns ``(loss, outputs)``.

    model:     a Module in training mode; ``model(images)`` gives the outputs
    loss_fn:   ``loss_fn(outputs, labels)`` -> a scalar Tensor
    optimizer: holds the model's parameters; ``zero_grad()`` and ``step()``
    seams:     what a run attaches around the lines (see :class:`StepSeams`); none by default
    """
    outputs = model(images)
    loss = loss_fn(outputs, labels)
    optimizer.zero_grad()
    seams.backward(loss)
    seams.before_update(loss, outputs)
    optimizer.step()
    seams.after_update()
    return loss, outputs
