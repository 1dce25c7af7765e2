"""Where a network's gradient is not smooth: the decisions its ReLUs and max pools take.

Two runs of one network whose ReLUs and max pools all decide alike (same signs, same winners)
differ only by rounding, which moves their outputs and gradients by about the rounding itself;
one decision that flips near a tie moves the gradients by that element's whole contribution.
"""

import numpy as np


def decisions(loss) -> list[np.ndarray]:
    """Each ReLU's sign pattern and each max pool's winners in the graph behind ``loss``, in an
    order fixed by the graph's structure (so two runs of one network line up), each with the
    batch's samples along axis 0 (so the decisions of a batch's shards concatenate)."""
    found, seen, stack = [], set(), [loss]
    while stack:
        tensor = stack.pop()
        ctx = getattr(tensor, "_ctx", None)  # parents include None for inputs that are not Tensors
        if ctx is None or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if hasattr(ctx, "argmax"):
            found.append(np.swapaxes(ctx.argmax, 0, 1))  # kept (C, N, H, W) for the kernels
        elif "ReLU" in ctx.fn.__name__:
            found.append(ctx.saved_tensors[0] > 0)
        stack.extend(ctx.parents)
    return found


def flips(loss, reference) -> int:
    """How many ReLU and max-pool decisions behind ``loss`` differ from those behind
    ``reference``, the loss of the same network run another way (e.g. in float64); call both
    before their backward."""
    ours, theirs = decisions(loss), decisions(reference)
    assert len(ours) == len(theirs) > 0, "the two losses are not of the same network"
    return sum(int(np.count_nonzero(a != b)) for a, b in zip(ours, theirs))
