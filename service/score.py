"""`mnist-score`: not built yet. It says so instead of pretending to score."""

from __future__ import annotations

import sys


def main() -> int:
    print("mnist-score: not yet implemented (batch scoring comes after the server)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
