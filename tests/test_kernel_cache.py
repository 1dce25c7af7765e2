"""The numba kernel cache lives in a per-user folder and never inside the installed package.

Each test runs a kernel in a fresh process on a copy of the package made read-only, as a
site-packages install can be, and checks that the package's files are exactly what was copied
(tests may run as root, for whom read-only bits do not stop a write: the listing is what proves
it) and that the compiled kernel landed in the cache folder.
"""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from datafiles import snapshot

import tinynet

RUN_A_KERNEL = (
    "import tinynet, numpy as np, tinynet.functional as F; "
    "x = F.relu(tinynet.tensor(np.arange(-3.0, 3.0))); "
    "print(x.data.tolist())"
)


@pytest.fixture
def installed_copy(tmp_path):
    """tinynet's source copied to tmp_path/site/tinynet without caches, made read-only."""
    site = tmp_path / "site"
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


def _run(site: Path, **environment) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TINYNET_CACHE_DIR"}
    env.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", **environment)
    return subprocess.run(
        [sys.executable, "-c", RUN_A_KERNEL],
        capture_output=True,
        text=True,
        env=env,
        cwd=site.parent,
        timeout=300,
    )


def _cached_kernels(folder: Path) -> list[Path]:
    # the kernel runs serially on so few elements: its twin compiled without threads
    return sorted(folder.rglob("activation.relu_forward_serial-*.nbi"))


def test_the_cache_goes_to_tinynet_cache_dir_and_never_into_the_package(installed_copy, tmp_path):
    before = snapshot(installed_copy)
    cache = tmp_path / "kernel cache"
    for _ in range(2):  # the second run loads what the first compiled
        result = _run(installed_copy, TINYNET_CACHE_DIR=str(cache))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[0.0, 0.0, 0.0, 0.0, 1.0, 2.0]"
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
    assert snapshot(installed_copy) == before
    (private,) = temporary.iterdir()
    assert private.name.startswith("tinynet-cache-")
    assert stat.S_IMODE(private.stat().st_mode) & 0o077 == 0
    assert len(_cached_kernels(private)) == 1
