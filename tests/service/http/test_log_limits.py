from __future__ import annotations

import logging

import pytest

from service.http.log_limits import RepeatLimit


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, message, None, None)


def test_a_client_caused_warning_passes_once_per_interval_then_says_how_many_it_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr("service.http.log_limits.time.monotonic", lambda: now[0])
    limit = RepeatLimit(["Invalid HTTP request received."], interval=10)
    passed = [limit.filter(_record("Invalid HTTP request received.")) for _ in range(1000)]
    assert passed.count(True) == 1 and passed[0]
    assert limit.filter(_record("Exception in ASGI application"))  # any other message: always
    now[0] += 10
    later = _record("Invalid HTTP request received.")
    assert limit.filter(later) and "999 more like it" in later.getMessage()
    assert not limit.filter(_record("Invalid HTTP request received."))
