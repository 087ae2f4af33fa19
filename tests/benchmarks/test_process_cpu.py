"""benchmarks/process_cpu.py starts the real server, drives it with wrk and splits the CPU per process."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "process_cpu.py"


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs Debian's wrk (.ci/run installs it)")
def test_each_busy_process_gets_its_cpu_per_request() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "1", "--seconds", "3", "--concurrency", "8"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rate = re.search(r"^v2-json c=8: ([\d,]+) req/s", result.stdout, re.MULTILINE)
    assert rate is not None and int(rate.group(1).replace(",", "")) > 0, result.stdout
    lines = re.findall(
        r"^  (.+?)\s+pid\s+\d+\s+[\d.]+ cores\s+([\d.]+) µs per request", result.stdout, re.MULTILINE
    )
    cost = {label.strip(): float(value) for label, value in lines}
    assert {"worker", "API server / manager", "wrk"} <= cost.keys(), result.stdout
    assert all(value > 0 for value in cost.values())
