"""`python -m keeldb`: the same command line as the `keeldb` script."""

from __future__ import annotations

import sys

from keeldb.cli import main

if __name__ == "__main__":
    sys.exit(main())
