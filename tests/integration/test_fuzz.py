"""schemathesis against the server's own OpenAPI: every route and method, zero 5xx, no worker crash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from .harness import DEFAULT_VERSION, RunningServer

EXAMPLES = os.environ.get("MNIST_FUZZ_EXAMPLES", "40")  # per operation; raise it for a longer campaign


def test_schemathesis_finds_no_server_error(server: RunningServer, tmp_path: Path) -> None:
    children_before = sorted(c.pid for c in psutil.Process(server.process.pid).children(recursive=True))
    config = tmp_path / "schemathesis.toml"
    # The served model's name and version, so generated requests reach inference, not just the 404 path.
    config.write_text(f'[parameters]\n"path.name" = "mnist"\n"path.version" = "{DEFAULT_VERSION}"\n')
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            f"http://127.0.0.1:{server.port}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            EXAMPLES,
            "--seed",
            "20261130",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Server error" not in result.stdout
    tested = [line for line in result.stdout.splitlines() if "generated" in line and "passed" in line]
    assert tested, result.stdout[-2000:]
    # No inference worker died and was replaced while being fuzzed.
    children_after = sorted(c.pid for c in psutil.Process(server.process.pid).children(recursive=True))
    assert children_after == children_before
    assert server.request("GET", "/v2/health/ready").status == 200
