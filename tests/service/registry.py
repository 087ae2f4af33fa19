"""Reading a prometheus_client registry in tests."""

from __future__ import annotations

from prometheus_client import CollectorRegistry


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name.startswith(name)
    }
