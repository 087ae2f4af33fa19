"""benchmarks/worker_cpu.py runs the real worker loop in a process and reports its CPU per job."""

from __future__ import annotations

import re

from .scripts import run_benchmark


def test_the_worker_loop_answers_every_job_and_is_measured() -> None:
    # Enough rounds for the worker's CPU time to pass the kernel's 10 ms accounting tick; a lost answer
    # would leave the script waiting for it until the timeout.
    arguments = ("--runs", "2", "--rounds", "400", "--max-batch-size", "4")
    output = run_benchmark("worker_cpu.py", *arguments, timeout=120)
    measured = re.search(r"^worker loop\s+([\d.]+) µs CPU per job", output, re.MULTILINE)
    assert measured is not None, output
    assert 0 < float(measured.group(1)) < 100_000
