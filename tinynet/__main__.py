"""``python -m tinynet``: the same command as ``tinynet``."""

# isort: off
import tinynet  # noqa: F401 - first, before NumPy loads: see tinynet/_threads.py
from tinynet.cli import main

raise SystemExit(main())
