"""benchmarks/scrapers.py measures the inference requests with and without /metrics scrapers."""

from __future__ import annotations

import re
import shutil

import pytest

from .scripts import run_benchmark


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs Debian's wrk (.ci/run installs it)")
def test_runs_with_and_without_scrapers_are_both_measured() -> None:
    output = run_benchmark(
        "scrapers.py", "--runs", "1", "--seconds", "2", "--scrapers", "2", "--concurrency", "8", timeout=300
    )
    run = re.search(r"with 2 scrapers \((\d+) scrapes/s\) ([\d,]+) req/s", output)
    assert run is not None and int(run.group(1)) > 0 and int(run.group(2).replace(",", "")) > 0, output
    assert re.search(r"median of 1: req/s [\d.]+x, p99 [\d.]+ -> [\d.]+ ms", output), output
