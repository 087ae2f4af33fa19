"""What the benchmarks share: the request bodies clients send, a free port, starting servers, wrk."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "wrk" / "post.lua"


@dataclass(frozen=True)
class Body:
    name: str
    path: str
    data: bytes
    headers: dict[str, str]
    images: int


def file_upload(name: str, content_type: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    """Body and headers of one multipart upload of a file, as curl -F file=@... sends it."""
    boundary = "benchboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def bodies(images: np.ndarray) -> list[Body]:
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, format="PNG")
    multipart, multipart_headers = file_upload("0.png", "image/png", png.getvalue())
    json_type = {"Content-Type": "application/json"}
    return [
        Body("json-pixels", "/predict", json.dumps({"pixels": images[0].tolist()}).encode(), json_type, 1),
        Body(
            "png-upload",
            "/predict",
            multipart,
            multipart_headers,
            1,
        ),
        v2_json_body(images, 1),
        _v2_binary("v2-binary", images[:1]),
        Body(
            "json-64-images", "/predict", json.dumps({"pixels": images[:64].tolist()}).encode(), json_type, 64
        ),
        _v2_binary("v2-binary-64-images", images[:64]),
    ]


def v2_json_body(images: np.ndarray, count: int) -> Body:
    """Open Inference Protocol v2 JSON with ``count`` images: "v2-json", or "v2-json-64-images"."""
    data = images[:count].reshape(-1).tolist()
    spec = {"name": "pixels", "datatype": "UINT8", "shape": [count, 784], "data": data}
    name = "v2-json" if count == 1 else f"v2-json-{count}-images"
    body = json.dumps({"inputs": [spec]}).encode()
    return Body(name, "/v2/models/mnist/infer", body, {"Content-Type": "application/json"}, count)


def _v2_binary(name: str, block: np.ndarray) -> Body:
    """Open Inference Protocol v2 with Triton's binary extension: a JSON header, then raw uint8 pixels."""
    spec = {"name": "pixels", "datatype": "UINT8", "shape": [len(block), 784]}
    header = json.dumps({"inputs": [{**spec, "parameters": {"binary_data_size": block.size}}]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return Body(name, "/v2/models/mnist/infer", header + block.tobytes(), headers, len(block))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mnist_serve_command(port: int, *flags: str) -> list[str]:
    script = Path(sys.executable).parent / "mnist-serve"
    # From a source checkout that is not installed (the GPU machine: benchmarks/gpu/run.sh), the module.
    program = [str(script)] if script.exists() else [sys.executable, "-m", "service"]
    return [
        *program,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *flags,
    ]


def start(
    command: list[str], port: int, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in its own process group and wait until /v2/health/ready answers 200."""
    with tempfile.TemporaryFile() as errors:  # what it said, should it fail to start
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env} if env else None,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/v2/health/ready"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return process
            except OSError:
                time.sleep(0.3)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        errors.seek(0)
        said = errors.read().decode(errors="replace")[-3000:]
    raise RuntimeError(f"{' '.join(command[:3])} did not become ready; it said:\n{said}")


def mnist_test_images() -> np.ndarray:
    """The MNIST test images the request bodies are made from (verified; fetched if missing)."""
    from service.inputs.idx import read_idx
    from training.data import MNIST_SHA256, ensure_mnist, sha256_file

    name = "t10k-images-idx3-ubyte"
    carried = ROOT / "data" / name  # all a benchmark needs, e.g. carried alone to the GPU machine
    if not (carried.is_file() and sha256_file(carried) == MNIST_SHA256[name]):
        carried = ensure_mnist(ROOT / "data") / name
    return np.asarray(read_idx(carried))


def stop(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM the server's process group; return its exit code (None if it had to be killed)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return None


def run_wrk(
    port: int, body: Body, body_file: Path, connections: int, seconds: float, threads: int = 2
) -> dict[str, float]:
    """Drive one prepared body with Debian's wrk; requests, seconds, non2xx, p50_ms, p99_ms and rps."""
    env = {
        **os.environ,
        "BODY_FILE": str(body_file),
        "PATH_URI": body.path,
        "HEADERS": "|".join(f"{k}: {v}" for k, v in body.headers.items()),
    }
    command = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=seconds + 120, check=True
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("{"))
    stats = json.loads(line)
    stats["rps"] = stats["requests"] / stats["seconds"]
    return stats


def batch_totals(port: int) -> tuple[float, float]:
    """mnist-serve's batch counters: (requests batched, batches) so far, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("mnist_batch_requests_sum", "mnist_batch_requests_count"):
            totals[name] = float(value)
    return totals.get("mnist_batch_requests_sum", 0.0), totals.get("mnist_batch_requests_count", 0.0)


@dataclass(frozen=True)
class Target:
    """A running server to drive: its name in the results and its port; ``batches`` (mnist-serve
    only) also reads its mean number of requests per batch from its /metrics."""

    name: str
    port: int
    batches: bool = False


def measure_interleaved(
    targets: list[Target],
    body: Body,
    body_file: Path,
    connections: int,
    runs: int,
    seconds: float,
    threads: int = 2,
) -> dict[str, dict[str, float]]:
    """A 1 s warm-up each, then ``runs`` rounds in which every target gets one wrk run (the order
    reversed every other round), so that the machine's drift, which on shared machines moves absolute
    figures by tens of percent within minutes, falls on all of them alike. Medians per target."""
    for target in targets:
        run_wrk(target.port, body, body_file, connections, 1, threads)
    results: dict[str, list[dict[str, float]]] = {target.name: [] for target in targets}
    for round_ in range(runs):
        for target in targets if round_ % 2 == 0 else targets[::-1]:
            before = batch_totals(target.port) if target.batches else (0.0, 0.0)
            stats = run_wrk(target.port, body, body_file, connections, seconds, threads)
            if target.batches:
                after = batch_totals(target.port)
                stats["batch"] = (after[0] - before[0]) / max(1.0, after[1] - before[1])
            results[target.name].append(stats)
    return {
        name: {
            key: statistics.median(run.get(key, 0.0) for run in measured)
            for key in ("rps", "p50_ms", "p99_ms", "non2xx", "batch")
        }
        for name, measured in results.items()
    }
