"""What one client connection may take of an API server: bytes for a request's head, and time per stage.

uvicorn bounds neither the request line nor the headers (httptools keeps a header however long it
is), and its only timer is the keep-alive one, which any byte received disarms: a connection that
sent nothing, one byte, part of its headers or part of its body stayed open for good, holding what it
had sent. ``DirectHttpProtocol`` (``service.http.direct``) applies these limits to every connection:

- the request target (414), the number of header fields and the bytes of the request line and
  headers together (431), counted as they arrive, so an oversized head is refused before it is
  complete;
- one timer per connection for the stage it is in, which only the next stage resets, never bytes:
  idle (from the connection's start or its last answer to the first byte of the next request: closed),
  head (to the end of the headers: 408), body (to its last byte: 408). While a request is computed no
  timer runs (``--request-timeout`` bounds it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class ConnectionLimits:
    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 64 * 1024  # the request line and the headers together
    max_headers: int = 100
    header_timeout: float = 10.0  # from a request's first byte to the end of its headers
    body_timeout: float = 30.0  # from the end of its headers to the end of its body
    keep_alive_timeout: float = 5.0  # idle: from the connection's start or its last answer


class Stage(Enum):
    IDLE = "idle"
    HEAD = "head"
    BODY = "body"


class StageTimer:
    """The one timer of a connection: ``start`` a stage (replacing the previous one's timer), ``stop``
    while nothing is expected from the client. ``on_expiry`` gets the stage whose time ran out."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, limits: ConnectionLimits, on_expiry: Callable[[Stage], None]
    ) -> None:
        self.loop = loop
        self.limits = limits
        self.on_expiry = on_expiry
        self.stage: Stage | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, stage: Stage) -> None:
        if self._timer is not None:
            self._timer.cancel()
        seconds = {
            Stage.IDLE: self.limits.keep_alive_timeout,
            Stage.HEAD: self.limits.header_timeout,
            Stage.BODY: self.limits.body_timeout,
        }[stage]
        self.stage = stage
        self._timer = self.loop.call_later(seconds, self._expired, stage)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.stage = None

    def _expired(self, stage: Stage) -> None:
        self._timer = None
        self.stage = None
        self.on_expiry(stage)
