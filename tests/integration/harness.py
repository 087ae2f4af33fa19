"""Start the real `mnist-serve` process on a free port and talk HTTP to it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from service.model.repository import available_versions

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
# What a server started on the committed repository serves (--model-version latest).
DEFAULT_VERSION = str(available_versions(ROOT / "models" / "mnist")[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Scrape:
    """One ``GET /metrics`` answer, read the way Prometheus reads it."""

    text: str

    def value(self, sample: str) -> float:
        """The value of one sample, written as in the text (``name`` or ``name{label="value",...}``);
        0 when the series does not exist yet."""
        match = re.search(rf"^{re.escape(sample)} (\S+)$", self.text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def has(self, name: str) -> bool:
        return re.search(rf"^{re.escape(name)}[{{ ]", self.text, re.MULTILINE) is not None

    def label_values(self, name: str, label: str) -> set[str]:
        """The values ``label`` takes on the samples of ``name``."""
        pattern = rf'^{re.escape(name)}\{{(?:[^}}]*,)?{re.escape(label)}="([^"]*)"'
        return set(re.findall(pattern, self.text, re.MULTILINE))

    def buckets(self, name: str) -> dict[float, float]:
        """A histogram's cumulative counts by upper bound (``le``)."""
        pattern = rf'^{re.escape(name)}_bucket\{{(?:[^}}]*,)?le="([^"]+)"[^}}]*\}} (\S+)$'
        return {float(le): float(count) for le, count in re.findall(pattern, self.text, re.MULTILINE)}


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    children: list[int] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def post_json(self, path: str, payload: Any, headers: dict[str, str] | None = None) -> Reply:
        return self.request(
            "POST",
            path,
            json.dumps(payload).encode(),
            {"content-type": "application/json", **(headers or {})},
        )

    def scrape(self) -> Scrape:
        reply = self.request("GET", "/metrics")
        assert reply.status == 200, reply.body
        return Scrape(reply.body.decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in [*self.children, self.process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise

    def stop_leaving_nothing(self) -> None:
        """SIGTERM: exit code 0 and no process of its tree left, replacements it started included."""
        with contextlib.suppress(psutil.NoSuchProcess):
            self.children = [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]
        code = self.stop()
        assert code == 0, self.log()
        assert self.alive_children() == []

    def alive_children(self, grace_s: float = 10.0) -> list[int]:
        """Children of the server still running after ``grace_s`` (helpers such as multiprocessing's
        resource tracker exit a moment after the main process; an orphan stays forever)."""
        deadline = time.monotonic() + grace_s
        while True:
            alive = [pid for pid in self.children if _running(pid)]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_server(
    tmp: Path, *args: str, env: dict[str, str] | None = None, ready_timeout: float = 120
) -> RunningServer:
    port = free_port()
    log_path = tmp / f"server-{port}.log"
    command = [
        str(BIN / "mnist-serve"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-repository",
        str(ROOT / "models"),
        "--log-level",
        "warning",
        *args,
    ]
    with log_path.open("wb") as log:
        # Its own session and process group, so tests can signal the group as `timeout` or systemd do.
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    server = RunningServer(process, port, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mnist-serve exited with {process.returncode}:\n{server.log()}")
        try:
            if server.request("GET", "/v2/health/ready", timeout=2).status == 200:
                server.children = [c.pid for c in psutil.Process(process.pid).children(recursive=True)]
                return server
        except OSError:
            pass
        time.sleep(0.3)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"mnist-serve was not ready within {ready_timeout} s:\n{server.log()}")
