"""The demo page at ``/``: draw or upload a digit and see what the model answers.

Plain static files (``service/http/static/``, no build step, nothing from other hosts); the page calls the
public ``POST /predict?include=pixels`` like any client, so it needs the API key where one is set,
while the page itself stays open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")
STATIC_PATH = "/static"
# The files' names carry no version, so browsers revalidate them (ETag) on every load: a new release of
# the page shows at once instead of mixing old scripts with a new server.
REVALIDATE = {"Cache-Control": "no-cache"}
# The browser itself refuses anything not served from here: the page works offline, and a stray
# external reference fails loudly in development instead of leaking requests.
PAGE_HEADERS = {
    **REVALIDATE,
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


class RevalidatedFiles(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(REVALIDATE)
        return response


async def index(_: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


def _is_root(route: BaseRoute) -> bool:
    return getattr(route, "path", None) == "/"


def install_demo_page(app: FastAPI) -> None:
    """Serve the page at ``/`` (replacing LitServe's plain-text index) and its files under
    ``/static``; neither appears in the OpenAPI schema."""
    app.router.routes[:] = [route for route in app.router.routes if not _is_root(route)]
    # A Starlette route (not FastAPI's) also answers HEAD, as browsers and uptime checks expect.
    app.router.routes.append(Route("/", index, methods=["GET"], include_in_schema=False))
    app.mount(STATIC_PATH, RevalidatedFiles(directory=STATIC), name="static")
