"""Importing tinynet changes nothing in the process it is imported into; the runtime policy is
one explicit call, ``tinynet.runtime.configure()`` (tinynet/runtime.py), and calling it twice is
harmless. Each check runs in a fresh process started as a user's would be: with none of the
settings this test process carries (the suite itself runs configured: tests/conftest.py)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tinynet._malloc import is_glibc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What configure() may set, and what would decide the answer instead of the code under test.
_SETTINGS = ("OPENBLAS_", "OMP_", "MKL_", "NUMBA_NUM_THREADS", "TINYNET_", "MALLOC_", "GLIBC_")

# The process's environment, its BLAS pools and numba's threads, and the page faults of filling
# a freed 256 MB array again (glibc's default unmaps it on free, so every page faults again).
STATE = """
import json, os, resource
import numpy as np
from threadpoolctl import threadpool_info
import numba

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(64 * 2**20, dtype=np.float32)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def state():
    faults()
    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()
            if i["user_api"] == "blas"]
    return {"environ": dict(os.environ), "blas": blas, "numba": numba.get_num_threads(),
            "refault": faults()}

before = state()
import tinynet
{after_import}
print(json.dumps({"before": before, "after": state()}))
"""


def run(after_import: str = "") -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS)}
    environment["PYTHONPATH"] = ROOT
    code = STATE.replace("{after_import}", textwrap.dedent(after_import))
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_tinynet_changes_nothing():
    states = run()
    before, after = states["before"], states["after"]
    assert after["environ"] == before["environ"]
    assert after["blas"] == before["blas"] and after["numba"] == before["numba"]
    if is_glibc():  # glibc's malloc still unmaps a large freed block: filling it again faults
        assert after["refault"] > before["refault"] / 2, (before, after)


def test_configure_applies_the_policy_and_a_second_call_changes_nothing():
    states = run("tinynet.runtime.configure()\ntinynet.runtime.configure()")
    before, after = states["before"], states["after"]
    added = {k: v for k, v in after["environ"].items() if before["environ"].get(k) != v}
    assert added.items() >= {"OPENBLAS_THREAD_TIMEOUT": "1", "OMP_WAIT_POLICY": "PASSIVE"}.items()
    assert set(added) <= {
        "OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
        "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
    }, added  # fmt: skip
    if is_glibc():  # freed blocks are kept for the next allocation
        assert after["refault"] < before["refault"] / 100, (before, after)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_the_commands_apply_the_policy():
    """`tinynet` runs configured (the commands call configure() before their work)."""
    code = (
        "import sys, tinynet.cli, tinynet.runtime\n"
        "tinynet.cli.main(['summary', '--model', 'small'])\n"
        "print(tinynet.runtime.is_configured(), file=sys.stderr)"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS)}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**environment, "PYTHONPATH": ROOT},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "True"


def test_a_kernel_compiled_after_configure_with_fewer_threads_than_cores():
    """TINYNET_NUM_THREADS below the cores: configure() sizes numba's pool by set_num_threads and
    leaves NUMBA_NUM_THREADS alone (numba read it at import: a new value made the next
    compilation, e.g. a kernel on a cold cache, raise 'Cannot set NUMBA_NUM_THREADS')."""
    code = (
        "import numba, numpy as np, tinynet, tinynet.runtime\n"
        "from tinynet.kernels.activation import relu_forward\n"
        "tinynet.runtime.configure()\n"
        "relu_forward(np.ones(2**20, np.float32), np.empty(2**20, np.float32))\n"
        "print(numba.njit(lambda x: x + 1)(1), numba.get_num_threads())\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS)}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**environment, "PYTHONPATH": ROOT,
                                           "TINYNET_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "1"]
