"""benchmarks/overload.py overloads the real server with wrk and reports goodput, RSS and probe latency."""

from __future__ import annotations

import re
import shutil

import pytest

from .scripts import run_benchmark


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs Debian's wrk (.ci/run installs it)")
def test_each_scenario_reports_goodput_memory_and_probes() -> None:
    output = run_benchmark("overload.py", "--seconds", "3", "--baseline-seconds", "2", timeout=300)
    for scenario in ("deadline", "retry-storm"):
        assert re.search(rf"^{scenario}: ", output, re.MULTILINE), output
    goodputs = re.findall(r"under overload ([\d,]+) 2xx/s = ([\d.]+)x", output)
    assert len(goodputs) == 2 and all(int(rate.replace(",", "")) > 0 for rate, _ in goodputs), output
    probes = re.findall(r"/v2/health/ready \d+ ms \((\d+)\), /metrics \d+ ms \((\d+)\), failed (\d+)", output)
    assert len(probes) == 2, output
    for ready_count, metrics_count, failed in probes:  # every probe answered; latency is the report's
        assert int(ready_count) > 0 and int(metrics_count) > 0 and failed == "0", output
