"""Request metrics held per event-loop turn must all be written by the end of their interval."""

from __future__ import annotations

import asyncio
import time
import typing
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Counter, Histogram

from service.http.request_metrics import MAX_HELD_OBSERVATIONS, RequestMetrics
from service.metrics import (
    LATENCY_BUCKETS,
    REQUEST_METRICS_INTERVAL_S,
    Metrics,
)
from tests.service.registry import samples


def _request_metrics(registry: CollectorRegistry) -> RequestMetrics:
    # The real metric objects RequestMetrics writes to, in a registry of the test's own.
    held = SimpleNamespace(
        requests=Counter("req", "requests", ["route", "method", "code"], registry=registry),
        request_latency=Histogram("lat", "latency", ["route"], buckets=LATENCY_BUCKETS, registry=registry),
    )
    return RequestMetrics(typing.cast(Metrics, held))


def test_request_metrics_are_held_for_the_interval_then_written_together() -> None:
    registry = CollectorRegistry()
    metrics = _request_metrics(registry)

    async def observe_over_turns() -> dict[tuple[str, str], float]:
        started = time.perf_counter()
        for status in (200, 200, 200, 503):
            metrics.observe("/predict", "POST", status, started)
            await asyncio.sleep(0)  # requests end in different loop turns
        held = samples(registry, "req")
        await asyncio.sleep(REQUEST_METRICS_INTERVAL_S * 2)
        return held

    held = asyncio.run(observe_over_turns())
    assert not any(value for (name, _), value in held.items() if name == "req_total")
    after = {
        (sample.labels.get("code"), sample.labels.get("le")): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name in ("req_total", "lat_count", "lat_bucket")
    }
    assert after[("200", None)] == 3 and after[("503", None)] == 1
    assert after[(None, None)] == 4 and after[(None, "+Inf")] == 4  # lat_count and the last bucket


def test_request_metrics_are_written_at_once_when_too_many_are_held() -> None:
    registry = CollectorRegistry()
    metrics = _request_metrics(registry)

    async def observe_many_at_once() -> dict[tuple[str, str], float]:
        started = time.perf_counter()
        for _ in range(MAX_HELD_OBSERVATIONS):
            metrics.observe("/predict", "POST", 200, started)
        return samples(registry, "req")

    assert asyncio.run(observe_many_at_once())[("req_total", "")] == MAX_HELD_OBSERVATIONS


def test_request_metrics_without_an_event_loop_are_written_at_once() -> None:
    registry = CollectorRegistry()
    _request_metrics(registry).observe("/metrics", "GET", 200, time.perf_counter())
    assert samples(registry, "req")[("req_total", "")] == 1
