"""The API server's side of the hand-off: send validated pixels to a worker, get its answer.

Each API-server process connects to every inference worker's Unix socket (``service.ipc.sockets``).
Jobs sent during one turn of the event loop go to a worker as one frame; the worker's answer frame
calls each job's callback as it is read (the direct HTTP path writes the response from there; ``submit``
wraps a job in a future for code that awaits). A worker that dies closes its socket, and every job it
held fails at once with a 503 the client may retry; replacement workers are picked up by a periodic scan.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import operator
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from service.errors import QueueTimeout, Unavailable
from service.ipc import frames
from service.ipc.sockets import worker_sockets

log = logging.getLogger(__name__)
SCAN_INTERVAL_S = 0.5


class Answer(NamedTuple):
    probabilities: np.ndarray  # [n, 10] for one request's n images
    version: str  # the model version that computed them


# Called from the event loop: (probabilities, model version, None) with the answer, or (None, "", error)
# with the 503 / 504 it failed with; once per job, but for a job whose deadline passes while the worker
# still has it: called with StillQueued then, and again when it leaves the worker. Never after cancel.
OnAnswer = Callable[[np.ndarray | None, str, Exception | None], None]
Ticket = tuple["WorkerConnection | None", int]  # what cancels a job: its connection and id


class StillQueued(QueueTimeout):
    """The request's deadline passed while its job is still with the worker (which will skip it):
    answer the client now; the job's callback is called once more when it has left the worker."""


class ServiceRate:
    """Images per second a worker computes for this API server while it has work from it: the
    answers' images over the time since the previous answer or since the work arrived, smoothed.
    With the images still in flight it tells how long a new job would wait (``WorkerPool.backlog_s``).

    Only answers of at least ``MIN_SAMPLE_IMAGES`` images are samples: a small batch's time is mostly
    fixed costs (wake-ups, ``--batch-timeout``'s wait), and one image answered after a 50 ms batch
    timeout read as 20 images/s, so the first burst after light load was refused as overload."""

    SMOOTHING = 0.2
    MIN_SAMPLE_IMAGES = 64

    def __init__(self) -> None:
        self.images_per_s = 0.0  # 0: not measured yet
        self._since = 0.0

    def busy_from(self, now: float) -> None:
        self._since = now

    def answered(self, images: int, now: float, still_in_flight: int) -> None:
        elapsed = now - self._since
        if images >= self.MIN_SAMPLE_IMAGES and elapsed > 0:
            sample = images / elapsed
            rate = self.images_per_s
            self.images_per_s = sample if not rate else rate + self.SMOOTHING * (sample - rate)
        self._since = now if still_in_flight else 0.0


class WorkerConnection(asyncio.Protocol):
    """One API server's connection to one worker: outgoing jobs are coalesced per loop turn."""

    def __init__(self, pool: WorkerPool, path: Path) -> None:
        self.pool = pool
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop  # the one it was connected on (connection_made)
        self.buffer = bytearray()
        self.waiting: dict[int, OnAnswer] = {}
        self.images_in_flight = 0
        self.service_rate = ServiceRate()
        self._outgoing: list[tuple[int, np.ndarray, float]] = []
        # Flush requests to the worker, answered in the order they were sent.
        self._metric_flushes: collections.deque[asyncio.Future[None]] = collections.deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        # Kept: on Python 3.11 every get_running_loop() is a getpid() system call.
        self.loop = asyncio.get_running_loop()

    def send(self, job_id: int, pixels: np.ndarray, admitted_at: float, on_answer: OnAnswer) -> None:
        self.waiting[job_id] = on_answer
        if not self.images_in_flight:
            self.service_rate.busy_from(admitted_at)
        self.images_in_flight += len(pixels)
        if not self._outgoing:
            self.loop.call_soon(self._flush)
        self._outgoing.append((job_id, pixels, admitted_at))

    def flush_metrics(self) -> asyncio.Future[None]:
        """Ask the worker to write the metrics it holds; resolves once it has (or is gone)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_result(None)
            return future
        self._metric_flushes.append(future)
        self.transport.write(frames.encode_flush_request())
        return future

    def _flush(self) -> None:
        jobs, self._outgoing = self._outgoing, []
        if self.transport is None or self.transport.is_closing():
            return  # connection_lost fails these jobs
        ids, pixels, admitted = zip(*jobs, strict=True)
        self.transport.write(frames.encode_request(list(ids), list(pixels), list(admitted)))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for payload in frames.split_frames(self.buffer):
            self._resolve(frames.decode_answer(payload))

    def _resolve(self, frame: frames.AnswerFrame) -> None:
        if not len(frame.entries):  # the reply to the oldest flush request
            if self._metric_flushes and not (flushed := self._metric_flushes.popleft()).done():
                flushed.set_result(None)
            return
        self.service_rate.answered(len(frame.probabilities), time.monotonic(), self.images_in_flight)
        start = 0
        waiting, probabilities, version = self.waiting, frame.probabilities, frame.version
        for job_id, images, status in frame.entries.tolist():
            self.images_in_flight -= images  # counted until the worker is done with it
            on_answer = waiting.pop(job_id, None)
            if status == frames.Status.OK:
                rows, start = probabilities[start : start + images], start + images
                if on_answer is not None:  # None: cancelled (its client left) or timed out
                    _call(on_answer, rows, version, None)
            elif on_answer is not None:
                error: Exception = (
                    QueueTimeout("waited in the queue longer than the request timeout")
                    if status == frames.Status.EXPIRED
                    else Unavailable("inference failed for this batch; retry", "worker_failed")
                )
                _call(on_answer, None, "", error)

    def expire(self, job_id: int, error: StillQueued) -> None:
        """Its deadline passed: call back with ``error`` now, and again when the worker is done with it."""
        on_answer = self.waiting.get(job_id)
        if on_answer is not None:
            _call(on_answer, None, "", error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)
        for flushed in self._metric_flushes:  # nothing more to wait for there
            if not flushed.done():
                flushed.set_result(None)
        self._metric_flushes.clear()
        waiting, self.waiting = self.waiting, {}
        for on_answer in waiting.values():
            _call(on_answer, None, "", Unavailable("inference worker failed; retry", reason="worker_failed"))


_IMAGES_IN_FLIGHT = operator.attrgetter("images_in_flight")  # min()'s key, without a Python call per job


def _call(on_answer: OnAnswer, rows: np.ndarray | None, version: str, error: Exception | None) -> None:
    """One job's callback; a failure there must not cost the other jobs of the frame their answers."""
    try:
        on_answer(rows, version, error)
    except Exception:
        log.exception("answering a job failed")


class Deadlines:
    """Fails jobs still unanswered ``timeout`` seconds after they were sent, with a 504 (StillQueued).

    Jobs with the same timeout expire in the order they were sent, so one timer for the oldest
    replaces a timer (asyncio.timeout: a heap entry, a reschedule and a cancel) per job. A job whose
    deadline has passed is failed ``POLL_FIRST_S`` later, after the event loop has read its sockets
    once more: uvloop runs due timers before it polls, so an event loop busy past a deadline would
    otherwise answer 504 to jobs whose answers had arrived in time and were waiting to be read.
    """

    POLL_FIRST_S = 0.001

    def __init__(self, timeout: float, loop: asyncio.AbstractEventLoop) -> None:
        self.timeout = timeout
        self.loop = loop
        self._waiting: collections.deque[tuple[float, WorkerConnection, int]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: WorkerConnection, job_id: int) -> None:
        waiting = self._waiting
        while waiting and waiting[0][2] not in waiting[0][1].waiting:  # answered: keep only what is open
            waiting.popleft()
        loop = self.loop
        waiting.append((loop.time() + self.timeout, connection, job_id))
        if self._timer is None:
            self._timer = loop.call_at(waiting[0][0], self._expire)

    def _expire(self) -> None:
        loop = self.loop
        waiting, now = self._waiting, loop.time()
        due = []
        while waiting and (waiting[0][0] <= now or waiting[0][2] not in waiting[0][1].waiting):
            _, connection, job_id = waiting.popleft()
            if job_id in connection.waiting:
                due.append((connection, job_id))
        if due:
            loop.call_later(self.POLL_FIRST_S, self._fail, due)
        self._timer = loop.call_at(waiting[0][0], self._expire) if waiting else None

    def _fail(self, due: list[tuple[WorkerConnection, int]]) -> None:
        for connection, job_id in due:  # a job answered meanwhile is no longer waiting: expire skips it
            connection.expire(job_id, StillQueued(f"no answer within {self.timeout:g} s"))


class WorkerPool:
    """Every worker this API server is connected to; jobs go to the least busy one."""

    def __init__(self, socket_dir: Path) -> None:
        self.socket_dir = socket_dir
        self.connections: dict[Path, WorkerConnection] = {}
        self._ids = itertools.count(1)
        self._scanner: asyncio.Task[None] | None = None
        self._scanning: asyncio.Lock | None = None  # created on the event loop that uses it
        self._deadlines: dict[float, Deadlines] = {}  # by timeout: in practice one, the server's
        self._starting: set[asyncio.Future[None]] = set()  # jobs waiting for the first scan (kept alive)

    def send(
        self, pixels: np.ndarray, admitted_at: float, timeout: float | None, on_answer: OnAnswer
    ) -> Ticket:
        """Send a job to the least busy worker; ``on_answer`` gets its answer, or the 503 (worker lost)
        or 504 (no answer within ``timeout``) it failed with. ``cancel`` with the ticket drops it."""
        connections = self.connections
        if self._scanner is None:  # one per API-server process, started on its event loop
            self._scanner = asyncio.get_running_loop().create_task(self._scan_forever())
        if not connections:  # start-up, or every worker is being replaced: connect first
            waiting = asyncio.ensure_future(self._send_after_scan(pixels, admitted_at, timeout, on_answer))
            self._starting.add(waiting)
            waiting.add_done_callback(self._starting.discard)
            return None, 0
        connection = min(connections.values(), key=_IMAGES_IN_FLIGHT)
        job_id = next(self._ids)
        connection.send(job_id, pixels, admitted_at, on_answer)
        if timeout is not None:
            deadlines = self._deadlines.get(timeout)
            if deadlines is None:
                deadlines = self._deadlines[timeout] = Deadlines(timeout, connection.loop)
            deadlines.add(connection, job_id)
        return connection, job_id

    def backlog_s(self) -> float:
        """How long the least busy worker needs for the images this API server has sent it and not yet
        had back, at the rate measured for it: the wait of a job sent now. 0 while it has none, so a
        rate measured on a slow batch (a cold start, a pause) never keeps refusing once it is idle."""
        if not self.connections:
            return 0.0
        connection = min(self.connections.values(), key=_IMAGES_IN_FLIGHT)
        rate = connection.service_rate.images_per_s
        return connection.images_in_flight / rate if rate else 0.0

    @staticmethod
    def cancel(ticket: Ticket) -> None:
        """Drop a job's answer: its callback is not called (a job already with the worker is still
        computed). A job still waiting for the first connection is sent anyway and its answer unused."""
        connection, job_id = ticket
        if connection is not None:
            connection.waiting.pop(job_id, None)

    async def _send_after_scan(
        self, pixels: np.ndarray, admitted_at: float, timeout: float | None, on_answer: OnAnswer
    ) -> None:
        try:
            await self.scan()
        except Exception as error:
            _call(on_answer, None, "", Unavailable(f"cannot reach the inference workers ({error}); retry"))
            return
        if not self.connections:
            _call(on_answer, None, "", Unavailable("no inference worker is ready yet; retry"))
            return
        self.send(pixels, admitted_at, timeout, on_answer)

    def submit(self, pixels: np.ndarray, admitted_at: float, timeout: float | None) -> asyncio.Future[Answer]:
        """``send`` for code that awaits: the future holds the answer or the error; cancelling it
        drops the answer."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

        def on_answer(rows: np.ndarray | None, version: str, error: Exception | None) -> None:
            if future.done():
                return
            if error is None:
                assert rows is not None
                future.set_result(Answer(rows, version))
            else:
                future.set_exception(error)

        ticket = self.send(pixels, admitted_at, timeout, on_answer)
        future.add_done_callback(lambda done: self.cancel(ticket) if done.cancelled() else None)
        return future

    async def flush_metrics(self, timeout: float) -> None:
        """Have every worker write the metrics it holds in memory, waiting at most ``timeout`` seconds
        (a worker in the middle of a long batch replies after it)."""
        if not self.connections:
            await self.scan()
        flushes = [connection.flush_metrics() for connection in self.connections.values()]
        if flushes:
            await asyncio.wait(flushes, timeout=timeout)

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
