"""``python -m tinynet``: the same command as ``tinynet``."""

from tinynet.cli import main

raise SystemExit(main())
