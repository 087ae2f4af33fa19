"""benchmarks/worker_cpu.py runs the real worker loop in a process and reports its CPU per job."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "worker_cpu.py"


def test_the_worker_loop_answers_every_job_and_is_measured() -> None:
    result = subprocess.run(
        # Enough rounds for the worker's CPU time to pass the kernel's 10 ms accounting tick.
        [sys.executable, str(SCRIPT), "--runs", "2", "--rounds", "400", "--max-batch-size", "4"],
        capture_output=True,
        text=True,
        timeout=120,  # a lost answer would leave the script waiting for it
        check=True,
    )
    measured = re.search(r"^worker loop\s+([\d.]+) µs CPU per job", result.stdout, re.MULTILINE)
    assert measured is not None, result.stdout
    assert 0 < float(measured.group(1)) < 100_000
