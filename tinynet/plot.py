"""The loss and accuracy curves of a training run as a PNG (matplotlib, an optional extra)."""

from __future__ import annotations

from pathlib import Path

from tinynet.io import atomic_write


def plot_history(history: list[dict], path) -> Path:
    """Draw train/test loss and test top-1 accuracy per epoch into ``path`` (written atomically).

    history: the per-epoch records of ``tinynet.train.Trainer`` (keys epoch, train_loss,
    test_loss, test_top1, train_top1). Raises ImportError if matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "plotting the training curves needs matplotlib: pip install 'tinynet[train]'"
        ) from error
    path = Path(path)
    epochs = [h["epoch"] for h in history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    # The training loss is the paper's (main + 0.3 x each aux head); the test loss the main head's.
    loss_axes.plot(epochs, [h["train_loss"] for h in history], "o-", label="train (with aux)")
    loss_axes.plot(epochs, [h["test_loss"] for h in history], "o-", label="test")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    accuracy_axes.plot(epochs, [100 * h["train_top1"] for h in history], "o-", label="train")
    accuracy_axes.plot(epochs, [100 * h["test_top1"] for h in history], "o-", label="test")
    accuracy_axes.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    try:
        with atomic_write(path) as file:
            figure.savefig(file, format="png", dpi=100)
    finally:
        plt.close(figure)
    return path
