"""The hand-off between API servers and a worker, over real Unix sockets: ``service.ipc.client`` on an
event loop here, ``service.worker.loop`` in a thread. The model is a stand-in whose answers can be
checked exactly (the digit is a pixel value) and which fails on demand; the server process, the real
model and worker deaths are covered by tests/integration."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import uvloop

from service.errors import QueueTimeout, Unavailable
from service.ipc.client import ServiceRate, WorkerConnection, WorkerPool
from service.ipc.sockets import worker_sockets
from service.worker.loop import SocketLoop

POISON = 255  # a job whose first pixel is this makes the stand-in model fail its whole batch
SLOW = 254  # and this makes it take 0.3 s


class MarkedDigits:
    """Answers digit = pixels[i, 0, 0, 1] % 10 with certainty; records the size of every batch."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.metrics_written = 0  # batches whose metrics were written (as the real worker's flush does)

    def metrics_due_in(self) -> float | None:
        return None  # held until an API server asks

    def flush_metrics(self, force: bool) -> None:
        if force:
            self.metrics_written = len(self.batches)

    def predict(
        self, pixels: np.ndarray, admitted_at: np.ndarray, images_per_job: np.ndarray
    ) -> tuple[np.ndarray, str]:
        self.batches.append(len(images_per_job))
        time.sleep(0.3 if (pixels[:, 0, 0, 0] == SLOW).any() else 0.005)  # next jobs queue up behind it
        if (pixels[:, 0, 0, 0] == POISON).any():
            raise RuntimeError("backend failed")
        probabilities = np.zeros((len(pixels), 10), np.float32)
        probabilities[np.arange(len(pixels)), pixels[:, 0, 0, 1] % 10] = 1.0
        return probabilities, "7"


def _images(digits: list[int], first_pixel: int = 0) -> np.ndarray:
    pixels = np.zeros((len(digits), 1, 28, 28), np.uint8)
    pixels[:, 0, 0, 0] = first_pixel
    pixels[:, 0, 0, 1] = digits
    return pixels


@pytest.fixture
def worker() -> Iterator[tuple[Path, MarkedDigits]]:
    folder = Path(tempfile.mkdtemp(prefix="mw-"))  # short: a socket path must fit in 108 bytes
    model = MarkedDigits()
    loop = SocketLoop(folder, max_jobs=4, batch_timeout=0.0, request_timeout=0.5)
    threading.Thread(target=loop.serve, args=(model, 0), daemon=True).start()
    deadline = time.monotonic() + 5
    while not worker_sockets(folder) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker_sockets(folder), "the worker never listened"
    yield folder, model
    shutil.rmtree(folder, ignore_errors=True)


def test_concurrent_jobs_get_their_own_rows_and_share_batches(worker: tuple[Path, MarkedDigits]) -> None:
    folder, model = worker
    jobs = [[i % 10] * (1 + i % 3) for i in range(24)]  # 1 to 3 images each

    async def run() -> list[tuple[list[int], str]]:
        pool = WorkerPool(folder)
        answers = await asyncio.gather(*(pool.submit(_images(d), time.monotonic(), 5.0) for d in jobs))
        return [(a.probabilities.argmax(1).tolist(), a.version) for a in answers]

    assert asyncio.run(run()) == [(digits, "7") for digits in jobs]
    assert sum(model.batches) == len(jobs) and max(model.batches) <= 4  # --max-batch-size holds
    assert len(model.batches) < len(jobs)  # jobs that queued behind a batch were computed together


def test_a_failing_batch_fails_only_its_jobs_and_the_worker_keeps_serving(
    worker: tuple[Path, MarkedDigits],
) -> None:
    folder, _ = worker

    async def run() -> tuple[BaseException | None, list[int]]:
        pool = WorkerPool(folder)
        try:
            await pool.submit(_images([3], first_pixel=POISON), time.monotonic(), 5.0)
            failure = None
        except Unavailable as error:
            failure = error
        answer = await pool.submit(_images([4, 5]), time.monotonic(), 5.0)
        return failure, answer.probabilities.argmax(1).tolist()

    failure, digits = asyncio.run(run())
    assert isinstance(failure, Unavailable) and failure.status == 503 and failure.reason == "worker_failed"
    assert digits == [4, 5]


def test_jobs_older_than_the_request_timeout_are_not_computed(worker: tuple[Path, MarkedDigits]) -> None:
    folder, model = worker

    async def run() -> None:
        await WorkerPool(folder).submit(_images([1]), time.monotonic() - 1.0, 5.0)  # admitted 1 s ago

    with pytest.raises(QueueTimeout):
        asyncio.run(run())
    assert model.batches == []


def test_expired_jobs_in_a_batch_leave_the_others_their_own_rows(worker: tuple[Path, MarkedDigits]) -> None:
    folder, model = worker
    jobs = [([1, 2], 1.0), ([3], 0.0), ([4, 5, 6], 1.0), ([7, 8], 0.0)]  # (digits, admitted seconds ago)

    async def run() -> list[list[int] | str]:
        pool = WorkerPool(folder)
        await pool.scan()  # connected first, so that the four jobs leave in one frame, read as one batch
        now = time.monotonic()
        answers = await asyncio.gather(
            *(pool.submit(_images(digits), now - ago, 5.0) for digits, ago in jobs), return_exceptions=True
        )
        return [
            type(a).__name__ if isinstance(a, BaseException) else a.probabilities.argmax(1).tolist()
            for a in answers
        ]

    assert asyncio.run(run()) == ["QueueTimeout", [3], "QueueTimeout", [7, 8]]
    assert model.batches == [2]  # one batch, holding only the two fresh jobs


def test_an_answer_later_than_the_timeout_is_a_504_and_the_pool_goes_on(
    worker: tuple[Path, MarkedDigits],
) -> None:
    folder, _ = worker

    async def run() -> tuple[float, list[list[int]]]:
        pool = WorkerPool(folder)
        started = time.monotonic()
        with pytest.raises(QueueTimeout, match=r"no answer within 0\.1 s"):
            await pool.submit(_images([3], first_pixel=SLOW), time.monotonic(), 0.1)
        waited = time.monotonic() - started
        # Deadlines of different requests expire in turn; those answered in time are not failed.
        quick = [pool.submit(_images([digit]), time.monotonic(), 2.0) for digit in (1, 2, 3)]
        late = pool.submit(_images([9], first_pixel=SLOW), time.monotonic(), 0.1)
        answers = await asyncio.gather(*quick, late, return_exceptions=True)
        assert isinstance(answers[-1], QueueTimeout) and "within 0.1 s" in str(answers[-1]), answers[-1]
        return waited, [answer.probabilities.argmax(1).tolist() for answer in answers[:-1]]

    waited, digits = asyncio.run(run())
    assert 0.1 <= waited < 0.25
    assert digits == [[1], [2], [3]]


def test_an_answer_that_arrived_in_time_wins_over_a_deadline_a_busy_event_loop_missed(
    worker: tuple[Path, MarkedDigits],
) -> None:
    # Another connection's data keeps the event loop busy (as decoding bodies does under load) from
    # before the worker answers until past the deadline. uvloop then runs the overdue timer before it
    # reads the worker's socket, where the answer has been waiting.
    folder, _ = worker

    class Busy(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            time.sleep(0.3)

    async def run() -> int:
        pool = WorkerPool(folder)
        await pool.submit(_images([1]), time.monotonic(), 5.0)  # connected
        busy, trigger = socket.socketpair()
        await asyncio.get_running_loop().connect_accepted_socket(Busy, busy)
        answer = pool.submit(_images([6]), time.monotonic(), 0.1)
        await asyncio.sleep(0.001)  # the job goes out
        trigger.send(b"x")  # read by the loop's next poll, before the worker's answer arrives
        try:
            return int((await answer).probabilities.argmax())
        finally:
            trigger.close()

    assert uvloop.run(run()) == 6


def test_a_job_past_its_deadline_is_called_back_again_once_it_has_left_the_worker(
    worker: tuple[Path, MarkedDigits],
) -> None:
    # The 504 goes out at the deadline; the second call tells the API server the job no longer waits
    # for the worker, which is when its queue slot may be given back (service.http.inference).
    folder, _ = worker

    async def run() -> list[tuple[str, float]]:
        pool = WorkerPool(folder)
        await pool.submit(_images([1]), time.monotonic(), 5.0)  # connected
        calls: list[tuple[str, float]] = []
        done = asyncio.get_running_loop().create_future()
        started = time.monotonic()

        def on_answer(rows: np.ndarray | None, version: str, error: Exception | None) -> None:
            calls.append((type(error).__name__ if error else "answer", time.monotonic() - started))
            if len(calls) == 2:
                done.set_result(None)

        pool.send(_images([3], first_pixel=SLOW), time.monotonic(), 0.1, on_answer)
        await asyncio.wait_for(done, 5)
        await asyncio.sleep(0.2)  # and no third call
        return calls

    calls = asyncio.run(run())
    assert [name for name, _ in calls] == ["StillQueued", "answer"], calls
    assert 0.1 <= calls[0][1] < 0.25 and calls[1][1] >= 0.3  # the slow batch took 0.3 s


def test_no_worker_is_a_503_not_a_hang(tmp_path: Path) -> None:
    async def run() -> None:
        await WorkerPool(tmp_path).submit(_images([1]), time.monotonic(), 5.0)

    with pytest.raises(Unavailable, match="no inference worker"):
        asyncio.run(run())


def test_a_flush_request_is_answered_after_the_worker_wrote_its_metrics(
    worker: tuple[Path, MarkedDigits],
) -> None:
    folder, model = worker

    async def run() -> int:
        pool = WorkerPool(folder)
        await asyncio.gather(*(pool.submit(_images([d]), time.monotonic(), 5.0) for d in range(6)))
        assert model.metrics_written == 0  # held by the worker until asked
        await pool.flush_metrics(timeout=5.0)
        return model.metrics_written

    assert asyncio.run(run()) == len(model.batches) > 0


def test_callbacks_get_their_answers_even_when_one_fails_and_cancelled_jobs_get_none(
    worker: tuple[Path, MarkedDigits],
) -> None:
    folder, _ = worker

    async def run() -> tuple[dict[int, list[int]], WorkerPool]:
        pool = WorkerPool(folder)
        await pool.scan()  # connected first: the jobs below leave in one frame and come back in one
        answered: dict[int, list[int]] = {}
        done = asyncio.Event()

        def on_answer(digit: int) -> Callable[[np.ndarray | None, str, Exception | None], None]:
            def answer(rows: np.ndarray | None, version: str, error: Exception | None) -> None:
                assert rows is not None and error is None and version == "7"
                answered[digit] = rows.argmax(1).tolist()
                if digit == 0:
                    raise RuntimeError("a broken callback")  # logged; the frame's other jobs go on
                if len(answered) == 3:
                    done.set()

            return answer

        tickets = {d: pool.send(_images([d]), time.monotonic(), 5.0, on_answer(d)) for d in range(4)}
        WorkerPool.cancel(tickets[2])  # its client left: no callback, the answer is dropped
        await asyncio.wait_for(done.wait(), 5.0)
        await asyncio.sleep(0.05)
        return answered, pool

    answered, pool = asyncio.run(run())
    assert answered == {0: [0], 1: [1], 3: [3]}
    assert [c.images_in_flight for c in pool.connections.values()] == [0]  # the dropped job counted too
    assert all(not c.waiting for c in pool.connections.values())


def test_the_service_rate_counts_only_the_time_the_worker_had_work() -> None:
    rate = ServiceRate()
    rate.busy_from(10.0)
    rate.answered(100, 11.0, still_in_flight=50)  # 100 images in the first second of work
    assert rate.images_per_s == 100
    rate.answered(100, 11.5, still_in_flight=0)  # 200/s over the next half second, smoothed
    assert rate.images_per_s == 100 + ServiceRate.SMOOTHING * (200 - 100)
    rate.busy_from(20.0)  # idle from 11.5 to 20: not counted
    rate.answered(100, 20.1, still_in_flight=0)
    assert rate.images_per_s > 140


def test_small_answers_are_not_samples_of_the_service_rate() -> None:
    # One image answered 50 ms after it was sent is a batch timeout, not a rate of 20 images/s.
    rate = ServiceRate()
    rate.busy_from(10.0)
    rate.answered(1, 10.05, still_in_flight=0)
    assert rate.images_per_s == 0.0  # not measured: the backlog counts as empty
    rate.busy_from(11.0)
    rate.answered(ServiceRate.MIN_SAMPLE_IMAGES, 11.01, still_in_flight=0)
    assert rate.images_per_s == pytest.approx(ServiceRate.MIN_SAMPLE_IMAGES / 0.01)


def test_the_backlog_counts_only_images_still_with_the_worker(tmp_path: Path) -> None:
    pool = WorkerPool(tmp_path)
    assert pool.backlog_s() == 0.0  # no worker yet: nothing to wait behind
    connection = WorkerConnection(pool, tmp_path / "worker.sock")
    pool.connections[connection.path] = connection
    connection.service_rate.images_per_s = 10.0  # measured on a slow batch
    assert pool.backlog_s() == 0.0  # idle: a job sent now waits for nothing, whatever the rate said
    connection.images_in_flight = 25
    assert pool.backlog_s() == 2.5
