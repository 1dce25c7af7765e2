"""One writer per run folder: the lock a training run holds on its output folder (``--out``).

Two runs writing into one folder would each leave files of the other's. ``hold(folder)`` takes
an exclusive lock on ``folder/.tinynet.lock`` for as long as its block runs, and a second holder
is refused with ``RunFolderBusy``, naming the process that holds it:

    with run_folder.hold("runs/digits"):
        ...                          # train and write into runs/digits

The lock is ``fcntl.lockf``'s: the kernel drops it when the process ends, however it ends (a
crash or kill -9 included), so a stale lock never blocks the next run, and a forked child does
not inherit it. The holder writes its process id into the file for a refused run to name, and
removes the file when it lets go (a run killed outright leaves it behind, naming a process that
no longer runs: the next run takes it over). Within one process the lock is re-entrant (the
command holds it around a whole run, ``Trainer.fit`` again around its epochs): POSIX locks
belong to the process, so a second lock from the same process would succeed silently, and
closing any other descriptor of the file would drop it; every hold of a folder by one process
shares one descriptor.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from tinynet.io import process_running

LOCK = ".tinynet.lock"

_held: dict[str, list] = {}  # the real path of each folder this process holds: [fd, depth]


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's lock; ``pid`` is its process id (None if it
    could not be read)."""

    def __init__(self, folder, pid: int | None):
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"{folder} is in use by {holder} (another `tinynet train` writing there); wait "
            f"for it to end or choose another --out"
        )
        self.pid = pid


@contextmanager
def hold(folder):
    """Hold ``folder``'s lock while the block runs (making the folder, and removing it after
    if it is still empty); raise ``RunFolderBusy`` if another process holds it."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    made = _missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        handle = _lock(folder / LOCK, folder)
    except BaseException:
        _remove_empty(made)
        raise
    _held[key] = [handle, 1]
    try:
        yield
    finally:
        del _held[key]
        (folder / LOCK).unlink(missing_ok=True)  # before the lock goes: see _lock
        os.close(handle)
        _remove_empty(made)


def _lock(path: Path, folder: Path) -> int:
    """A descriptor of ``path`` holding its lock, with this process's id written in it."""
    while True:
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as error:  # another user's file, a symlink planted in its place
            raise PermissionError(
                f"{folder} cannot be locked for this run: opening {path} fails "
                f"({error.strerror or error})"
            ) from error
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(handle)
            if error.errno not in (errno.EACCES, errno.EAGAIN):  # no one can hold it either
                path.unlink(missing_ok=True)
                raise OSError(
                    f"{folder} cannot be locked for this run: locking {path} fails "
                    f"({error.strerror}); choose an --out on a file system with locks"
                ) from error
            raise RunFolderBusy(folder, _holder(path)) from None
        # The holder before us may have removed the file between our open and our lock: we
        # then hold a lock on a file no one else can see, so try again on the one at `path`.
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(handle)):
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()}\n".encode())
            return handle
        os.close(handle)


def _holder(path: Path, tries: int = 50) -> int | None:
    """The id of the running process recorded in the lock file at ``path``; None if none is
    there after ``tries`` looks 10 ms apart (the holder writes it just after it takes the lock;
    a stale id, from a run killed outright, names no running process)."""
    for _ in range(tries):
        try:
            text = path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            text = ""
        if text.isascii() and text.isdigit() and process_running(int(text)):
            return int(text)
        time.sleep(0.01)
    return None


def _missing_folders(folder: Path) -> list[Path]:
    """The folders ``folder.mkdir(parents=True)`` would make, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # something was written there: keep it, and its parents
            return
