"""Warnings any client can cause, logged at a bounded rate.

uvicorn logs "Invalid HTTP request received." at WARNING for every request its parser refuses: a
client sending garbage in a loop wrote a log line per request, thousands a second, at the operator's
expense (disk, log shipping). Such messages pass at most once per interval per process, with the
count of those held back since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

INTERVAL_S = 10.0
# uvicorn's, in httptools_impl: each caused by what one request sent.
CLIENT_CAUSED = ("Invalid HTTP request received.", "Unsupported upgrade request.")


class RepeatLimit(logging.Filter):
    """Lets each of ``messages`` through at most once per ``interval`` seconds."""

    def __init__(self, messages: Iterable[str], interval: float) -> None:
        super().__init__()
        self.messages = frozenset(messages)
        self.interval = interval
        self._next: dict[str, float] = {}  # when each message may pass again
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if message not in self.messages:
            return True
        now = time.monotonic()
        if now < self._next.get(message, 0.0):
            self._held[message] = self._held.get(message, 0) + 1
            return False
        self._next[message] = now + self.interval
        held = self._held.pop(message, 0)
        if held:
            record.msg = f"{message} ({held} more like it in the last {self.interval:g} s, not logged)"
        return True


def client_caused_warnings() -> logging.Logger:
    """The logger a connection's protocol logs to: uvicorn's, through the repeat limit. Call it once
    logging is configured (from a connection)."""
    logger = logging.getLogger("uvicorn.error.connections")  # propagates to uvicorn.error's handlers
    if not logger.filters:
        logger.addFilter(RepeatLimit(CLIENT_CAUSED, INTERVAL_S))
        # uvicorn compares its logger's own level with TRACE on every connection: NOTSET would pass.
        logger.setLevel(logging.getLogger("uvicorn.error").getEffectiveLevel())
    return logger
