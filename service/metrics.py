"""Prometheus metrics, correct across LitServe's processes (prometheus_client multiprocess mode).

``prepare_directory`` sets ``PROMETHEUS_MULTIPROC_DIR`` in the main process before any metric
exists; spawned and forked children inherit it. Metric objects are created once per process by
``Metrics()``; ``render`` merges every process's files and adds process metrics for the whole
server tree (``service.process_metrics``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from service.process_metrics import PROCESS_NAME_PREFIX, ProcessTreeCollector, forget_dead_process_names

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
IN_FLIGHT_HELP = "Requests admitted and not yet answered."
SMALL_BATCH = 4  # observe_many: up to this many values, one observe() each is cheaper
PID_FILE = re.compile(r"_(\d+)\.db$")
# API servers hold request metrics in memory for up to this long (service.http.asgi.RequestMetrics); a
# scrape waits long enough for every API server to have written what it answered before the scrape.
REQUEST_METRICS_INTERVAL_S = 0.05
REQUEST_METRICS_SCRAPE_WAIT_S = 0.1  # the interval, and slack for a busy event loop
REJECTION_REASONS = (
    "bad_request",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "too_large",
    "unsupported_media_type",
    "invalid_input",
    "client_timeout",
    "overloaded",
    "timeout",
    "worker_failed",
    "unavailable",
)


def prepare_directory(requested: Path | None) -> Path:
    """Create (or empty) the multiprocess folder and point prometheus_client at it."""
    folder = Path(requested) if requested else Path(tempfile.mkdtemp(prefix="mnist-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("*.db"), *folder.glob(f"{PROCESS_NAME_PREFIX}*")]:
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    # prometheus_client picks its value class when first imported; choose again now that the folder is set.
    values.ValueClass = values.get_value_class()
    return folder


def remove_directory(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


class Metrics:
    """All of the service's metrics. Create one per process, after ``prepare_directory``."""

    def __init__(self) -> None:
        self.requests = Counter(
            "mnist_requests", "HTTP requests by route, method and status code.", ["route", "method", "code"]
        )
        self.request_latency = Histogram(
            "mnist_request_duration_seconds", "HTTP request latency.", ["route"], buckets=LATENCY_BUCKETS
        )
        self.rejected = Counter("mnist_rejected_requests", "Requests refused, by reason.", ["reason"])
        self.queue_wait = Histogram(
            "mnist_queue_wait_seconds",
            "Time from admission to the start of its batch.",
            buckets=LATENCY_BUCKETS,
        )
        self.inference = Histogram(
            "mnist_inference_seconds", "Backend time per batch.", buckets=LATENCY_BUCKETS
        )
        self.batch_requests = Histogram(
            "mnist_batch_requests", "Requests combined in one batch.", buckets=BATCH_BUCKETS
        )
        self.batch_images = Histogram("mnist_batch_images", "Images in one batch.", buckets=BATCH_BUCKETS)
        self.images = Counter("mnist_images", "Images classified.")
        self.predictions = Counter("mnist_predictions", "Predictions by predicted digit.", ["digit"])
        self.confidence = Histogram(
            "mnist_prediction_confidence", "Probability of the predicted digit.", buckets=CONFIDENCE_BUCKETS
        )
        self.low_confidence = Counter(
            "mnist_low_confidence_predictions",
            "Predictions below the low-confidence threshold (likely not a digit).",
        )
        self.model_info = Gauge(
            "mnist_model_info",
            "The model each inference worker serves (value 1).",
            ["name", "version", "backend", "device", "provider"],
            multiprocess_mode="livemax",
        )
        # No version label: a labelled series would appear at 1 with the first refusal, which increase()
        # and rate() cannot see (they need an earlier sample); the log names the version.
        self.reload_failures = Counter(
            "mnist_model_reload_failures",
            "Newer model versions a worker refused to switch to (checksum, contract or load).",
        )
        # Series exist from the start, at 0, so that rate() and alerts see the first rejection too.
        for reason in REJECTION_REASONS:
            self.rejected.labels(reason)
        self.predicted_digits = [self.predictions.labels(str(digit)) for digit in range(10)]
        self.gpu_memory = Gauge(
            "mnist_gpu_memory_used_bytes",
            "GPU memory in use on the worker's device.",
            ["device"],
            multiprocess_mode="livemax",
        )


def observe_many(histogram: Histogram, amounts: np.ndarray) -> None:
    """``histogram.observe(a)`` for every ``a`` in ``amounts``, as one write per bucket touched.

    In multiprocess mode each observe() is two locked writes to a memory-mapped file; a worker
    observing every image of a batch spent more time there than in half its model calls. This uses
    prometheus_client's Histogram internals (pinned below 1.0); tests/service/test_metrics.py checks the
    result against observe() itself.
    """
    if len(amounts) <= SMALL_BATCH:  # numpy's fixed cost is more than a few observe() calls
        for amount in np.asarray(amounts, dtype=np.float64).tolist():
            histogram.observe(amount)
        return
    bounds = histogram._upper_bounds  # ascending, ends with +Inf: searchsorted finds observe()'s bucket
    buckets = np.searchsorted(bounds, amounts, side="left")
    counts = np.bincount(buckets[buckets < len(bounds)], minlength=len(bounds))
    histogram._sum.inc(float(np.sum(amounts)))
    for index in np.flatnonzero(counts).tolist():
        histogram._buckets[index].inc(int(counts[index]))


def forget_dead_processes(folder: Path) -> None:
    """Drop live-gauge files and names of processes that are gone (a restarted worker, an exited server)."""
    pids = {int(m.group(1)) for path in folder.glob("gauge_live*.db") if (m := PID_FILE.search(path.name))}
    for pid in pids:
        if not psutil.pid_exists(pid):
            multiprocess.mark_process_dead(pid, str(folder))
    forget_dead_process_names(folder)


@dataclass(frozen=True)
class ServerState:
    """Gauges read from state the processes share when a scrape is answered: a gauge updated per
    request would cost two locked file writes per request (service.http.routes)."""

    in_flight: int  # requests admitted and not yet answered, from the shared admission slots
    api_servers: int  # API-server processes serving
    workers_ready: int  # inference workers with their model loaded

    def collect(self) -> Iterable[Metric]:
        return [
            GaugeMetricFamily("mnist_in_flight_requests", IN_FLIGHT_HELP, value=self.in_flight),
            GaugeMetricFamily("mnist_api_servers", "API-server processes serving.", value=self.api_servers),
            GaugeMetricFamily(
                "mnist_inference_workers_ready",
                "Inference workers with their model loaded (below --workers: degraded).",
                value=self.workers_ready,
            ),
        ]


def render(folder: Path, root_pid: int, state: ServerState) -> bytes:
    forget_dead_processes(folder)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    registry.register(ProcessTreeCollector(root_pid, folder))
    registry.register(state)
    return generate_latest(registry)
