"""benchmarks/api_cpu.py drives the real direct HTTP path in process and reports CPU per request."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "api_cpu.py"


def test_every_single_image_body_is_answered_and_measured() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "2", "--rounds", "5", "--connections", "4"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,  # the script exits non-zero if any request is not answered 200
    )
    measured = dict(re.findall(r"^(\S+)\s+([\d.]+) µs CPU per request", result.stdout, re.MULTILINE))
    assert set(measured) == {"json-pixels", "png-upload", "v2-json", "v2-binary"}
    assert all(0 < float(value) < 100_000 for value in measured.values())
