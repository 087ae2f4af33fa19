"""What the server answers: a status, headers and a body, and the one place errors become replies.

Both HTTP adapters (``service.http.direct`` and ``service.http.asgi``) and FastAPI's exception handlers
write these; every error body is ``{"error": "..."}`` with the status its ``ServiceError`` class gives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson
from starlette.responses import Response

from service.errors import QueueTimeout, ServiceError
from service.http.bodies import JSON_HEADERS

log = logging.getLogger("mnist-serve")


class Reply(NamedTuple):  # a tuple: built for every request (a frozen dataclass costs more)
    status: int
    headers: Mapping[str, str]  # content-type and the like; the adapters add length, date and server
    body: bytes


def json_reply(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, {**JSON_HEADERS, **headers} if headers else JSON_HEADERS, orjson.dumps(payload))


class RateLimitedWarning:
    """A warning logged at most once per ``interval_s``, saying how many times it happened: under
    overload a line per request would flood the logs (each is also counted in the metrics)."""

    def __init__(self, what: str, interval_s: float = 10.0) -> None:
        self.what = what
        self.interval_s = interval_s
        self._count = 0
        self._next_at = 0.0

    def __call__(self, message: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now >= self._next_at:
            log.warning(
                "%s: %d in the last %.0f s (last: %s)", self.what, self._count, self.interval_s, message
            )
            self._count, self._next_at = 0, now + self.interval_s


_timeouts = RateLimitedWarning("requests timed out (504)")


def error_reply(error: Exception) -> Reply:
    """A ServiceError as its status, message and headers; anything else a logged 500."""
    if not isinstance(error, ServiceError):
        log.error("unhandled error", exc_info=error)
        return json_reply(500, {"error": "internal server error"})
    if isinstance(error, QueueTimeout):
        _timeouts(error.message)
    elif error.status >= 500 and error.headers is None:  # 503s carry Retry-After: expected
        log.error("request failed: %s", error.message)
    return json_reply(error.status, {"error": error.message}, error.headers)


def as_response(reply: Reply) -> Response:
    """The reply as a Starlette response (FastAPI's routes and exception handlers)."""
    return Response(reply.body, status_code=reply.status, headers=dict(reply.headers))
