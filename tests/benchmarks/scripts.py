"""Run a script of benchmarks/ as its users do: a separate Python process, its output as text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_benchmark(script: str, *arguments: str, timeout: float) -> str:
    """stdout of ``benchmarks/<script>``; fails the test if it exits non-zero or runs past ``timeout``."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return result.stdout
