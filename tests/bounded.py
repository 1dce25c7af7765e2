"""Run a snippet in a fresh Python process whose memory is capped, for the hostile-input tests.

A reader that allocates what a malicious header asks for (hundreds of MB, or GB) before it checks
the file must fail such a test; one that checks first stays far below the cap. The cap is set with
``resource.setrlimit(RLIMIT_AS, ...)`` after tinynet and the modules named in ``imports`` are
loaded, as that process's address space then plus ``budget_mb``, so it bounds what the snippet
itself allocates, not the interpreter, NumPy or numba. A numba kernel first run under the cap
(compiling, or starting its thread pool) can hang: run it once in ``imports`` to warm it up.
"""

import subprocess
import sys
import textwrap

_PRELUDE = """\
import resource
import tinynet
{imports}

def _address_space():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")

_cap = _address_space() + {budget} * 2**20
resource.setrlimit(resource.RLIMIT_AS, (_cap, _cap))
"""


def run_bounded(code: str, budget_mb: int = 200, imports: str = "", timeout: float = 120):
    """Run ``code`` under an address-space cap of ``budget_mb`` above what its imports use.

    Returns the ``subprocess.CompletedProcess`` (text output). A reader that respects its bound
    exits as the snippet says; one that allocates past the cap dies of ``MemoryError``.
    """
    source = _PRELUDE.format(imports=textwrap.dedent(imports), budget=budget_mb)
    source += textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
