from __future__ import annotations

import asyncio

import pytest

from service.http.shared_renders import SharedRenders

WAIT, TICK = 0.05, 0.05


class Counting:
    def __init__(self) -> None:
        self.started: list[float] = []

    async def produce(self) -> int:
        self.started.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.01)
        return len(self.started)


def test_calls_due_in_one_tick_share_one_run_started_after_each_has_waited() -> None:
    async def scenario() -> None:
        counting = Counting()
        renders = SharedRenders(counting.produce, WAIT, TICK)
        loop = asyncio.get_running_loop()
        # Start on a tick boundary, so that the burst below falls due in one tick.
        await asyncio.sleep(TICK - loop.time() % TICK + 0.001)
        arrived = loop.time()
        burst = await asyncio.gather(*(renders.get() for _ in range(50)))
        assert burst == [1] * 50 and len(counting.started) == 1
        assert counting.started[0] >= arrived + WAIT
        later = loop.time()
        assert await renders.get() == 2  # arrived after that run started: a run of its own
        assert counting.started[1] >= later + WAIT

    asyncio.run(scenario())


def test_a_caller_that_leaves_does_not_cancel_the_others_run() -> None:
    async def scenario() -> None:
        counting = Counting()
        renders = SharedRenders(counting.produce, WAIT, TICK)
        leaving = asyncio.ensure_future(renders.get())
        staying = asyncio.ensure_future(renders.get())
        await asyncio.sleep(0)
        leaving.cancel()
        assert await staying == 1
        with pytest.raises(asyncio.CancelledError):
            await leaving

    asyncio.run(scenario())


def test_a_failed_run_fails_its_callers_and_the_next_call_runs_again() -> None:
    async def scenario() -> None:
        calls = 0

        async def flaky() -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("metrics folder unreadable")
            return calls

        renders = SharedRenders(flaky, WAIT, TICK)
        with pytest.raises(OSError):
            await renders.get()
        assert await renders.get() == 2

    asyncio.run(scenario())
