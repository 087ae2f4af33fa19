"""Backpressure: well past capacity the server sheds load with 503 + Retry-After, answers every
admitted request in bounded time, and does not grow. MNIST_LOAD_SECONDS=60 for the full run."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from training.data import MnistArrays

from .harness import start_server
from .load import run_load

SECONDS = float(os.environ.get("MNIST_LOAD_SECONDS", "10"))


def _tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def test_twice_the_capacity_is_shed_not_queued(tmp_path: Path, mnist: MnistArrays) -> None:
    running = start_server(tmp_path, "--queue-limit", "16", "--batch-timeout", "0.002")
    try:
        # 32 images per request: single-image requests are answered faster than this Python load
        # generator, sharing the same 2 cores, can offer twice their rate.
        body = {"pixels": mnist.test_images[:32].numpy().tolist()}
        run_load(running.port, body, clients=8, seconds=2)  # warm-up
        capacity = run_load(running.port, body, clients=8, seconds=3)
        assert set(capacity.statuses) == {200}, capacity.statuses
        rss_before = _tree_rss(running.process.pid)

        target = 2 * capacity.ok_per_second
        overload = run_load(running.port, body, clients=48, seconds=SECONDS, rate=target)
        offered = overload.total / overload.seconds
        rss_after = _tree_rss(running.process.pid)
        print(
            f"capacity {capacity.ok_per_second:.0f} req/s; offered {offered:.0f} req/s; "
            f"answered {overload.ok_per_second:.0f} req/s; statuses {overload.statuses}; "
            f"p99 of 200s {overload.p99_ok() * 1000:.0f} ms; RSS {rss_before >> 20} -> {rss_after >> 20} MiB"
        )
        # Clients asking again at once after a 503 are answered no sooner than its Retry-After, so the
        # paced clients cannot keep offering twice the capacity; the 503s show the server was overloaded.
        assert set(overload.statuses) <= {200, 503}, overload.statuses  # no 5xx, no dropped connection
        assert overload.statuses.get(503, 0) > 0 and overload.retry_after == {"1"}
        # Work still flows. The load generator shares the 2 cores, so not all of the capacity is left.
        assert overload.ok_per_second >= 0.5 * capacity.ok_per_second
        assert overload.p99_ok() < 1.0  # admitted requests wait behind at most 16 others
        assert rss_after < rss_before * 1.15
        assert running.request("GET", "/v2/health/ready").status == 200
    finally:
        assert running.stop() == 0, running.log()
