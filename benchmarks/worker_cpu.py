"""CPU per job in an inference worker's loop, without the model: what batching around the model costs.

Starts the real worker loop (service.worker.loop.SocketLoop) in a forked process with a model that
answers at once, and plays two API servers over real Unix sockets: each round, every connection sends
``--frames`` request frames of ``--jobs-per-frame`` single-image jobs in one write (as API servers
under load do, one frame per event-loop turn) and reads all of the answers. What the worker process
spends per job is the loop's own cost: reading and splitting frames, building batches, the deadline
check, answer frames, sending. The model's time comes on top (``benchmarks/serving.py`` measures
the raw backend).

    .venv/bin/python benchmarks/worker_cpu.py
    .venv/bin/python benchmarks/worker_cpu.py --jobs-per-frame 1 --frames 32
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.ipc import frames  # noqa: E402
from service.ipc.sockets import worker_sockets  # noqa: E402
from service.worker.loop import SocketLoop  # noqa: E402

API_SERVERS = 2


class InstantModel:
    """Answers every image at once; holds no metrics."""

    def predict(
        self, pixels: np.ndarray, admitted_at: np.ndarray, images_per_job: np.ndarray
    ) -> tuple[np.ndarray, str]:
        return np.full((len(pixels), frames.CLASSES), 0.1, np.float32), "1"

    def metrics_due_in(self) -> float | None:
        return None

    def flush_metrics(self, force: bool) -> None:
        pass


def measure(folder: Path, jobs_per_frame: int, frame_count: int, rounds: int, max_jobs: int) -> float:
    """CPU seconds the worker process spends per job over ``rounds`` rounds."""
    loop = SocketLoop(folder, max_jobs=max_jobs, batch_timeout=0.0, request_timeout=30.0)
    worker = multiprocessing.get_context("fork").Process(
        target=loop.serve, args=(InstantModel(), 0), daemon=True
    )
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not worker_sockets(folder) and time.monotonic() < deadline:
            time.sleep(0.01)
        connections = []
        for _ in range(API_SERVERS):
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.connect(str(worker_sockets(folder)[0]))
            connections.append(connection)
        image = np.zeros((1, 1, 28, 28), np.uint8)
        ids = itertools.count(1)

        def frame() -> bytes:
            jobs = range(jobs_per_frame)
            return frames.encode_request(
                [next(ids) for _ in jobs], [image for _ in jobs], [time.monotonic()] * jobs_per_frame
            )

        def one_round() -> None:
            for connection in connections:
                connection.sendall(b"".join(frame() for _ in range(frame_count)))
            for connection in connections:
                answered, buffer = 0, bytearray()
                while answered < frame_count * jobs_per_frame:
                    buffer += connection.recv(1 << 20)
                    answered += sum(len(frames.decode_answer(p).entries) for p in frames.split_frames(buffer))

        for _ in range(20):  # warm-up
            one_round()
        process = psutil.Process(worker.pid)
        before = sum(process.cpu_times()[:2])
        for _ in range(rounds):
            one_round()
        spent = sum(process.cpu_times()[:2]) - before
        for connection in connections:
            connection.close()
        return spent / (rounds * API_SERVERS * frame_count * jobs_per_frame)
    finally:
        worker.kill()
        worker.join()
        for path in folder.iterdir():
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs-per-frame", type=int, default=2)
    parser.add_argument("--frames", type=int, default=6, help="frames per connection and round")
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5, help="the median of this many measurements")
    parser.add_argument("--max-batch-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wcpu-") as folder:  # short: socket paths are limited
        per_job = [
            measure(Path(folder), args.jobs_per_frame, args.frames, args.rounds, args.max_batch_size)
            for _ in range(args.runs)
        ]
    print(
        f"worker loop {statistics.median(per_job) * 1e6:6.1f} µs CPU per job "
        f"({API_SERVERS} connections x {args.frames} frames x {args.jobs_per_frame} jobs per round; "
        f"median of {args.runs}: {', '.join(f'{p * 1e6:.1f}' for p in per_job)})"
    )


if __name__ == "__main__":
    main()
