"""The handle every ``register_*hook`` method returns (PyTorch's ``RemovableHandle``).

    handle = model.conv1.register_forward_hook(hook)
    ...
    handle.remove()                       # or: with model.conv1.register_forward_hook(hook): ...
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

_next_key = itertools.count()


class RemovableHandle:
    """Puts ``hook`` into the ordered dict ``hooks`` (first, if ``prepend``); ``remove()`` takes it
    out again, and leaving a ``with`` block does the same."""

    def __init__(self, hooks: OrderedDict, hook, prepend: bool = False):
        self._hooks, self.id = hooks, next(_next_key)
        hooks[self.id] = hook
        if prepend:
            hooks.move_to_end(self.id, last=False)

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc) -> bool:
        self.remove()
        return False
