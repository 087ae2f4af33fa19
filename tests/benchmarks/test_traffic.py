"""The benchmarks' shared helpers: how they start mnist-serve, and what they say when it fails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks import traffic


def test_the_server_runs_as_a_module_where_the_console_script_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert traffic.mnist_serve_command(8000)[0] == str(Path(sys.executable).parent / "mnist-serve")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))  # a bare interpreter, no scripts
    command = traffic.mnist_serve_command(8000, "--workers", "2")
    assert command[:3] == [str(tmp_path / "python3"), "-m", "service"]
    assert command[command.index("--port") + 1] == "8000"
    assert command[-2:] == ["--workers", "2"]


def test_a_server_that_cannot_start_is_reported_with_what_it_said() -> None:
    port = traffic.free_port()
    command = [sys.executable, "-m", "service", "--port", str(port), "--backend", "nope"]
    with pytest.raises(RuntimeError, match="unknown backend 'nope'"):
        traffic.start(command, port)
