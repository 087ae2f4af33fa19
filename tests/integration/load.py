"""A small HTTP load generator: N threads, each on its own keep-alive connection, either as fast as
answers come (closed loop) or paced to a total rate (open loop, bounded by N in flight)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    seconds: float
    statuses: dict[int | str, int] = field(default_factory=dict)
    latencies_ok: list[float] = field(default_factory=list)
    retry_after: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok_per_second(self) -> float:
        return self.statuses.get(200, 0) / self.seconds

    def p99_ok(self) -> float:
        ordered = sorted(self.latencies_ok)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("inf")


def run_load(port: int, body: dict, clients: int, seconds: float, rate: float | None = None) -> LoadResult:
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    result = LoadResult(seconds)
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds
    gap = clients / rate if rate else 0.0  # each thread's share of the schedule

    def client(offset: float) -> None:
        next_at = start + offset
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        local: dict[int | str, int] = {}
        latencies: list[float] = []
        retry_after: set[str] = set()
        while time.monotonic() < deadline:
            if gap:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += gap
            started = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=payload, headers=headers)
                response = connection.getresponse()
                response.read()
                status: int | str = response.status
                if status == 503:
                    retry_after.add(response.getheader("retry-after") or "missing")
                if response.getheader("connection") == "close":
                    connection.close()
            except OSError as error:
                status = type(error).__name__
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if status == 200:
                latencies.append(time.perf_counter() - started)
            local[status] = local.get(status, 0) + 1
        connection.close()
        with lock:
            for key, count in local.items():
                result.statuses[key] = result.statuses.get(key, 0) + count
            result.latencies_ok.extend(latencies)
            result.retry_after |= retry_after

    threads = [threading.Thread(target=client, args=(i * gap / clients,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result
