"""observe_many must leave a histogram exactly as observe() for each value would, in both value modes;
process metrics are labelled by slot, never by pid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from service.metrics import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS,
    forget_dead_processes,
    observe_many,
    prepare_directory,
)
from service.process_metrics import HELPERS, ProcessTreeCollector, name_process
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


def _process_cpu(registry: CollectorRegistry) -> dict[str, float]:
    return {
        sample.labels["process"]: sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "mnist_process_cpu_seconds_total"
    }


def test_processes_are_labelled_by_slot_and_unnamed_children_summed(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    children = [subprocess.Popen(sleeper) for _ in range(3)]
    try:
        name_process(tmp_path, children[0].pid, "worker-0")
        registry = CollectorRegistry()
        registry.register(ProcessTreeCollector(os.getpid(), tmp_path))
        assert set(_process_cpu(registry)) == {"main", "worker-0", HELPERS}
        (cpu,) = [metric for metric in registry.collect() if metric.name == "mnist_process_cpu_seconds"]
        assert cpu.type == "counter"
        # The named slot outlives its process: the dead one's name is forgotten, a replacement takes it.
        children[0].kill()
        children[0].wait()
        forget_dead_processes(tmp_path)
        assert not list(tmp_path.glob(f"*{children[0].pid}"))
        name_process(tmp_path, children[1].pid, "worker-0")
        assert set(_process_cpu(registry)) == {"main", "worker-0", HELPERS}
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_a_restarted_server_forgets_the_previous_ones_process_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # restored after the test, as is:
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    name_process(tmp_path, 2**22 + 1, "worker-0")  # a --metrics-dir kept from an earlier run
    prepare_directory(tmp_path)
    assert list(tmp_path.iterdir()) == []
