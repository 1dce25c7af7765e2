"""The numba kernel cache lives in a folder only its user can write, never inside the installed
package, and never stops a command.

Each test runs a kernel in a fresh process on a copy of the package made read-only, as a
site-packages install can be, and checks that the package's files are exactly what was copied
(tests may run as root, for whom read-only bits do not stop a write: the listing is what proves
it) and where the compiled kernel landed. The hostile cases plant cache files whose unpickling
would make a marker file, as another local user could, and check that the marker never appears
and that stderr is the one warning line naming the folder or file and what is wrong with it.
Another user is played by uid 65534 (files chowned to it), which needs root: those cases skip,
saying so, elsewhere.
"""

import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import tinynet

from datafiles import snapshot

RUN_A_KERNEL = (
    "import tinynet, numpy as np, tinynet.functional as F; "
    "x = F.relu(tinynet.tensor(np.arange(-3.0, 3.0))); "
    "print(x.data.tolist())"
)
RELU = "[0.0, 0.0, 0.0, 0.0, 1.0, 2.0]"
OTHER_UID = 65534  # nobody
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not AS_ROOT, reason=f"plays another user by chowning files to uid {OTHER_UID}: needs root"
)
posix = pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX owners and modes")


@pytest.fixture(scope="module")
def installed_copy(tmp_path_factory):
    """tinynet's source copied to site/tinynet without caches, made read-only."""
    site = tmp_path_factory.mktemp("installed") / "site"
    shutil.copytree(
        Path(tinynet.__file__).parent,
        site / "tinynet",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for path in (site / "tinynet").rglob("*"):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    yield site
    for path in (site / "tinynet").rglob("*"):  # so that tmp_path can be cleaned up
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _run(site: Path, *argv: str, **environment) -> subprocess.CompletedProcess:
    """``python ARGV`` (by default RUN_A_KERNEL) with ``site`` as the only tinynet."""
    env = {key: value for key, value in os.environ.items() if key != "TINYNET_CACHE_DIR"}
    env.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", **environment)
    return subprocess.run(
        [sys.executable, *(argv or ("-c", RUN_A_KERNEL))],
        capture_output=True,
        text=True,
        env=env,
        cwd=site.parent,
        timeout=300,
    )


def _cached_kernels(folder: Path) -> list[Path]:
    # the kernel runs serially on so few elements: its twin compiled without threads
    return sorted(folder.rglob("activation.relu_forward_serial_numpy_errors-*.nbi"))


def test_the_cache_goes_to_tinynet_cache_dir_and_never_into_the_package(installed_copy, tmp_path):
    before = snapshot(installed_copy)
    cache = tmp_path / "kernel cache"
    for _ in range(2):  # the second run loads what the first compiled
        result = _run(installed_copy, TINYNET_CACHE_DIR=str(cache))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == RELU
        assert result.stderr == ""
    assert snapshot(installed_copy) == before
    assert len(_cached_kernels(cache)) == 1


def test_by_default_the_cache_is_the_users_cache_folder(installed_copy, tmp_path):
    before = snapshot(installed_copy)
    xdg = tmp_path / "xdg"
    result = _run(installed_copy, XDG_CACHE_HOME=str(xdg))
    assert result.returncode == 0, result.stderr
    assert snapshot(installed_copy) == before
    assert len(_cached_kernels(xdg / "tinynet")) == 1


def test_a_folder_that_cannot_be_written_falls_back_to_a_private_temporary_one(
    installed_copy, tmp_path
):
    not_a_folder = tmp_path / "a file"
    not_a_folder.write_text("")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    before = snapshot(installed_copy)
    result = _run(installed_copy, XDG_CACHE_HOME=str(not_a_folder), TMPDIR=str(temporary))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the fallback is there for this: nothing to warn about
    assert snapshot(installed_copy) == before
    (private,) = temporary.iterdir()
    assert private.name.startswith("tinynet-cache-")
    assert stat.S_IMODE(private.stat().st_mode) & 0o077 == 0
    assert len(_cached_kernels(private)) == 1


# --- cache files another user planted ----------------------------------------------------------


class _Plant:
    """Unpickled, it makes the file ``marker``: what another user's cache file could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def compiled(installed_copy, tmp_path_factory) -> Path:
    """A cache root holding what RUN_A_KERNEL compiles: the names (and the real files) to
    plant."""
    root = tmp_path_factory.mktemp("compiled")
    result = _run(installed_copy, TINYNET_CACHE_DIR=str(root))
    assert result.returncode == 0, result.stderr
    return root


def _cache_files(compiled: Path) -> list[Path]:
    """The index and data files of ``compiled``, relative to it (subfolder/name)."""
    return sorted(path.relative_to(compiled) for path in compiled.rglob("*.nb[ic]"))


def _plant(root: Path, compiled: Path, marker: Path, names=None) -> None:
    """Each cache file RUN_A_KERNEL reads (or those ``names``) in ``root``, made a pickle that
    makes ``marker``."""
    for name in names or _cache_files(compiled):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(pickle.dumps(_Plant(marker)))


def _warning(stderr: str) -> str:
    """The one line on stderr, checked to be tinynet's warning and the whole of it."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    prefix = "tinynet:0: RuntimeWarning: "
    assert lines[0].startswith(prefix), stderr
    return lines[0].removeprefix(prefix)


def _subfolder(compiled: Path) -> str:
    (name,) = {path.parts[0] for path in _cache_files(compiled)}
    return name


def test_the_planted_files_would_run_from_a_folder_that_is_trusted(
    installed_copy, compiled, tmp_path
):
    """The control: numba unpickles what it finds in a folder that passes the checks, so the
    marker of the tests below is live (the same files, written by this user, run)."""
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    _plant(root, compiled, tmp_path / "marker")
    result = _run(installed_copy, TINYNET_CACHE_DIR=str(root))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "marker").exists()


def _owned_by_another_user(root: Path, target: Path) -> None:
    root.mkdir()
    os.chown(root, OTHER_UID, OTHER_UID)


def _mode(mode: int):
    def make(root: Path, target: Path) -> None:
        root.mkdir()
        root.chmod(mode)

    return make


def _symlink(root: Path, target: Path) -> None:
    target.mkdir(mode=0o700)  # this user's own private folder, but not where the root was
    root.symlink_to(target)


# Roots another user could write (or swap), each made by a function of (root, target), and what
# the warning says of it.
UNFIT_ROOTS = [
    pytest.param(
        _owned_by_another_user,
        f"it is owned by uid {OTHER_UID}, not by this user (uid 0)",
        marks=needs_root,
        id="another-users",
    ),
    pytest.param(_mode(0o777), "its group and others can write it (mode 0777)", id="0777"),
    pytest.param(_mode(0o1777), "its group and others can write it (mode 1777)", id="1777"),
    pytest.param(_mode(0o775), "its group can write it (mode 0775)", id="0775"),
    pytest.param(_symlink, "it is a symbolic link", id="symlink"),
]


@pytest.mark.parametrize("make, why", UNFIT_ROOTS)
@posix
def test_a_cache_dir_another_user_could_write_is_not_used(
    installed_copy, compiled, tmp_path, make, why
):
    root, target = tmp_path / "shared", tmp_path / "elsewhere"
    make(root, target)
    if root.is_dir():
        _plant(root, compiled, tmp_path / "marker")
    before, package = snapshot(tmp_path), snapshot(installed_copy)
    result = _run(installed_copy, TINYNET_CACHE_DIR=str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == RELU
    assert _warning(result.stderr) == f"tinynet does not use {root} to cache its kernels: {why}"
    assert not (tmp_path / "marker").exists()
    assert snapshot(tmp_path) == before  # nothing written there, the planted files as they were
    assert snapshot(installed_copy) == package


@posix
@pytest.mark.parametrize(
    "make, why",
    [
        *UNFIT_ROOTS,
        (_mode(0o700), None),
        (_mode(0o1700), None),
        (_mode(0o757), "others can write it (mode 0757)"),
        (_mode(0o2770), "its group can write it (mode 2770)"),
        (lambda root, target: root.write_text(""), "it is not a folder"),
        (lambda root, target: root.symlink_to(target), "it is a symbolic link"),  # dangling
    ],
)
def test_what_is_wrong_with_a_folder_in_the_words_of_the_warning(tmp_path, make, why):
    from tinynet.kernels.cache import unfit

    make(tmp_path / "root", tmp_path / "elsewhere")
    assert unfit(tmp_path / "root") == why


def _parent_mode(mode: int):
    def make(parent: Path) -> None:
        parent.mkdir()
        parent.chmod(mode)

    return make


def _parent_of_another_user(parent: Path) -> None:
    parent.mkdir()
    os.chown(parent, OTHER_UID, OTHER_UID)


def _through_a_symlink_to(mode: int):
    def make(parent: Path) -> None:
        (parent.parent / "real").mkdir()
        (parent.parent / "real").chmod(mode)
        parent.symlink_to(parent.parent / "real")

    return make


@posix
@pytest.mark.parametrize(
    "make, why",
    [
        (_parent_mode(0o755), None),
        (_parent_mode(0o1777), None),  # sticky, as /tmp: no one can rename another's folder
        (_parent_mode(0o777), "{parent} can be written by its group and others (mode 0777)"),
        (_parent_mode(0o770), "{parent} can be written by its group (mode 0770)"),
        (_through_a_symlink_to(0o700), None),
        (_through_a_symlink_to(0o777), "{real} can be written by its group and others (mode 0777)"),
        pytest.param(
            _parent_of_another_user,
            f"{{parent}} is owned by uid {OTHER_UID}",
            marks=needs_root,
            id="another-users",
        ),
    ],
)
def test_a_root_another_user_could_swap_through_a_folder_above_it_is_not_used(tmp_path, make, why):
    """Another user who can rename entries in a folder above the root (a shared folder without
    the sticky bit) could swap the checked root for one of theirs between the check and numba's
    read: such a root is refused from the start, whether that folder is on the path as written
    or where a symlink on it leads."""
    from tinynet.kernels.cache import made_unfit

    parent = tmp_path / "parent"
    make(parent)
    root = parent / "cache"
    expected = why and "another user could swap it: " + why.format(
        parent=parent, real=tmp_path / "real"
    )
    assert made_unfit(root) == expected
    assert stat.S_IMODE(root.lstat().st_mode) == 0o700  # made private, whatever is above it


SWAP_AFTER_IMPORT = (
    "import os, sys, tinynet, numpy as np, tinynet.functional as F\n"
    "root = os.environ['TINYNET_CACHE_DIR']\n"
    "{swap}\n"
    "print(F.relu(tinynet.tensor(np.arange(-3.0, 3.0))).data.tolist())\n"
)


@posix
@pytest.mark.parametrize(
    "swap, why",
    [
        (
            "os.rename(root, root + '.was'); os.symlink(sys.argv[1], root)",
            "it is a symbolic link",
        ),
        ("os.chmod(root, 0o777)", "its group and others can write it (mode 0777)"),
    ],
    ids=["symlink", "chmod"],
)
def test_a_root_changed_after_import_is_checked_when_the_index_is_read(
    installed_copy, compiled, tmp_path, swap, why
):
    """The root passes the checks at import, when numba makes each kernel's cache; it is then
    swapped for a symlink to planted files, or opened up and planted in, before the first
    kernel call reads the index."""
    root, planted = tmp_path / "cache", tmp_path / "planted"
    _plant(planted, compiled, tmp_path / "marker")
    if swap.startswith("os.chmod"):
        _plant(root, compiled, tmp_path / "marker")
        root.chmod(0o700)
    package = snapshot(installed_copy)
    result = _run(
        installed_copy, "-c", SWAP_AFTER_IMPORT.format(swap=swap), str(planted),
        TINYNET_CACHE_DIR=str(root),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == RELU
    assert _warning(result.stderr) == f"tinynet does not use {root} to cache its kernels: {why}"
    assert not (tmp_path / "marker").exists()
    assert snapshot(installed_copy) == package


def _another_users(path: Path) -> str:
    os.chown(path, OTHER_UID, OTHER_UID, follow_symlinks=False)
    return f"it is owned by uid {OTHER_UID}, not by this user (uid 0)"


def _group_and_others_can_write(path: Path) -> str:
    path.chmod(0o666)
    return "its group and others can write it (mode 0666)"


def _a_symlink(path: Path) -> str:
    elsewhere = path.parent.parent / "elsewhere" / path.name
    elsewhere.parent.mkdir()
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    return "it is a symbolic link"


@posix
@pytest.mark.parametrize(
    "kind, spoil",
    [
        pytest.param("nbi", _another_users, marks=needs_root, id="index-of-another-user"),
        pytest.param("nbc", _another_users, marks=needs_root, id="data-of-another-user"),
        pytest.param("nbi", _group_and_others_can_write, id="index-0666"),
        pytest.param("nbi", _a_symlink, id="index-symlink"),
    ],
)
def test_files_another_user_could_write_are_not_read_and_are_replaced(
    installed_copy, compiled, tmp_path, kind, spoil
):
    """A private root that was once shared may still hold files another user wrote: they are
    not read, and the next compile replaces them with this user's own. A planted data file sits
    behind this user's real index (copied from a real compile), which names it."""
    root = tmp_path / "cache"
    shutil.copytree(compiled, root)
    (root / _subfolder(compiled)).chmod(0o700)
    root.chmod(0o700)
    (spoilt,) = root.rglob(f"activation.relu_forward_serial_numpy_errors-*.{kind}")
    _plant(root, compiled, tmp_path / "marker", names=[spoilt.relative_to(root)])
    why = spoil(spoilt)
    package = snapshot(installed_copy)
    result = _run(installed_copy, TINYNET_CACHE_DIR=str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == RELU
    assert _warning(result.stderr) == f"tinynet does not read {spoilt}: {why}"
    assert not (tmp_path / "marker").exists()
    status = spoilt.lstat()
    assert stat.S_ISREG(status.st_mode) and status.st_uid == os.geteuid()  # this user's now
    assert stat.S_IMODE(status.st_mode) & 0o022 == 0
    assert snapshot(installed_copy) == package


@needs_root
def test_a_subfolder_of_another_user_in_a_private_root_is_not_used(
    installed_copy, compiled, tmp_path
):
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    _plant(root, compiled, tmp_path / "marker")
    subfolder = root / _subfolder(compiled)
    os.chown(subfolder, OTHER_UID, OTHER_UID)
    before, package = snapshot(root), snapshot(installed_copy)
    result = _run(installed_copy, TINYNET_CACHE_DIR=str(root))
    assert result.returncode == 0, result.stderr
    assert _warning(result.stderr) == (
        f"tinynet does not use {subfolder} to cache its kernels: "
        f"it is owned by uid {OTHER_UID}, not by this user (uid 0)"
    )
    assert not (tmp_path / "marker").exists()
    assert snapshot(root) == before
    assert snapshot(installed_copy) == package


@needs_root
def test_a_fallback_folder_made_by_another_user_does_not_stop_tinynet(
    installed_copy, compiled, tmp_path
):
    """Another user makes the temporary fallback first: tinynet still imports, `tinynet --help`
    works, and kernels run, compiled without caching."""
    not_a_folder = tmp_path / "a file"  # so that the user's cache folder cannot be made
    not_a_folder.write_text("")
    temporary = tmp_path / "tmp"
    fallback = temporary / f"tinynet-cache-{os.getuid()}"
    fallback.mkdir(parents=True)
    _plant(fallback, compiled, tmp_path / "marker")
    for path in [fallback, *fallback.rglob("*")]:
        os.chown(path, OTHER_UID, OTHER_UID)
    before, package = snapshot(fallback), snapshot(installed_copy)
    why = f"it is owned by uid {OTHER_UID}, not by this user (uid 0)"
    environment = dict(XDG_CACHE_HOME=str(not_a_folder), TMPDIR=str(temporary))
    for argv, out in [
        (("-m", "tinynet", "--help"), "usage: tinynet"),
        (("-c", RUN_A_KERNEL), RELU),
    ]:
        result = _run(installed_copy, *argv, **environment)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(out)
        assert (
            _warning(result.stderr)
            == f"tinynet does not use {fallback} to cache its kernels: {why}"
        )
    assert not (tmp_path / "marker").exists()
    assert snapshot(fallback) == before
    assert snapshot(installed_copy) == package


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (private to this user), filled up."""
    if not AS_ROOT or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs to fill up needs root and mount(8)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(disk)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError, match="No space left"):
                while True:
                    os.write(filler, b"\0" * 4096)
        finally:
            os.close(filler)
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_cache_disk_means_no_caching_and_one_warning(installed_copy, compiled, full_disk):
    package = snapshot(installed_copy)
    for _ in range(2):  # and again: nothing half-written is read back
        result = _run(
            installed_copy, "-m", "tinynet", "gradcheck", "relu", TINYNET_CACHE_DIR=str(full_disk)
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "ok: every gradient matches"
        assert _warning(result.stderr) == (
            f"tinynet does not use {full_disk / _subfolder(compiled)} to cache its kernels: "
            "it cannot be written (No space left on device)"
        )
    assert sorted(path.name for path in full_disk.rglob("*")) == ["filler", _subfolder(compiled)]
    assert snapshot(installed_copy) == package


def test_a_damaged_cache_file_of_this_users_is_compiled_again_and_replaced(
    installed_copy, compiled, tmp_path
):
    root = tmp_path / "cache"
    shutil.copytree(compiled, root)
    (index,) = root.rglob("activation.relu_forward_serial_numpy_errors-*.nbi")
    index.write_bytes(index.read_bytes()[:40])  # cut short, as by a failing disk
    result = _run(installed_copy, TINYNET_CACHE_DIR=str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == RELU
    assert _warning(result.stderr).startswith(
        f"tinynet does not read {index}: it cannot be read (UnpicklingError: "
    )
    again = _run(installed_copy, TINYNET_CACHE_DIR=str(root))  # replaced by the compile
    assert (again.returncode, again.stdout.strip(), again.stderr) == (0, RELU, "")


def test_numbas_locators_are_never_used_for_tinynets_kernels(installed_copy, tmp_path):
    """numba >= 0.62 lets NUMBA_CACHE_LOCATOR_CLASSES replace its list of cache locations, its
    in-package ``__pycache__`` among them: tinynet then compiles its kernels without caching."""
    from numba.core import config

    if not hasattr(config, "CACHE_LOCATOR_CLASSES"):
        pytest.skip("this numba has no NUMBA_CACHE_LOCATOR_CLASSES")
    package = snapshot(installed_copy)
    result = _run(
        installed_copy,
        NUMBA_CACHE_LOCATOR_CLASSES="InTreeCacheLocator",
        TINYNET_CACHE_DIR=str(tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == RELU
    assert _warning(result.stderr) == (
        "tinynet compiles its kernels without caching: NUMBA_CACHE_LOCATOR_CLASSES is set, "
        "and tinynet caches only in its own private folder"
    )
    assert snapshot(installed_copy) == package
    assert not (tmp_path / "cache").exists()
