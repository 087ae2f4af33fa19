"""A worker's batch metrics held in memory must all be written by a flush."""

from __future__ import annotations

import typing
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from service.metrics import (
    BATCH_BUCKETS,
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS,
)
from service.worker import batch_metrics
from service.worker.batch_metrics import BatchMetrics
from tests.service.registry import samples


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
    written = samples(registry, "")
    assert not any(value for (name, _), value in written.items() if name.endswith(("_total", "_count")))
    due_in = held.due_in()
    assert due_in is not None and 0 < due_in <= batch_metrics.FLUSH_INTERVAL_S  # held, not yet due
    held.flush()
    got = samples(registry, "")
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
    assert samples(registry, "")[("images_total", "")] == 4
    monkeypatch.setattr(batch_metrics, "FLUSH_INTERVAL_S", 0.0)
    assert held.due_in() is None  # nothing held
    held.add(np.array([0.001]), 0.001, _one_hot([5], 0.9))
    assert held.due_in() == 0.0
