"""benchmarks/api_cpu.py drives the real direct HTTP path in process and reports CPU per request."""

from __future__ import annotations

import re

from .scripts import run_benchmark


def test_every_single_image_body_is_answered_and_measured() -> None:
    # The script exits non-zero if any request is not answered 200.
    output = run_benchmark("api_cpu.py", "--runs", "2", "--rounds", "5", "--connections", "4", timeout=300)
    measured = dict(re.findall(r"^(\S+)\s+([\d.]+) µs CPU per request", output, re.MULTILINE))
    assert set(measured) == {"json-pixels", "png-upload", "v2-json", "v2-binary"}
    assert all(0 < float(value) < 100_000 for value in measured.values())
