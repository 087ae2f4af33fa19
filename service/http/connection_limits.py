"""What one client connection may take of an API server: bytes for a request's head, and time per stage.

uvicorn bounds neither the request line nor the headers (httptools keeps a header however long it
is), and its only timer is the keep-alive one, which any byte received disarms: a connection that
sent nothing, one byte, part of its headers or part of its body stayed open for good, holding what it
had sent. ``DirectHttpProtocol`` (``service.http.direct``) applies these limits to every connection:

- the request target (414), the number of header fields and the bytes of the request line and
  headers together (431), counted as they arrive, so an oversized head is refused before it is
  complete;
- the bytes of request bodies held while they arrive, all connections of an API server together (each
  body is bounded by --max-request-bytes, but 40 connections each holding most of one held 320 MB);
- one deadline per connection for the stage it is in, which only the next stage resets, never bytes:
  idle (from the connection's start or its last answer to the first byte of the next request: closed),
  head (to the end of the headers: 408), body (to its last byte: 408). While a request is computed no
  timer runs (``--request-timeout`` bounds it).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 64 * 1024  # the request line and the headers together
    max_headers: int = 100
    header_timeout: float = 10.0  # from a request's first byte to the end of its headers
    body_timeout: float = 30.0  # from the end of its headers to the end of its body
    keep_alive_timeout: float = 5.0  # idle: from the connection's start or its last answer
    max_buffered_body_bytes: int = 256 * 2**20  # bodies being received, all connections together


class Stage(IntEnum):  # an int: it indexes StageTimer's durations without Enum's Python-level hash
    IDLE = 0
    HEAD = 1
    BODY = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class StageTimer:
    """A connection's deadline for the stage it is in: ``start`` a stage, ``stop`` while nothing is
    expected from the client, ``close`` with the connection. ``on_expiry`` gets the stage whose time
    ran out. Setting a stage is two attribute writes: one sweep per event loop checks every
    connection's deadline a few times per shortest timeout, where a timer per stage (three per
    request, each created and cancelled) cost an API server about half again its CPU per request
    (benchmarks/api_cpu.py)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, limits: ConnectionLimits, on_expiry: Callable[[Stage], None]
    ) -> None:
        self.loop = loop
        self.on_expiry = on_expiry
        self.stage: Stage | None = None
        self.deadline = 0.0
        self._seconds = (limits.keep_alive_timeout, limits.header_timeout, limits.body_timeout)  # by Stage
        self._sweep = _Sweep.of(loop, limits)
        self._sweep.timers.add(self)

    def start(self, stage: Stage) -> None:
        self.stage = stage
        self.deadline = self.loop.time() + self._seconds[stage]

    def stop(self) -> None:
        self.stage = None

    def close(self) -> None:
        self.stage = None
        self._sweep.timers.discard(self)


class _Sweep:
    """Expires the stages of one event loop's connections: every quarter of the shortest timeout
    (within 50 ms..1 s), so a stage lasts its timeout and at most that much more."""

    _of_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweep]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, limits: ConnectionLimits) -> _Sweep:
        sweep = cls._of_loop.get(loop)
        if sweep is None:
            shortest = min(limits.keep_alive_timeout, limits.header_timeout, limits.body_timeout)
            sweep = cls._of_loop[loop] = cls(loop, min(1.0, max(0.05, shortest / 4)))
        return sweep

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.timers: set[StageTimer] = set()
        loop.call_later(interval, self._run)

    def _run(self) -> None:
        now = self.loop.time()
        for timer in [t for t in self.timers if t.stage is not None and t.deadline <= now]:
            stage, timer.stage = timer.stage, None
            if stage is None:  # stopped by an earlier expiry in this sweep (a pipelined answer)
                continue
            try:
                timer.on_expiry(stage)
            except Exception:  # one connection's failure must not stop the sweep for the others
                log.exception("closing a connection past its %s timeout failed", stage.label)
        self.loop.call_later(self.interval, self._run)


class BufferedBodies:
    """Bytes of the request bodies one event loop's connections hold while they arrive."""

    _of_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BufferedBodies]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> BufferedBodies:
        buffered = cls._of_loop.get(loop)
        if buffered is None:
            buffered = cls._of_loop[loop] = cls()
        return buffered

    def __init__(self) -> None:
        self.held = 0
