"""Where the compiled kernels are cached: a per-user folder, never inside the installed package.

numba's ``cache=True`` writes each kernel's machine code next to its source, in
``tinynet/kernels/__pycache__``. For an installed tinynet that is site-packages, which may be
read-only, and which pip does not clean on uninstall: a later editable install of the same
checkout was shadowed by the stale cache folders left behind. So tinynet's kernels are cached
in ``$TINYNET_CACHE_DIR`` if that is set, else in the platform's user cache folder
(``~/.cache/tinynet`` on Linux, ``~/Library/Caches/tinynet`` on macOS,
``%LOCALAPPDATA%\\tinynet\\Cache`` on Windows), else, when that cannot be written, in a private
folder of the user's in the temporary folder (one that another user could have made is not
trusted: numba's cache entries are pickles). Within it, each source folder gets its own
subfolder named by a hash of its path, so two installations never share entries; numba checks
the source's hash and its own version before it loads an entry, so a stale one is recompiled,
never run.

``install()`` puts :class:`KernelCacheLocator` first in numba's list of cache locators. It answers
only for source files inside this package, so other code's caching is as numba decides.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from numba.core import caching
from numba.misc.appdirs import AppDirs

ENVIRONMENT_VARIABLE = "TINYNET_CACHE_DIR"
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def cache_roots() -> list[Path]:
    """The folders to try, in order: the environment's; else the user's cache, then a private
    one."""
    if os.environ.get(ENVIRONMENT_VARIABLE):
        return [Path(os.environ[ENVIRONMENT_VARIABLE]).expanduser()]
    user = Path(AppDirs(appname="tinynet", appauthor=False).user_cache_dir)
    return [user, _temporary_root()]


def _temporary_root() -> Path:
    user = str(os.getuid()) if hasattr(os, "getuid") else os.getlogin()
    return Path(tempfile.gettempdir()) / f"tinynet-cache-{user}"


def check_private(root: Path) -> None:
    """Refuse (OSError) the temporary root if it is not this user's alone."""
    if root != _temporary_root() or not hasattr(os, "getuid"):
        return
    root.mkdir(mode=0o700, exist_ok=True)
    status = root.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o022:
        raise OSError(f"{root} is not private to this user")


class KernelCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """numba cache locator for tinynet's own kernels: see the module docstring."""

    def __init__(self, py_func, py_file, root: Path):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = str(root / self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self) -> str:
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        if not Path(py_file).resolve().is_relative_to(PACKAGE_DIR):
            return None
        for root in cache_roots():
            locator = cls(py_func, py_file, root)
            try:
                check_private(root)
                locator.ensure_cache_path()
            except OSError:
                continue
            return locator
        return None  # nowhere to write: numba's own locators decide


def install() -> None:
    """Make numba ask :class:`KernelCacheLocator` first (idempotent)."""
    cache_impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # numba < 0.61
    locators = cache_impl._locator_classes
    if KernelCacheLocator not in locators:
        locators.insert(0, KernelCacheLocator)
