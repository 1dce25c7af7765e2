"""Where the compiled kernels are cached: a folder that only its user can write, never inside the
installed package.

numba's ``cache=True`` writes each kernel's machine code next to its source, in
``tinynet/kernels/__pycache__``. For an installed tinynet that is site-packages, which may be
read-only, and which pip does not clean on uninstall: a later editable install of the same
checkout was shadowed by the stale cache folders left behind. So tinynet's kernels are cached
in ``$TINYNET_CACHE_DIR`` if that is set, else in the platform's user cache folder
(``~/.cache/tinynet`` on Linux, ``~/Library/Caches/tinynet`` on macOS,
``%LOCALAPPDATA%\\tinynet\\Cache`` on Windows), else, when that cannot be made, in a folder of the
user's in the temporary folder. Within it, each source folder gets its own subfolder named by a
hash of its path, so two installations never share entries; numba checks the source's hash and
its own version before it loads an entry, so a stale one is recompiled, never run.

numba reads its cache files with ``pickle``: whoever can write a cache folder can run code in
every process that loads a kernel from it. So a cache folder (the root, and the subfolder in it)
is used only if it is a real folder, not a symbolic link, owned by this user and not writable by
group or others, and if no other user can rename it away either: each folder above it must be
root's or this user's, and writable by others only if sticky (as /tmp is). An index or data
file is read only if it is a regular file of this user's that group and others cannot write (a
root that was once shared may still hold another user's files); one that fails, or that cannot
be unpickled, is as if it were missing: the kernel is compiled and the file replaced. This is
checked each time numba reads or writes the cache, not once at import, since a folder can be
swapped for a symlink or opened up in between. A folder that fails, or that cannot be written (a
full disk), is not used for the rest of the process: the kernels compile without caching. Each
refusal is one warning line, once, naming the folder or file and what is wrong. Importing
tinynet never fails because of its cache.

numba has no per-function choice of cache, so ``install()`` wraps the method that
``@njit(cache=True)`` calls, ``Dispatcher.enable_caching``: a function in this package gets
:func:`kernel_cache`, never one of numba's own locations (``__pycache__`` in the package among
them); every other function's cache is numba's, as before.
"""

from __future__ import annotations

import inspect
import os
import stat
import tempfile
import warnings
from pathlib import Path

from numba.core import caching, config
from numba.core.dispatcher import Dispatcher
from numba.misc.appdirs import AppDirs

ENVIRONMENT_VARIABLE = "TINYNET_CACHE_DIR"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
KERNEL_CACHE = "to cache its kernels"  # what a refused folder was for, in the warning

_refused: set[str] = set()  # folders found unfit in this process: never used again
_warned: set[str] = set()


def cache_roots() -> list[Path]:
    """The folders to try, in order: the environment's; else the user's cache, then a temporary
    one."""
    if os.environ.get(ENVIRONMENT_VARIABLE):
        return [Path(os.environ[ENVIRONMENT_VARIABLE]).expanduser()]
    user = Path(AppDirs(appname="tinynet", appauthor=False).user_cache_dir)
    return [user, _temporary_root()]


def _temporary_root() -> Path:
    user = str(os.getuid()) if hasattr(os, "getuid") else os.getlogin()
    return Path(tempfile.gettempdir()) / f"tinynet-cache-{user}"


def unfit(path: Path, folder: bool = True) -> str | None:
    """Why ``path`` may not hold files that tinynet unpickles, or None if it may: it must be a
    folder (a regular file if not ``folder``), not a symbolic link, owned by this user and not
    writable by group or others. Raises FileNotFoundError if it is missing."""
    status = os.lstat(path)
    if stat.S_ISLNK(status.st_mode):
        return "it is a symbolic link"
    if not (stat.S_ISDIR if folder else stat.S_ISREG)(status.st_mode):
        return "it is not a folder" if folder else "it is not a regular file"
    if not hasattr(os, "geteuid"):
        return None  # Windows: no owner uid nor mode bits; the default folder is in the profile
    if status.st_uid != os.geteuid():
        return f"it is owned by uid {status.st_uid}, not by this user (uid {os.geteuid()})"
    if status.st_mode & 0o022:
        return f"{_writers(status.st_mode)} can write it (mode {stat.S_IMODE(status.st_mode):04o})"
    return None


def _writers(mode: int) -> str:
    return {0o020: "its group", 0o002: "others", 0o022: "its group and others"}[mode & 0o022]


def exposed(folder: Path) -> str | None:
    """Why another user could swap ``folder`` for one of theirs through a folder above it, or
    None: each folder above it, on its path as written and where symlinks lead, must be root's
    or this user's, and writable by group or others only if sticky (as /tmp is)."""
    if not hasattr(os, "geteuid"):
        return None
    written = Path(os.path.abspath(folder))
    folders, resolved = list(written.parents), False
    for above in folders:  # the list grows while it is walked
        status = os.lstat(above)
        if stat.S_ISLNK(status.st_mode):  # the folder holding it is checked; where it leads, too
            if not resolved:
                folders += Path(os.path.realpath(written)).parents
                resolved = True
            continue
        if status.st_uid not in (0, os.geteuid()):
            return f"another user could swap it: {above} is owned by uid {status.st_uid}"
        if status.st_mode & 0o022 and not status.st_mode & stat.S_ISVTX:
            mode = stat.S_IMODE(status.st_mode)
            return (
                f"another user could swap it: {above} can be written by "
                f"{_writers(status.st_mode)} (mode {mode:04o})"
            )
    return None


def made_unfit(folder: Path) -> str | None:
    """Why ``folder`` may not be used (:func:`unfit`, :func:`exposed`), made first (mode 0700)
    if it is missing; OSError if it cannot be made."""
    try:
        why = unfit(folder)
    except FileNotFoundError:
        try:
            folder.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass  # made meanwhile, perhaps not by us: checked below
        why = unfit(folder)
    return why or exposed(folder)


def refuse(folder: Path, why: str, purpose: str = KERNEL_CACHE) -> None:
    """Never use ``folder`` again in this process, saying why once."""
    _refused.add(str(folder))
    warn_once(f"tinynet does not use {folder} {purpose}: {why}")


def private(folder: Path, purpose: str = KERNEL_CACHE) -> bool:
    """Whether ``folder`` may be used now (made if missing); if not, it is refused."""
    if str(folder) in _refused:
        return False
    try:
        why = made_unfit(folder)
    except OSError as error:
        why = f"it cannot be made ({error.strerror})"
    if why:
        refuse(folder, why, purpose)
    return why is None


def private_root() -> Path | None:
    """The first of :func:`cache_roots` that may be used, made if missing; None if none may. A
    root that fails is refused, but one that merely cannot be made is passed over without a word
    when another is left to try (the temporary folder exists for a read-only home)."""
    roots = cache_roots()
    for root in roots:
        if str(root) in _refused:
            continue
        try:
            why = made_unfit(root)
        except OSError as error:
            if root == roots[-1]:
                refuse(root, f"it cannot be made ({error.strerror})")
            continue
        if why is None:
            return root
        refuse(root, why)
    return None


def warn_once(message: str) -> None:
    """One line on stderr (a RuntimeWarning without a source line), once per process."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn_explicit(message, RuntimeWarning, filename="tinynet", lineno=0)


class KernelCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """numba cache locator for tinynet's own kernels: see the module docstring."""

    def __init__(self, py_func, py_file, root: Path):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self.root = root
        self.folder = root / self.get_suitable_cache_subpath(py_file)

    def get_cache_path(self) -> str:
        return str(self.folder)

    def usable(self) -> bool:
        """Whether the root and the subfolder may be used now (each made if missing)."""
        return private(self.root) and private(self.folder)

    @classmethod
    def from_function(cls, py_func, py_file):
        root = private_root()
        return None if root is None else cls(py_func, py_file, root)


class KernelCacheImpl(caching.CompileResultCacheImpl):
    """numba's cache of compiled functions, with tinynet's locator as the only one."""

    _locator_classes = [KernelCacheLocator]


class KernelCacheFile(caching.IndexDataCacheFile):
    """numba's index and data files, each checked right before it is unpickled. One that fails,
    or cannot be unpickled (a failing disk), is as if it were missing: the kernel is compiled
    and the next save replaces the file."""

    def _load_index(self):
        if not _readable(self._index_path):
            return {}
        try:
            return super()._load_index()
        except Exception as error:  # noqa: BLE001 - whatever unpickling a damaged file raises
            _unreadable(self._index_path, error)
            return {}

    def _load_data(self, name):
        path = self._data_path(name)
        if not _readable(path):
            raise OSError(f"{path} is not read")  # numba's load() answers None, as if missing
        try:
            return super()._load_data(name)
        except Exception as error:  # noqa: BLE001 - as above
            _unreadable(path, error)
            raise OSError(f"{path} cannot be read") from error


def _readable(path: str) -> bool:
    try:
        why = unfit(Path(path), folder=False)
    except FileNotFoundError:
        return True  # numba's own answer: an empty index, a missing entry
    except OSError as error:
        why = f"it cannot be read ({error.strerror})"
    if why:
        warn_once(f"tinynet does not read {path}: {why}")
    return why is None


def _unreadable(path: str, error: Exception) -> None:
    warn_once(f"tinynet does not read {path}: it cannot be read ({type(error).__name__}: {error})")


class KernelCache(caching.FunctionCache):
    """numba's cache of one of tinynet's kernels, its folders checked each time it is read or
    written, its files before they are read."""

    _impl_class = KernelCacheImpl

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = KernelCacheFile(
            cache_path=self._cache_path,
            filename_base=self._impl.filename_base,
            source_stamp=self._impl.locator.get_source_stamp(),
        )

    def load_overload(self, sig, target_context):
        if not self._impl.locator.usable():
            return None
        return super().load_overload(sig, target_context)

    def save_overload(self, sig, data):
        if not self._impl.locator.usable():
            return
        try:
            super().save_overload(sig, data)
        except OSError as error:  # a full disk, a quota, a folder turned read-only
            refuse(self._impl.locator.folder, f"it cannot be written ({error.strerror})")


def kernel_cache(py_func) -> caching._Cache:
    """The cache of a function of this package: a :class:`KernelCache` in the first root that may
    be used, else numba's NullCache (compiled every time)."""
    if getattr(config, "CACHE_LOCATOR_CLASSES", None):  # numba >= 0.62 would use those instead
        warn_once(
            "tinynet compiles its kernels without caching: NUMBA_CACHE_LOCATOR_CLASSES is set, "
            "and tinynet caches only in its own private folder"
        )
        return caching.NullCache()
    try:
        return KernelCache(py_func)
    except RuntimeError:  # numba's "no locator available": no root may be used, and it said why
        return caching.NullCache()


_numbas_enable_caching = Dispatcher.enable_caching


def _enable_caching(dispatcher) -> None:
    if Path(inspect.getfile(dispatcher.py_func)).resolve().is_relative_to(PACKAGE_DIR):
        dispatcher._cache = kernel_cache(dispatcher.py_func)
    else:
        _numbas_enable_caching(dispatcher)


def install() -> None:
    """Make ``@njit(cache=True)`` give each function of this package a :func:`kernel_cache`
    (idempotent)."""
    Dispatcher.enable_caching = _enable_caching
