"""`mnist-serve`: serve a model from the repository over HTTP."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from service.errors import StartupError
from service.settings import load_settings

EXIT_STARTUP = 2


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from service.server import serve  # after settings: imports LitServe, FastAPI and the runtimes

    try:
        return serve(settings)
    except StartupError as error:
        print(f"mnist-serve: refusing to start: {error}", file=sys.stderr)
        return EXIT_STARTUP


if __name__ == "__main__":
    sys.exit(main())
