"""With the runtime policy applied (tinynet.runtime.configure()), tinynet keeps freed memory for
the next allocation (tinynet/_malloc.py), in fresh processes; importing tinynet alone does not."""

import os
import subprocess
import sys

import pytest

from tinynet._malloc import is_glibc

glibc = pytest.mark.skipif(not is_glibc(), reason="the tuning is glibc's malloc's")

# Page faults of filling a 256 MB array, the first time and again after freeing it.
FAULTS = """
import resource, numpy as np, tinynet
tinynet.runtime.configure()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(64 * 2**20, dtype=np.float32)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults(), faults())
"""


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@glibc
def test_a_freed_array_s_pages_are_reused_without_faulting_again():
    first, again = map(int, _run(FAULTS).stdout.split())
    assert first > 100 and again < first / 100, (first, again)  # 2 MB pages where THP is on


@glibc
def test_importing_tinynet_keeps_glibc_s_defaults():
    first, again = map(int, _run(FAULTS.replace("tinynet.runtime.configure()", "")).stdout.split())
    assert again > first / 2, (first, again)


@glibc
@pytest.mark.parametrize(
    "env", [{"TINYNET_KEEP_FREED_MEMORY": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}]
)
def test_the_user_s_choice_keeps_glibc_s_defaults(env):
    # The default unmaps a block this large on free, so filling it again faults every page.
    first, again = map(int, _run(FAULTS, **env).stdout.split())
    assert again > first / 2, (first, again)


def test_a_bad_setting_is_a_one_line_error():
    result = _run("import tinynet; tinynet.runtime.configure()", TINYNET_KEEP_FREED_MEMORY="yes")
    assert result.returncode != 0
    assert "TINYNET_KEEP_FREED_MEMORY must be 0 or 1; got 'yes'" in result.stderr.splitlines()[-1]
