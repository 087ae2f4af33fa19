"""`mnist-serve`: not built yet. It says so instead of pretending to serve."""

from __future__ import annotations

import sys


def main() -> int:
    print("mnist-serve: not yet implemented (the inference server is the next issue)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
