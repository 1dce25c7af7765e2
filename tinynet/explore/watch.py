"""What ``tinynet explore --watch RUN_DIR`` reads from a training run's folder, as the JSON the
page polls for.

    metrics       the run's state (waiting, training, finished, stopped, ended), what it is
                  (``explore/steps.json``'s "run"), its per-epoch records (``metrics.jsonl``)
                  and its per-step points (``explore/steps.json``)
    layers        per-layer gradient norms and update ratios: ``explore/layers.json``, else
                  the ``--log-gradients`` records of ``metrics.jsonl``
    activations   the fixed image and its latest activation snapshots (``activations.json``)

Only those files are read, by names fixed here (never a name from a request), and each one
through the folder itself: every component is opened relative to the one before without
following symbolic links, so a link planted in the run folder (to ``/etc``, to a file outside)
is refused, and no rename while it is read makes it read another folder. Each file is read up
to ``MAX_BYTES``; a file being replaced is read whole, old or new, as the trainer writes them
atomically.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path

from tinynet.explore.snapshots import ACTIVATIONS, FOLDER, FORMAT, LAYERS, STEPS
from tinynet.io import process_running
from tinynet.run_folder import LOCK
from tinynet.train import CHECKPOINT, METRICS

MAX_BYTES = 64 << 20
# What a per-epoch record of metrics.jsonl may carry to the page (numbers only).
EPOCH_KEYS = ("epoch", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr",
              "seconds", "images_per_second")  # fmt: skip


class NotARunFolder(ValueError):
    """RUN_DIR is missing, not a folder, or a folder that holds no tinynet run."""


class RunFolder:
    """The run folder at ``path``: an existing folder that holds a run's files (a checkpoint,
    metrics, the lock of a run writing there, ``explore/``) or nothing yet (a run about to
    start there). Anything else is refused with ``NotARunFolder``, naming it."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise NotARunFolder(
                f"{path} does not exist; start a run there first: "
                f"tinynet train --out {path} --explore-every N"
            )
        if not self.path.is_dir():
            raise NotARunFolder(f"{path} is a file, not a run folder (the --out of tinynet train)")
        self.root = os.path.realpath(self.path)
        entries = set(os.listdir(self.root))
        if entries and not entries & {CHECKPOINT, METRICS, LOCK, FOLDER}:
            raise NotARunFolder(
                f"{path} is not a tinynet run folder: it holds none of {CHECKPOINT}, {METRICS}, "
                f"{FOLDER}/ (the --out of tinynet train)"
            )

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    # ------------------------------------------------------------------ what the page gets
    def metrics(self) -> dict:
        steps = self._json(FOLDER, STEPS)
        run = steps.get("run") if isinstance(steps.get("run"), dict) else {}
        epochs = [_epoch(record) for record in self._epoch_records()]
        epochs = [record for record in epochs if record is not None]
        return {
            "name": self.name,
            "state": self._state(run, epochs, bool(steps)),
            "run": run,
            "epochs": epochs,
            "points": [p for p in steps.get("points", []) if isinstance(p, dict)],
        }

    def layers(self) -> dict:
        layers = self._json(FOLDER, LAYERS)
        if layers:
            return {"names": layers.get("names", []), "records": layers.get("records", [])}
        records = [r for r in self._metrics_lines() if r.get("record") == "gradients"]
        names = list(records[0]["grad_norm"]) if records else []
        return {
            "names": names,
            "records": [
                {
                    "step": record.get("step"),
                    "epoch": record.get("epoch"),
                    "grad_norm": [record["grad_norm"].get(name) for name in names],
                    "update_ratio": [record["update_ratio"].get(name) for name in names],
                }
                for record in records
                if isinstance(record.get("grad_norm"), dict)
                and isinstance(record.get("update_ratio"), dict)
            ],
        }

    def activations(self) -> dict:
        found = self._json(FOLDER, ACTIVATIONS)
        return {"input": found.get("input"), "snapshots": found.get("snapshots", [])}

    # ------------------------------------------------------------------ reading
    def _state(self, run: dict, epochs: list[dict], explored: bool) -> str:
        if self._training():
            return "training"
        if not epochs and not explored:
            return "waiting"
        total = run.get("epochs")
        if not isinstance(total, int):
            return "ended"  # no explore files to say how many epochs the run was to have
        return "finished" if epochs and epochs[-1]["epoch"] >= total else "stopped"

    def _training(self) -> bool:
        """Whether a run holds the folder's lock: its file names a process that is running
        (``tinynet.run_folder`` writes it; a killed run's names none)."""
        text = self.read(LOCK, limit=64)
        text = text.decode("ascii", "replace").strip() if text else ""
        return text.isdigit() and process_running(int(text))

    def _epoch_records(self) -> list[dict]:
        return [r for r in self._metrics_lines() if "record" not in r]

    def _metrics_lines(self) -> list[dict]:
        data = self.read(METRICS)
        records = []
        for line in (data or b"").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # not a line tinynet wrote: skipped
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def _json(self, *parts: str) -> dict:
        data = self.read(*parts)
        try:
            found = json.loads(data) if data else {}
        except ValueError:
            return {}
        return found if isinstance(found, dict) and found.get("format") == FORMAT else {}

    def read(self, *parts: str, limit: int = MAX_BYTES) -> bytes | None:
        """The bytes of the regular file ``parts`` (names, e.g. ``("explore", "steps.json")``)
        inside the folder, or None if it is missing, a link, not a regular file, or larger than
        ``limit``."""
        descriptors = []
        try:
            descriptors.append(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY))
            for index, part in enumerate(parts):
                if part in ("", ".", "..") or "/" in part or "\0" in part:
                    raise ValueError(f"RunFolder.read: {part!r} is not a file name")
                last = index == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
                descriptors.append(os.open(part, flags, dir_fd=descriptors[-1]))
            handle = descriptors[-1]
            status = os.fstat(handle)
            if not stat.S_ISREG(status.st_mode) or status.st_size > limit:
                return None
            with os.fdopen(os.dup(handle), "rb") as file:
                return file.read(limit + 1)[:limit]
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES):
                return None
            raise
        finally:
            for handle in descriptors:
                os.close(handle)


def _epoch(record: dict) -> dict | None:
    """The page's numbers of a per-epoch record (finite ones), or None if it has no epoch."""
    if not isinstance(record.get("epoch"), int):
        return None
    return {
        key: record[key]
        for key in EPOCH_KEYS
        if isinstance(record.get(key), (int, float))
        and not isinstance(record.get(key), bool)
        and math.isfinite(record[key])
    }
