"""Classification metrics on NumPy arrays."""

from __future__ import annotations

import numpy as np


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows of ``logits`` (N, C) have their label among the k highest scores.

    With k >= C every row counts (as top-5 on a 5-class problem should)."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"topk_correct: logits must be (N, C) and labels (N,); got {logits.shape} and "
            f"{labels.shape}"
        )
    if k >= logits.shape[1]:
        return len(labels)
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())
