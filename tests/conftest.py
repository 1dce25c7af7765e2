"""Hypothesis profiles and the optional PyTorch reference.

HYPOTHESIS_PROFILE=ci (default): few, derandomised examples, so the suite is quick and repeatable.
HYPOTHESIS_PROFILE=dev or thorough: more examples, random each run, for local digging.
deadline=None everywhere: the first call of a numba kernel compiles (or loads its cache).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

import tinynet

settings.register_profile(
    "ci",
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("thorough", max_examples=400, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The suite runs as a training run does, with the runtime policy (tinynet/runtime.py): idle
# threads sleep between a GEMM and the next kernel, which matters on 2 cores. What importing
# tinynet alone does (nothing) is tested in fresh processes (tests/test_runtime.py).
tinynet.runtime.configure()


@pytest.fixture(scope="session")
def torch():
    """PyTorch, as a reference only; tests that take this fixture skip cleanly without it."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch
