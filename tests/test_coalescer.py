"""cache.Coalescer: concurrent identical work runs once and every caller gets its result; a
cancellation reaches only the task it was aimed at. A waiter whose leader was cancelled gets an
answer (it runs the work itself), never hangs; a cancelled waiter leaves the leader and the
other waiters alone. Every wait here is bounded, so a regression fails instead of hanging."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from imgproxy.cache import Coalescer

KEY = ("photos", "employees/ada.jpg", "w=100")
PATIENCE = 5.0  # seconds: far more than any of these steps takes


class Work:
    """Work that runs until the test releases it; counts how often it was started and ended."""

    def __init__(self, name: str, fail: BaseException | None = None) -> None:
        self.name = name
        self.fail = fail
        self.runs = 0
        self.cancelled = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> str:
        self.runs += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail is not None:
            raise self.fail
        return f"rendered by {self.name}"


async def within(awaitable: Awaitable[object]) -> None:
    async with asyncio.timeout(PATIENCE):
        await awaitable


async def settle() -> None:
    """Let every runnable task take its next step (the waiters reach their ``await``)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def start(coalescer: Coalescer[str], work: Work) -> asyncio.Task[tuple[str, bool]]:
    task = asyncio.ensure_future(coalescer.run(KEY, work))
    await settle()
    return task


async def test_concurrent_identical_work_runs_once_and_every_caller_gets_its_result() -> None:
    coalescer: Coalescer[str] = Coalescer()
    leader_work, waiter_work = Work("leader"), Work("waiter")
    leader = await start(coalescer, leader_work)
    waiters = [await start(coalescer, waiter_work) for _ in range(3)]
    leader_work.release.set()
    async with asyncio.timeout(PATIENCE):
        results = await asyncio.gather(leader, *waiters)
    assert results == [("rendered by leader", True)] + [("rendered by leader", False)] * 3
    assert (leader_work.runs, waiter_work.runs) == (1, 0)
    assert coalescer.coalesced == 3
    assert len(coalescer) == 0


async def test_work_for_another_key_is_not_coalesced() -> None:
    coalescer: Coalescer[str] = Coalescer()
    first, second = Work("first"), Work("second")
    first_task = await start(coalescer, first)
    second_task = asyncio.ensure_future(coalescer.run(("photos", "other.jpg", "w=100"), second))
    await settle()
    first.release.set()
    second.release.set()
    async with asyncio.timeout(PATIENCE):
        assert await first_task == ("rendered by first", True)
        assert await second_task == ("rendered by second", True)
    assert coalescer.coalesced == 0


async def test_a_failure_reaches_every_waiter_as_the_same_error() -> None:
    coalescer: Coalescer[str] = Coalescer()
    error = ValueError("corrupt image")
    work = Work("leader", fail=error)
    leader = await start(coalescer, work)
    waiters = [await start(coalescer, Work("waiter")) for _ in range(2)]
    work.release.set()
    async with asyncio.timeout(PATIENCE):
        outcomes = await asyncio.gather(leader, *waiters, return_exceptions=True)
    assert outcomes == [error, error, error]
    assert all(outcome is error for outcome in outcomes)
    assert len(coalescer) == 0


async def test_after_a_failure_the_next_caller_runs_the_work_again() -> None:
    coalescer: Coalescer[str] = Coalescer()
    failing = Work("first", fail=ValueError("boom"))
    failing.release.set()
    with pytest.raises(ValueError, match="boom"):
        await within(coalescer.run(KEY, failing))
    retry = Work("second")
    retry.release.set()
    async with asyncio.timeout(PATIENCE):
        assert await coalescer.run(KEY, retry) == ("rendered by second", True)


async def test_when_the_leader_is_cancelled_one_waiter_runs_the_work_and_both_get_its_result() -> None:
    coalescer: Coalescer[str] = Coalescer()
    leader_work, first_work, second_work = Work("leader"), Work("first"), Work("second")
    leader = await start(coalescer, leader_work)
    first = await start(coalescer, first_work)
    second = await start(coalescer, second_work)

    leader.cancel()
    await settle()
    assert leader.cancelled()
    assert (leader_work.runs, leader_work.cancelled) == (1, 1)
    # Exactly one waiter took over, with its own work; the other waits on it.
    assert first_work.runs + second_work.runs == 1
    first_work.release.set()
    second_work.release.set()
    async with asyncio.timeout(PATIENCE):
        results = await asyncio.gather(first, second)
    [answer] = {result for result, _ in results}
    assert answer in {"rendered by first", "rendered by second"}
    assert sorted(ran for _, ran in results) == [False, True]
    assert len(coalescer) == 0


async def test_a_cancelled_waiter_leaves_the_leader_and_the_other_waiters_alone() -> None:
    coalescer: Coalescer[str] = Coalescer()
    work = Work("leader")
    leader = await start(coalescer, work)
    leaving = await start(coalescer, Work("leaving"))
    staying = await start(coalescer, Work("staying"))

    leaving.cancel()
    await settle()
    assert leaving.cancelled()
    assert not leader.done()
    assert not staying.done()
    assert work.cancelled == 0
    work.release.set()
    async with asyncio.timeout(PATIENCE):
        assert await leader == ("rendered by leader", True)
        assert await staying == ("rendered by leader", False)
    assert work.runs == 1


async def test_a_waiter_cancelled_along_with_its_leader_stays_cancelled() -> None:
    # Its own cancellation wins: it must not take the work over (a request that left would
    # keep a worker busy for nobody).
    coalescer: Coalescer[str] = Coalescer()
    leader_work, leaving_work, staying_work = Work("leader"), Work("leaving"), Work("staying")
    leader = await start(coalescer, leader_work)
    leaving = await start(coalescer, leaving_work)
    staying = await start(coalescer, staying_work)

    leader.cancel()
    leaving.cancel()
    await settle()
    assert leader.cancelled()
    assert leaving.cancelled()
    assert leaving_work.runs == 0
    staying_work.release.set()
    async with asyncio.timeout(PATIENCE):
        assert await staying == ("rendered by staying", True)


async def test_work_that_finished_is_not_shared_with_a_later_caller() -> None:
    # Coalescing is for concurrent callers only; caching the result is the variant cache's job.
    coalescer: Coalescer[str] = Coalescer()
    for name in ("first", "second"):
        work = Work(name)
        work.release.set()
        async with asyncio.timeout(PATIENCE):
            assert await coalescer.run(KEY, work) == (f"rendered by {name}", True)
    assert coalescer.coalesced == 0
