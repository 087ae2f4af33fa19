"""Overload: goodput, memory and probe latency when clients ask far more than the server can do.

Each scenario runs against a fresh mnist-serve driven by Debian's wrk, after the same body's capacity is
measured on a server with default settings at c = 64 (the baseline). It prints goodput (2xx answers
per second) and its ratio to that capacity, the answers by status, the growth of the server tree's RSS,
and the p99 of /v2/health/ready and /metrics probes sent during the overload:

- ``deadline``: 64-image v2 JSON requests from 512 connections with ``--request-timeout 0.05``;
- ``retry-storm``: single-image v2 binary requests from 1,024 connections that never wait (wrk sends
  the next request as soon as an answer arrives, 503 or not) against ``--queue-limit 32``.

    .venv/bin/python benchmarks/overload.py                     # both, 20 s each
    .venv/bin/python benchmarks/overload.py --scenarios deadline --seconds 60
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.traffic import (  # noqa: E402
    Body,
    bodies,
    free_port,
    mnist_serve_command,
    mnist_test_images,
    run_wrk,
    start,
    stop,
    v2_json_body,
)


@dataclass(frozen=True)
class Scenario:
    name: str
    body: str
    connections: int
    flags: tuple[str, ...]


SCENARIOS = {
    "deadline": Scenario("deadline", "v2-json-64-images", 512, ("--request-timeout", "0.05")),
    "retry-storm": Scenario("retry-storm", "v2-binary", 1024, ("--queue-limit", "32")),
}


def _bodies() -> dict[str, Body]:
    images = mnist_test_images()
    return {body.name: body for body in [*bodies(images), v2_json_body(images, 64)]}


def _tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


class Probes(threading.Thread):
    """Health and metrics requests during the overload, as Kubernetes and Prometheus would send them."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopped = threading.Event()
        self.latency: dict[str, list[float]] = {"/v2/health/ready": [], "/metrics": []}
        self.failures = 0

    def run(self) -> None:
        rounds = 0
        while not self.stopped.is_set():
            for path in ("/v2/health/ready", "/metrics") if rounds % 4 == 0 else ("/v2/health/ready",):
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as answer:
                        answer.read()
                    self.latency[path].append(time.monotonic() - started)
                except OSError:
                    self.failures += 1
            rounds += 1
            self.stopped.wait(0.25)

    def p99_ms(self, path: str) -> float:
        values = sorted(self.latency[path])
        return 1000 * values[min(len(values) - 1, int(0.99 * len(values)))] if values else float("nan")


def _goodput(stats: dict[str, float]) -> float:
    return (stats["requests"] - stats["non2xx"]) / stats["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--baseline-seconds", type=float, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # wrk inherits it: a socket per connection
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    chosen = _bodies()
    for name in args.scenarios.split(","):
        scenario = SCENARIOS[name]
        body = chosen[scenario.body]
        with tempfile.TemporaryDirectory(prefix="mnist-overload-") as scratch:
            body_file = Path(scratch) / "body"
            body_file.write_bytes(body.data)
            port = free_port()
            server = start(mnist_serve_command(port), port)
            try:
                run_wrk(port, body, body_file, 64, 2)  # warm-up
                capacity = _goodput(run_wrk(port, body, body_file, 64, args.baseline_seconds))
            finally:
                stop(server)
            port = free_port()
            server = start(mnist_serve_command(port, *scenario.flags), port)
            try:
                run_wrk(port, body, body_file, 64, 2)
                rss_before = _tree_rss(server.pid)
                probes = Probes(port)
                probes.start()
                stats = run_wrk(port, body, body_file, scenario.connections, args.seconds, threads=4)
                probes.stopped.set()
                probes.join()
                rss_after = _tree_rss(server.pid)
            finally:
                stop(server)
        goodput = _goodput(stats)
        print(
            f"{scenario.name}: {body.name} from {scenario.connections} connections, "
            f"flags {' '.join(scenario.flags)}, {args.seconds:g} s\n"
            f"  capacity (defaults, c = 64) {capacity:,.0f} 2xx/s; under overload {goodput:,.0f} 2xx/s "
            f"= {goodput / capacity:.2f}x; {stats['requests']:,.0f} answers, {stats['non2xx']:,.0f} non-2xx\n"
            f"  server tree RSS {rss_before / 2**20:,.0f} -> {rss_after / 2**20:,.0f} MiB "
            f"({(rss_after - rss_before) / 2**20:+,.0f})\n"
            f"  probes p99: /v2/health/ready {probes.p99_ms('/v2/health/ready'):.0f} ms "
            f"({len(probes.latency['/v2/health/ready'])}), /metrics {probes.p99_ms('/metrics'):.0f} ms "
            f"({len(probes.latency['/metrics'])}), failed {probes.failures}; "
            f"median ready {1000 * statistics.median(probes.latency['/v2/health/ready'] or [0]):.0f} ms"
        )


if __name__ == "__main__":
    main()
