"""A one-line progress bar for training epochs, written to stderr.

On a terminal it redraws itself in place; in a log file (not a TTY) it prints only the final
line of each epoch, so CI logs stay readable.
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class ProgressBar:
    """``bar.update(images, **stats)`` after each batch, ``bar.close(**stats)`` at the end.

    Shows the batch count, a bar, the given stats (e.g. loss, accuracy), images/s, the seconds
    spent waiting for data if ``waited()`` tells them (a DataLoader's ``data_wait``) and the ETA.
    """

    def __init__(self, total: int, description: str, stream=None, width: int = 24, waited=None):
        self.total, self.description, self.width = total, description, width
        self.waited = waited
        self.stream = stream or sys.stderr
        self.interactive = getattr(self.stream, "isatty", lambda: False)()
        self.done = self.images = 0
        self.start = time.perf_counter()

    def update(self, images: int, **stats) -> None:
        self.done += 1
        self.images += images
        if self.interactive:
            self.stream.write("\r" + self._line(stats))
            self.stream.flush()

    def close(self, **stats) -> None:
        self.stream.write(("\r" if self.interactive else "") + self._line(stats) + "\n")
        self.stream.flush()

    def _line(self, stats) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        filled = int(self.width * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        rate = self.images / elapsed
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        shown = "  ".join(f"{name} {value:.4g}" for name, value in stats.items())
        timing = f"ETA {_clock(left)}" if self.done < self.total else _clock(elapsed)
        wait = f"data wait {self.waited():.1f}s  " if self.waited is not None else ""
        return (
            f"{self.description} [{bar}] {self.done}/{self.total}  {shown}  "
            f"{rate:.0f} img/s  {wait}{timing}"
        )
