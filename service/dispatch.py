"""The API server's side of the hand-off: send validated pixels to a worker, await its answer.

Each API-server process connects to every inference worker's Unix socket (``service.worker_loop``).
Jobs submitted during one turn of the event loop go to a worker as one frame; the worker's answer
frame resolves their futures. A worker that dies closes its socket, and every job it held fails at
once with a 503 the client may retry; replacement workers are picked up by a periodic scan.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import typing
from pathlib import Path
from typing import NamedTuple

import numpy as np

from service import wire
from service.errors import QueueTimeout, Unavailable
from service.worker_loop import worker_sockets

log = logging.getLogger(__name__)
SCAN_INTERVAL_S = 0.5


class Answer(NamedTuple):
    probabilities: np.ndarray  # [n, 10] for one request's n images
    version: str  # the model version that computed them


class WorkerConnection(asyncio.Protocol):
    """One API server's connection to one worker: outgoing jobs are coalesced per loop turn."""

    def __init__(self, pool: WorkerPool, path: Path) -> None:
        self.pool = pool
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: dict[int, asyncio.Future[Answer]] = {}
        self.images_in_flight = 0
        self._outgoing: list[tuple[int, np.ndarray, float]] = []
        self._metric_flushes: collections.deque[asyncio.Future[None]] = (
            collections.deque()
        )  # answered in order

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def submit(self, job_id: int, pixels: np.ndarray, admitted_at: float) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.waiting[job_id] = future
        self.images_in_flight += len(pixels)
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append((job_id, pixels, admitted_at))
        return future

    def flush_metrics(self) -> asyncio.Future[None]:
        """Ask the worker to write the metrics it holds; resolves once it has (or is gone)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_result(None)
            return future
        self._metric_flushes.append(future)
        self.transport.write(wire.encode_flush_request())
        return future

    def _flush(self) -> None:
        jobs, self._outgoing = self._outgoing, []
        if self.transport is None or self.transport.is_closing():
            return  # connection_lost fails these jobs
        ids, pixels, admitted = zip(*jobs, strict=True)
        self.transport.write(wire.encode_request(list(ids), list(pixels), list(admitted)))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for payload in wire.split_frames(self.buffer):
            self._resolve(wire.decode_answer(payload))

    def _resolve(self, frame: wire.AnswerFrame) -> None:
        if not len(frame.entries):  # the reply to the oldest flush request
            if self._metric_flushes and not (flushed := self._metric_flushes.popleft()).done():
                flushed.set_result(None)
            return
        start = 0
        for job_id, images, status in frame.entries.tolist():
            future = self.waiting.pop(job_id, None)
            if status == wire.Status.OK:
                rows, start = frame.probabilities[start : start + images], start + images
            if future is None:
                continue
            self.images_in_flight -= images  # counted until the worker is done with it
            if future.done():  # its client left, or it timed out: the answer is dropped
                continue
            if status == wire.Status.OK:
                future.set_result(Answer(rows, frame.version))
            elif status == wire.Status.EXPIRED:
                future.set_exception(QueueTimeout("waited in the queue longer than the request timeout"))
            else:
                future.set_exception(Unavailable("inference failed for this batch; retry", "worker_failed"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)
        for flushed in self._metric_flushes:  # nothing more to wait for there
            if not flushed.done():
                flushed.set_result(None)
        self._metric_flushes.clear()
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(Unavailable("inference worker failed; retry", reason="worker_failed"))
        self.waiting.clear()


class Deadlines:
    """Fails requests still unanswered ``timeout`` seconds after they were sent, with a 504.

    Requests with the same timeout expire in the order they were sent, so one timer for the oldest
    replaces a timer (asyncio.timeout: a heap entry, a reschedule and a cancel) per request.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._waiting: collections.deque[tuple[float, asyncio.Future[Answer]]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, future: asyncio.Future[Answer]) -> None:
        waiting = self._waiting
        while waiting and waiting[0][1].done():  # answered: the queue stays as long as what is in flight
            waiting.popleft()
        loop = asyncio.get_running_loop()
        waiting.append((loop.time() + self.timeout, future))
        if self._timer is None:
            self._timer = loop.call_at(waiting[0][0], self._expire)

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        waiting, now = self._waiting, loop.time()
        while waiting and (waiting[0][0] <= now or waiting[0][1].done()):
            future = waiting.popleft()[1]
            if not future.done():
                future.set_exception(QueueTimeout(f"no answer within {self.timeout:g} s"))
        self._timer = loop.call_at(waiting[0][0], self._expire) if waiting else None


class WorkerPool:
    """Every worker this API server is connected to; jobs go to the least busy one."""

    def __init__(self, socket_dir: Path) -> None:
        self.socket_dir = socket_dir
        self.connections: dict[Path, WorkerConnection] = {}
        self._ids = itertools.count(1)
        self._scanner: asyncio.Task[None] | None = None
        self._scanning: asyncio.Lock | None = None  # created on the event loop that uses it
        self._deadlines: dict[float, Deadlines] = {}  # by timeout: in practice one, the server's

    def submit(self, pixels: np.ndarray, admitted_at: float, timeout: float | None) -> asyncio.Future[Answer]:
        """Send a job to the least busy worker; the future resolves with its answer, or fails with
        a 503 (worker lost) or a 504 (no answer within ``timeout``). Cancelling it drops the answer."""
        if self._scanner is None:  # one per API-server process, started on its event loop
            self._scanner = asyncio.get_running_loop().create_task(self._scan_forever())
        if not self.connections:  # start-up, or every worker is being replaced: connect first
            return asyncio.ensure_future(self._submit_after_scan(pixels, admitted_at, timeout))
        connection = min(self.connections.values(), key=lambda c: c.images_in_flight)
        future = connection.submit(next(self._ids), pixels, admitted_at)
        if timeout is not None:
            deadlines = self._deadlines.get(timeout)
            if deadlines is None:
                deadlines = self._deadlines[timeout] = Deadlines(timeout)
            deadlines.add(future)
        return future

    async def _submit_after_scan(
        self, pixels: np.ndarray, admitted_at: float, timeout: float | None
    ) -> Answer:
        await self.scan()
        if not self.connections:
            raise Unavailable("no inference worker is ready yet; retry")
        return await self.submit(pixels, admitted_at, timeout)

    async def flush_metrics(self, timeout: float) -> None:
        """Have every worker write the metrics it holds in memory, waiting at most ``timeout`` seconds
        (a worker in the middle of a long batch replies after it)."""
        if not self.connections:
            await self.scan()
        flushes = [connection.flush_metrics() for connection in self.connections.values()]
        if flushes:
            await asyncio.wait(flushes, timeout=timeout)

    async def infer(self, pixels: np.ndarray, admitted_at: float, timeout: float | None) -> Answer:
        return await self.submit(pixels, admitted_at, timeout)

    def lost(self, connection: WorkerConnection) -> None:
        if self.connections.get(connection.path) is connection:
            del self.connections[connection.path]
            log.warning("lost inference worker %s", connection.path.name)

    async def scan(self) -> None:
        """Connect to workers that appeared since the last scan; remove sockets nobody listens on.
        Concurrent callers wait for the same scan, so none sees a half-connected pool."""
        if self._scanning is None:
            self._scanning = asyncio.Lock()
        async with self._scanning:
            loop = asyncio.get_running_loop()
            for path in worker_sockets(self.socket_dir):
                if path in self.connections:
                    continue
                try:
                    _, protocol = await loop.create_unix_connection(
                        functools.partial(WorkerConnection, self, path), str(path)
                    )
                    self.connections[path] = protocol
                except ConnectionRefusedError:  # its worker died; workers publish only listening sockets
                    path.unlink(missing_ok=True)
                except OSError as error:
                    log.debug("cannot connect to %s: %s", path, error)

    async def _scan_forever(self) -> None:
        while True:
            await asyncio.sleep(SCAN_INTERVAL_S)
            with contextlib.suppress(Exception):
                await self.scan()
