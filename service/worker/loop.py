"""The inference worker's loop: read jobs from the API servers' sockets, batch them, answer in one frame.

LitServe 0.2.19 moves each request through a ``multiprocessing.Manager`` queue (a round trip through
the manager process per put and per get, plus a start message per request) and its batching loop polls
that queue. Those hand-offs cost more than batching saved, so this loop (started in each worker by
``service.processes``) replaces them: every worker listens on its own Unix socket, the API
servers connect to it, and each side sends everything it has ready as one frame
(``service.ipc.frames``). Jobs that arrive while a batch is computed form the next batch, so batches
grow with load without any timer.

If a worker dies, its sockets close and the API servers fail its requests at once (no lock or queue
is shared that a killed process could leave broken); LitServe's monitor starts a replacement, which
listens on a new socket the API servers pick up.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import selectors
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from service.ipc import frames
from service.ipc.sockets import socket_path, stale_sockets

log = logging.getLogger(__name__)
READ_CHUNK = 1 << 20
SEND_TIMEOUT_S = 10.0  # an API server that stops reading for this long is dropped, not waited for


@dataclass
class Pending:
    """Jobs read from one API-server connection and not yet answered."""

    connection: socket.socket
    jobs: int = 0
    entries: list[memoryview] = field(default_factory=list)  # each frame's entry bytes
    pixels: list[memoryview] = field(default_factory=list)  # and pixel bytes (frames.request_parts)


@dataclass
class Batch:
    """Up to ``max_jobs`` jobs from any connections, in arrival order."""

    sources: list[tuple[socket.socket, np.ndarray]]  # (connection, REQUEST_ENTRY records of its jobs)
    pixels: np.ndarray


class BatchRunner(Protocol):
    """What the loop needs of the model (``service.worker.runner.ModelRunner``)."""

    def predict(
        self, pixels: np.ndarray, admitted_at: np.ndarray, images_per_job: np.ndarray
    ) -> tuple[np.ndarray, str]: ...

    def metrics_due_in(self) -> float | None: ...

    def flush_metrics(self, force: bool) -> None: ...


class SocketLoop:
    """Serve jobs from Unix sockets, batched, until the process is killed."""

    def __init__(self, socket_dir: Path, max_jobs: int, batch_timeout: float, request_timeout: float) -> None:
        self.socket_dir = socket_dir
        self.max_jobs = max_jobs
        self.batch_timeout = batch_timeout
        self.request_timeout = request_timeout

    def serve(self, runner: BatchRunner, worker_id: int) -> None:
        selector = selectors.DefaultSelector()
        listener = self._listen(worker_id)
        selector.register(listener, selectors.EVENT_READ)
        buffers: dict[socket.socket, bytearray] = {}
        pending: dict[socket.socket, Pending] = {}
        # recv(n) allocates n bytes per call, and above glibc's mmap threshold that is an mmap and page
        # faults each time: one buffer, read into.
        self._scratch = memoryview(bytearray(READ_CHUNK))
        log.info(
            "worker %d listening on %s", os.getpid(), socket_path(self.socket_dir, worker_id, os.getpid())
        )
        flushes: list[socket.socket] = []  # connections that asked for the metrics to be written
        while True:
            # Wait for the next jobs; with metrics held, no longer than until they are due.
            self._read(selector, listener, buffers, pending, flushes, runner.metrics_due_in())
            self._flush_metrics(runner, flushes, selector, buffers)
            if pending and self.batch_timeout > 0 and _job_count(pending) < self.max_jobs:
                deadline = time.monotonic() + self.batch_timeout
                while _job_count(pending) < self.max_jobs and (left := deadline - time.monotonic()) > 0:
                    self._read(selector, listener, buffers, pending, flushes, left)
                    self._flush_metrics(runner, flushes, selector, buffers)  # a scrape does not wait
            for batch in self._batches(pending):
                self._answer(runner, batch, selector, buffers)

    def _flush_metrics(
        self,
        runner: BatchRunner,
        flushes: list[socket.socket],
        selector: selectors.BaseSelector,
        buffers: dict[socket.socket, bytearray],
    ) -> None:
        """Write the held metrics if they are due or an API server asked, then reply to those that did."""
        runner.flush_metrics(force=bool(flushes))
        for connection in flushes:  # written before these replies: the scrape that asked sees them
            self._send_frame(connection, frames.encode_flushed(), selector, buffers)
        flushes.clear()

    def _listen(self, worker_id: int) -> socket.socket:
        """Listen on a fresh socket, published by rename only once it accepts connections."""
        for stale in stale_sockets(self.socket_dir, worker_id):
            stale.unlink(missing_ok=True)
        final = socket_path(self.socket_dir, worker_id, os.getpid())
        staging = final.with_suffix(".staging")
        staging.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(staging))
        listener.listen(256)
        staging.rename(final)
        return listener

    def _read(
        self,
        selector: selectors.BaseSelector,
        listener: socket.socket,
        buffers: dict[socket.socket, bytearray],
        pending: dict[socket.socket, Pending],
        flushes: list[socket.socket],
        timeout: float | None,
    ) -> None:
        for key, _ in selector.select(timeout):
            connection = key.fileobj
            assert isinstance(connection, socket.socket)
            if connection is listener:
                accepted, _ = listener.accept()
                accepted.settimeout(SEND_TIMEOUT_S)
                selector.register(accepted, selectors.EVENT_READ)
                buffers[accepted] = bytearray()
                continue
            try:
                received = connection.recv_into(self._scratch)
            except OSError:
                received = 0
            if not received:  # the API server went away (shutdown or crash): nothing to answer there
                _drop(connection, selector, buffers)
                pending.pop(connection, None)
                continue
            buffer = buffers[connection]
            buffer += self._scratch[:received]
            for payload in frames.split_frames(buffer):
                count, entry_bytes, pixel_bytes = frames.request_parts(payload)
                if not count:
                    flushes.append(connection)
                    continue
                jobs = pending.setdefault(connection, Pending(connection))
                jobs.jobs += count
                jobs.entries.append(entry_bytes)
                jobs.pixels.append(pixel_bytes)

    def _batches(self, pending: dict[socket.socket, Pending]) -> Iterator[Batch]:
        """Everything pending, in arrival order per connection, cut into batches of at most
        ``max_jobs`` jobs (a batch may hold jobs of several connections)."""
        sources: list[tuple[socket.socket, np.ndarray]] = []
        pixels: list[np.ndarray] = []
        jobs = 0
        for connection, waiting in pending.items():
            if len(waiting.entries) == 1:
                frame = frames.read_requests(waiting.entries[0], waiting.pixels[0])
            else:
                frame = frames.read_requests(b"".join(waiting.entries), b"".join(waiting.pixels))
            entries, images = frame.entries, frame.pixels
            starts = _offsets(entries["images"].tolist())
            done = 0
            while done < len(entries):
                take = min(self.max_jobs - jobs, len(entries) - done)
                sources.append((connection, entries[done : done + take]))
                pixels.append(images[starts[done] : starts[done + take]])
                done += take
                jobs += take
                if jobs == self.max_jobs:
                    yield Batch(sources, np.concatenate(pixels))
                    sources, pixels, jobs = [], [], 0
        pending.clear()
        if jobs:
            yield Batch(sources, np.concatenate(pixels))

    def _answer(
        self,
        runner: BatchRunner,
        batch: Batch,
        selector: selectors.BaseSelector,
        buffers: dict[socket.socket, bytearray],
    ) -> None:
        # The per-batch bookkeeping works on small arrays (at most max_jobs entries), where a numpy
        # reduction's fixed cost (3-7 µs) is more than the same in Python over .tolist().
        sources = batch.sources
        entries = sources[0][1] if len(sources) == 1 else np.concatenate([records for _, records in sources])
        answers = np.zeros(len(entries), frames.ANSWER_ENTRY)
        answers["id"] = entries["id"]
        answers["images"] = entries["images"]
        computed: np.ndarray | None = None  # None: every job (the usual case)
        pixels, admitted_at, images = batch.pixels, entries["admitted_at"], entries["images"]
        now = time.monotonic()
        if self.request_timeout and min(admitted_at.tolist()) < now - self.request_timeout:
            computed = now - admitted_at <= self.request_timeout
            answers["status"][~computed] = frames.Status.EXPIRED
            pixels = pixels[np.repeat(computed, images)]
            admitted_at, images = admitted_at[computed], images[computed]
        probabilities = np.zeros((0, frames.CLASSES), np.float32)
        version = ""
        if len(images):
            try:
                probabilities, version = runner.predict(pixels, admitted_at, images)
            except Exception:  # the backend failed this batch: its clients get a 503 and may retry
                log.exception("inference failed for a batch of %d jobs", len(images))
                if computed is None:
                    computed = np.ones(len(entries), bool)
                answers["status"][computed] = frames.Status.FAILED
                computed[:] = False
        self._send(batch, answers, computed, version, probabilities, selector, buffers)

    def _send(
        self,
        batch: Batch,
        answers: np.ndarray,
        computed: np.ndarray | None,
        version: str,
        probabilities: np.ndarray,
        selector: selectors.BaseSelector,
        buffers: dict[socket.socket, bytearray],
    ) -> None:
        """One frame per source, holding its jobs' answers in the order they were read."""
        # Rows of the computed jobs only, in job order: each source's rows are one contiguous slice.
        images = answers["images"] if computed is None else answers["images"] * computed
        image_starts = _offsets(images.tolist())
        job = 0
        for connection, records in batch.sources:
            end = job + len(records)
            rows = probabilities[image_starts[job] : image_starts[end]]
            self._send_frame(
                connection, frames.encode_answer(answers[job:end], version, rows), selector, buffers
            )
            job = end

    def _send_frame(
        self,
        connection: socket.socket,
        frame: bytes,
        selector: selectors.BaseSelector,
        buffers: dict[socket.socket, bytearray],
    ) -> None:
        try:
            connection.sendall(frame)
        except OSError:  # gone or stuck: its requests fail there with a 503 when the socket closes
            _drop(connection, selector, buffers)


def _offsets(counts: list[int]) -> list[int]:
    """Where each job's images start in the concatenated array, plus the end."""
    return list(itertools.accumulate(counts, initial=0))


def _job_count(pending: dict[socket.socket, Pending]) -> int:
    return sum(waiting.jobs for waiting in pending.values())


def _drop(
    connection: socket.socket, selector: selectors.BaseSelector, buffers: dict[socket.socket, Any]
) -> None:
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(connection)
    buffers.pop(connection, None)
    connection.close()
