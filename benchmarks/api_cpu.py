"""CPU per request inside one API server, without the network, the worker or the other processes.

Drives the real HTTP protocol of mnist-serve (service.http.direct, with a real InferenceHandler and
RequestMetrics, Prometheus in multiprocess mode) on one event loop: many connections each send
one request per round over in-memory transports; the worker's side of the Unix socket is played in
process (each request frame is answered in the next loop turn with fixed probabilities), on uvloop.
What remains is exactly the API server's own work per request: HTTP parsing, checks, decoding, the
job frames, the answer frames, the response and the metrics. On a shared machine this is steadier
than a wrk run, and ``--profile`` says where the time goes.

    .venv/bin/python benchmarks/api_cpu.py                    # every single-image body, 64 connections
    .venv/bin/python benchmarks/api_cpu.py --bodies v2-binary --profile 25
    .venv/bin/python benchmarks/api_cpu.py --bodies v2-binary,v2-json-64-images --refused

``--refused`` also measures each body refused at admission with a 503 (every queue slot taken), next to
its answered CPU: what shedding costs against what it protects. The 503s are measured without the
Retry-After hold (``service.http.direct.RETRY_AFTER_S``), which only delays their write.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="mnist-api-cpu-"))

from uvicorn.config import Config  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from benchmarks.traffic import Body, bodies, mnist_test_images, v2_json_body  # noqa: E402
from service.http import direct  # noqa: E402
from service.http.admission import Admission  # noqa: E402
from service.http.bodies import Limits  # noqa: E402
from service.http.connection_limits import ConnectionLimits  # noqa: E402
from service.http.direct import DirectHttpProtocol  # noqa: E402
from service.http.inference import InferenceConfig, InferenceHandler  # noqa: E402
from service.http.request_metrics import RequestMetrics  # noqa: E402
from service.http.served_model import ServedModel  # noqa: E402
from service.ipc import frames  # noqa: E402
from service.ipc.client import WorkerConnection  # noqa: E402
from service.model.repository import resolve  # noqa: E402

SINGLE_IMAGE_BODIES = "json-pixels,png-upload,v2-json,v2-binary"


class MemoryTransport(asyncio.Transport):
    """What the protocol writes is kept; nothing is ever sent."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class InstantWorker(MemoryTransport):
    """The worker's end of the Unix socket: answers every request frame in the next loop turn."""

    def __init__(self, connection: WorkerConnection, version: str) -> None:
        super().__init__()
        self.connection = connection
        self.version = version
        self.probabilities = np.full((1, frames.CLASSES), 0.1, np.float32)

    def write(self, data: Any) -> None:
        _, entry_bytes, pixel_bytes = frames.request_parts(memoryview(bytes(data))[frames.LENGTH.size :])
        frame = frames.read_requests(entry_bytes, pixel_bytes)
        entries = np.zeros(len(frame.entries), frames.ANSWER_ENTRY)
        entries["id"], entries["images"] = frame.entries["id"], frame.entries["images"]
        rows = np.repeat(self.probabilities, len(frame.pixels), axis=0)
        answer = frames.encode_answer(entries, self.version, rows)
        asyncio.get_running_loop().call_soon(self.connection.data_received, answer)


def build(socket_dir: Path) -> tuple[Any, InferenceHandler]:
    """The protocol factory uvicorn would get (``http=``) and its handler."""
    model = resolve(ROOT / "models", "mnist", "latest", "onnx")
    runtime_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    handler = InferenceHandler(
        InferenceConfig(
            limits=Limits(max_images=256, max_pixels=25_000_000),
            api_servers=1,
            queue_limit=10_000,
            request_timeout=30.0,
            api_key=None,
            socket_dir=socket_dir,
            max_body_bytes=10_000_000,
        ),
        ServedModel(model, "onnx", runtime_dir),
        RequestMetrics(),
    )
    return functools.partial(DirectHttpProtocol, handler=handler, limits=ConnectionLimits()), handler


class Bench:
    """One API server's protocol, handler and metrics (Prometheus allows one set per process), with
    the worker played in process."""

    def __init__(self, socket_dir: Path) -> None:
        self.protocol_class, self.handler = build(socket_dir)
        self.pool = self.handler.workers
        worker = WorkerConnection(self.pool, socket_dir / "worker.sock")
        worker.connection_made(InstantWorker(worker, self.handler.model.model.version))
        self.pool.connections[worker.path] = worker
        self.config = Config(
            app=lambda *_: None, http=self.protocol_class, log_level="warning", access_log=False
        )
        self.config.load()
        self.state = ServerState()

    async def measure(
        self, body: Body, connections: int, rounds: int, profile: cProfile.Profile | None, status: int = 200
    ) -> float:
        """CPU seconds per request over ``rounds`` rounds of one request on each connection, each
        answered with ``status``."""
        self.pool._scanner = asyncio.get_running_loop().create_future()  # no scans: the worker is here
        clients = []
        for _ in range(connections):
            client = self.protocol_class(config=self.config, server_state=self.state, app_state={})
            client.connection_made(MemoryTransport())
            clients.append(client)
        headers = "".join(f"{name}: {value}\r\n" for name, value in body.headers.items())
        request = (
            f"POST {body.path} HTTP/1.1\r\nHost: bench\r\n{headers}Content-Length: {len(body.data)}\r\n\r\n"
        ).encode() + body.data

        expected = b"HTTP/1.1 %d" % status

        async def one_round() -> None:
            for client in clients:
                client.data_received(request)
            while any(len(client.transport.written) == 0 for client in clients):
                await asyncio.sleep(0)
            for client in clients:
                if not client.transport.written[0].startswith(expected):
                    raise SystemExit(f"{body.name}: {client.transport.written[0][:300]!r}")
                client.transport.written.clear()

        for _ in range(20):  # warm-up: caches, label sets, first frames
            await one_round()
        if profile is not None:
            profile.enable()
        started = time.process_time()
        for _ in range(rounds):
            await one_round()
        spent = time.process_time() - started
        if profile is not None:
            profile.disable()
        for client in clients:
            client.connection_lost(None)
        return spent / (rounds * connections)

    async def measure_refused(self, body: Body, args: argparse.Namespace) -> float:
        """``measure`` with every queue slot taken, so each request is refused at admission."""
        handler, hold = self.handler, direct.RETRY_AFTER_S
        slots, handler.admission = handler.admission, Admission(queue_limit=0, api_servers=1)
        handler.admission.claim()
        direct.RETRY_AFTER_S = 0.0
        try:
            return await self.measure(body, args.connections, args.rounds, None, status=503)
        finally:
            handler.admission, direct.RETRY_AFTER_S = slots, hold


async def run(args: argparse.Namespace) -> None:
    images = mnist_test_images()
    chosen = [b for b in [*bodies(images), v2_json_body(images, 64)] if b.name in args.bodies.split(",")]
    with tempfile.TemporaryDirectory() as socket_dir:
        bench = Bench(Path(socket_dir))
        for body in chosen:
            profile = cProfile.Profile() if args.profile else None
            per_request = [
                await bench.measure(body, args.connections, args.rounds, profile if run == 0 else None)
                for run in range(args.runs)
            ]
            print(
                f"{body.name:<17} {statistics.median(per_request) * 1e6:7.1f} µs CPU per request "
                f"(median of {args.runs}: {', '.join(f'{p * 1e6:.1f}' for p in per_request)})"
            )
            if profile is not None:
                pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)
            if args.refused:
                answered = statistics.median(per_request)
                refused = statistics.median(
                    [await bench.measure_refused(body, args) for _ in range(args.runs)]
                )
                print(
                    f"{'':<17} {refused * 1e6:7.1f} µs CPU per 503 at admission = {refused / answered:.2f}x "
                    "an answered request's"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", default=SINGLE_IMAGE_BODIES)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5, help="the median of this many measurements")
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest functions (cProfile)")
    parser.add_argument("--refused", action="store_true", help="also measure each body refused with a 503")
    uvloop.run(run(parser.parse_args()))  # the event loop mnist-serve's API servers run on


if __name__ == "__main__":
    main()
