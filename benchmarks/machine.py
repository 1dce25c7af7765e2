"""What machine a benchmark ran on, in one line: the CPU, its widest vector instruction set, the
BLAS NumPy uses with its kernel (OpenBLAS picks SkylakeX on AVX-512, Haswell on AVX2) and the
load at the start. Every benchmark prints it first, so a table is never read without it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Widest first: the first flag /proc/cpuinfo lists names the instruction set.
ISA_FLAGS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"))


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown CPU"


def instruction_set() -> str:
    flags = set((_cpuinfo("flags") or "").split())
    return next((name for flag, name in ISA_FLAGS if flag in flags), platform.machine())


def blas() -> str:
    """NumPy's BLAS as threadpoolctl reports it: its name, version and kernel."""
    import numpy  # noqa: F401 - so that its BLAS is loaded
    from threadpoolctl import threadpool_info

    for library in threadpool_info():
        if library["user_api"] == "blas":
            kernel = library.get("architecture") or "?"
            return f"{library['internal_api']} {library['version']} ({kernel} kernel)"
    return "no BLAS found"


def describe() -> str:
    return (
        f"{cpu_model()}, {instruction_set()}, {os.cpu_count()} logical CPUs, {blas()}, "
        f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f} at start"
    )


def _cpuinfo(key: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
