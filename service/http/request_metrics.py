"""The API server's request metrics: count and latency by route, method and status, and rejections.

Each observation is a locked write to a memory-mapped file (prometheus_client's multiprocess mode:
three per request, a fourth for a rejection, and a Python loop over the histogram's buckets). Under
load an event-loop turn finishes only a few requests, so writing them per turn still cost ~10 µs of a
request (docs/performance.md), and a rejection written at once cost 40 % of a 503 (`api_cpu.py --refused`):
observations and rejections are held and written together ``REQUEST_METRICS_INTERVAL_S`` after
the first one. A scrape waits ``REQUEST_METRICS_SCRAPE_WAIT_S``, so every API server has written what it
answered before the scrape arrived; a killed API server loses at most its last interval's observations
(on a clean stop they are written).
"""

from __future__ import annotations

import asyncio
import multiprocessing.util
import os
import time
from typing import Any

import numpy as np

from service.metrics import REQUEST_METRICS_INTERVAL_S, Metrics, observe_many

MAX_LABEL_SETS = 1024  # methods are client-chosen: bound what a scanner can make us keep
MAX_HELD_OBSERVATIONS = 4096  # bounds the memory held if the timer is late


class RequestMetrics:
    """Created in the main process; each API server forked from it writes its own files."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics  # None: created in each process on first use
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._pending: dict[tuple[str, str, int], list[float]] = {}
        self._rejected: dict[str, int] = {}  # by reason
        self._held = 0
        self._finalizer_pid = 0

    @property
    def metrics(self) -> Metrics:
        if self._metrics is None:  # per process, after the fork, so each writes its own files
            self._metrics = Metrics()
        return self._metrics

    def reject(self, reason: str) -> None:
        """Count a request refused for ``reason`` (``ServiceError.reason``)."""
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        self._hold()

    def observe(self, route: str, method: str, status: int, started: float) -> None:
        """Record a request answered with ``status``, ``started`` at ``time.perf_counter()``."""
        self._pending.setdefault((route, method, status), []).append(time.perf_counter() - started)
        self._hold()

    def _hold(self) -> None:
        self._held += 1
        if self._held == 1:
            try:
                asyncio.get_running_loop().call_later(REQUEST_METRICS_INTERVAL_S, self.flush)
            except RuntimeError:  # no event loop (a direct call): nothing to wait for
                self.flush()
                return
            if self._finalizer_pid != os.getpid():  # written on a clean exit too (forked: once per process)
                self._finalizer_pid = os.getpid()
                multiprocessing.util.Finalize(self, self.flush, exitpriority=10)
        elif self._held >= MAX_HELD_OBSERVATIONS:
            self.flush()  # the timer then finds nothing to write

    def flush(self) -> None:
        pending, self._pending, self._held = self._pending, {}, 0
        rejected, self._rejected = self._rejected, {}
        for reason, count in rejected.items():
            self.metrics.rejected.labels(reason).inc(count)
        for key, latencies in pending.items():
            count, latency = self._labelled(key)
            count.inc(len(latencies))
            observe_many(latency, np.array(latencies))

    def _labelled(self, key: tuple[str, str, int]) -> tuple[Any, Any]:
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a lookup: once per route, method and status
            route, method, status = key
            children = (
                self.metrics.requests.labels(route, method, str(status)),
                self.metrics.request_latency.labels(route),
            )
            if len(self._children) < MAX_LABEL_SETS:
                self._children[key] = children
        return children
