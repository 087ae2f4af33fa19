"""observe_many must leave a histogram exactly as observe() for each value would, in both value modes;
request metrics batched per event-loop turn must all be written by the end of that turn; a worker's
batch metrics held in memory must all be written by a flush."""

from __future__ import annotations

import asyncio
import time
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from service import batch_metrics
from service.batch_metrics import BatchMetrics
from service.front import MAX_HELD_OBSERVATIONS, RequestMetrics
from service.metrics import (
    BATCH_BUCKETS,
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS,
    REQUEST_METRICS_INTERVAL_S,
    observe_many,
)
from service.routes import InferenceSpec


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name.startswith(name)
    }


AMOUNTS = [
    np.array([0.0, 0.0004, 0.0005, 0.00051, 0.003, 0.003, 7.0, 31.0, 1e9]),  # on, between and past bounds
    np.random.default_rng(0).exponential(0.01, 500),
    np.array([0.0005, 7.0, 0.003]),  # few values: one observe() each
    np.array([0.004]),
    np.array([]),
]


@pytest.mark.parametrize("amounts", AMOUNTS)
def test_observe_many_equals_observe_per_value(amounts: np.ndarray) -> None:
    registry = CollectorRegistry()
    one_by_one = Histogram("one_by_one", "per value", buckets=LATENCY_BUCKETS, registry=registry)
    at_once = Histogram("at_once", "vectorised", buckets=LATENCY_BUCKETS, registry=registry)
    for amount in amounts.tolist():
        one_by_one.observe(amount)
    observe_many(at_once, amounts)
    expected = {
        (n.replace("one_by_one", "at_once"), le): v for (n, le), v in _samples(registry, "one_by_one").items()
    }
    got = _samples(registry, "at_once")
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert got[("at_once_count", "")] == len(amounts)


def test_observe_many_in_multiprocess_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.get_value_class())
    confidences = np.random.default_rng(1).uniform(0.1, 1.0, 300)
    one_by_one = Histogram("mp_one", "per value", buckets=CONFIDENCE_BUCKETS, registry=None)
    at_once = Histogram("mp_many", "vectorised", buckets=CONFIDENCE_BUCKETS, registry=None)
    for amount in confidences.tolist():
        one_by_one.observe(amount)
    observe_many(at_once, confidences)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    expected = _samples(registry, "mp_one")
    got = _samples(registry, "mp_many")
    assert expected and len(got) == len(expected)
    for (name, le), value in expected.items():
        assert got[(name.replace("mp_one", "mp_many"), le)] == pytest.approx(value)
    assert got[("mp_many_count", "")] == 300


def _request_metrics(registry: CollectorRegistry) -> RequestMetrics:
    # The real metric objects RequestMetrics writes to, held the way InferenceSpec holds them.
    held = SimpleNamespace(
        requests=Counter("req", "requests", ["route", "method", "code"], registry=registry),
        request_latency=Histogram("lat", "latency", ["route"], buckets=LATENCY_BUCKETS, registry=registry),
    )
    return RequestMetrics(typing.cast(InferenceSpec, SimpleNamespace(metrics=held)))


def test_request_metrics_are_held_for_the_interval_then_written_together() -> None:
    registry = CollectorRegistry()
    metrics = _request_metrics(registry)

    async def observe_over_turns() -> dict[tuple[str, str], float]:
        started = time.perf_counter()
        for status in (200, 200, 200, 503):
            metrics.observe("/predict", "POST", status, started)
            await asyncio.sleep(0)  # requests end in different loop turns
        held = _samples(registry, "req")
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
        return _samples(registry, "req")

    assert asyncio.run(observe_many_at_once())[("req_total", "")] == MAX_HELD_OBSERVATIONS


def test_request_metrics_without_an_event_loop_are_written_at_once() -> None:
    registry = CollectorRegistry()
    _request_metrics(registry).observe("/metrics", "GET", 200, time.perf_counter())
    assert _samples(registry, "req")[("req_total", "")] == 1


def _worker_metrics(registry: CollectorRegistry) -> SimpleNamespace:
    """The metric objects BatchMetrics writes to (service.metrics.Metrics' names, a private registry)."""
    predictions = Counter("pred", "by digit", ["digit"], registry=registry)
    return SimpleNamespace(
        queue_wait=Histogram("wait", "queue wait", buckets=LATENCY_BUCKETS, registry=registry),
        inference=Histogram("infer", "per batch", buckets=LATENCY_BUCKETS, registry=registry),
        batch_requests=Histogram("jobs", "per batch", buckets=BATCH_BUCKETS, registry=registry),
        batch_images=Histogram("imgs", "per batch", buckets=BATCH_BUCKETS, registry=registry),
        images=Counter("images", "classified", registry=registry),
        predicted_digits=[predictions.labels(str(digit)) for digit in range(10)],
        confidence=Histogram("conf", "confidence", buckets=CONFIDENCE_BUCKETS, registry=registry),
        low_confidence=Counter("low", "low confidence", registry=registry),
    )


def _one_hot(digits: list[int], confidence: float) -> np.ndarray:
    probabilities = np.full((len(digits), 10), (1 - confidence) / 9, np.float32)
    probabilities[np.arange(len(digits)), digits] = confidence
    return probabilities


def test_batch_metrics_are_held_until_a_flush_writes_them_all(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    held = BatchMetrics(typing.cast(Any, _worker_metrics(registry)), low_confidence=0.5)
    held.add(np.array([0.001, 0.002]), 0.004, _one_hot([3, 3, 7], 0.99))  # two jobs, three images
    held.add(np.array([0.03]), 0.002, _one_hot([1], 0.3))
    written = _samples(registry, "")
    assert not any(value for (name, _), value in written.items() if name.endswith(("_total", "_count")))
    due_in = held.due_in()
    assert due_in is not None and 0 < due_in <= batch_metrics.FLUSH_INTERVAL_S  # held, not yet due
    held.flush()
    got = _samples(registry, "")
    assert got[("images_total", "")] == 4
    by_digit = {
        sample.labels["digit"]: sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "pred_total"
    }
    assert by_digit["3"] == 2 and by_digit["7"] == 1 and by_digit["1"] == 1 and by_digit["0"] == 0
    assert got[("wait_count", "")] == 3 and got[("wait_sum", "")] == pytest.approx(0.033)
    assert got[("wait_bucket", "0.0025")] == 2
    assert got[("infer_count", "")] == 2 and got[("infer_sum", "")] == pytest.approx(0.006)
    assert got[("jobs_sum", "")] == 3 and got[("jobs_bucket", "1.0")] == 1  # batches of 2 and 1 jobs
    assert got[("imgs_sum", "")] == 4 and got[("imgs_bucket", "2.0")] == 1  # of 3 and 1 images
    assert got[("conf_count", "")] == 4 and got[("low_total", "")] == 1
    held.flush()  # nothing new: nothing written twice
    assert _samples(registry, "")[("images_total", "")] == 4
    monkeypatch.setattr(batch_metrics, "FLUSH_INTERVAL_S", 0.0)
    assert held.due_in() is None  # nothing held
    held.add(np.array([0.001]), 0.001, _one_hot([5], 0.9))
    assert held.due_in() == 0.0
