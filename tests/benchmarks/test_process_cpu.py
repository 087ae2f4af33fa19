"""benchmarks/process_cpu.py starts the real server, drives it with wrk and splits the CPU per process."""

from __future__ import annotations

import re
import shutil

import pytest

from .scripts import run_benchmark


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs Debian's wrk (.ci/run installs it)")
def test_each_busy_process_gets_its_cpu_per_request() -> None:
    output = run_benchmark(
        "process_cpu.py", "--rounds", "1", "--seconds", "3", "--concurrency", "8", timeout=300
    )
    rate = re.search(r"^v2-json c=8: ([\d,]+) req/s", output, re.MULTILINE)
    assert rate is not None and int(rate.group(1).replace(",", "")) > 0, output
    lines = re.findall(r"^  (.+?)\s+pid\s+\d+\s+[\d.]+ cores\s+([\d.]+) µs per request", output, re.MULTILINE)
    cost = {label.strip(): float(value) for label, value in lines}
    assert {"worker", "API server / manager", "wrk"} <= cost.keys(), output
    assert all(value > 0 for value in cost.values())
