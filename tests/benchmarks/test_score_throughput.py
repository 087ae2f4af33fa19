"""benchmarks/score_throughput.py: mnist-score's rate from the IDX file and a PNG directory, next to the
raw backend's, in one run."""

from __future__ import annotations

import re

from .scripts import run_benchmark


def test_the_script_prints_each_path_s_rate_against_the_raw_backend() -> None:
    output = run_benchmark("score_throughput.py", "--runs", "1", timeout=300)
    for path in ("raw backend", "IDX file", "PNG directory"):
        match = re.search(rf"^{path}\s+([\d,]+)\s+(\d+)%", output, re.MULTILINE)
        assert match is not None, output
        assert int(match.group(1).replace(",", "")) > 0
    assert re.search(r"^raw backend\s+[\d,]+\s+100%", output, re.MULTILINE), output
