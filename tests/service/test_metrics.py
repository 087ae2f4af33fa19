"""observe_many must leave a histogram exactly as observe() for each value would, in both value modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from service.metrics import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS,
    observe_many,
)
from tests.service.registry import samples

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
        (n.replace("one_by_one", "at_once"), le): v for (n, le), v in samples(registry, "one_by_one").items()
    }
    got = samples(registry, "at_once")
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
    expected = samples(registry, "mp_one")
    got = samples(registry, "mp_many")
    assert expected and len(got) == len(expected)
    for (name, le), value in expected.items():
        assert got[(name.replace("mp_one", "mp_many"), le)] == pytest.approx(value)
    assert got[("mp_many_count", "")] == 300
