"""transform/procs.py's WorkerSet on real processes, for what the pool's tests do not reach: a
worker that cannot start is not restarted in a tight loop, and the jobs waiting for one fail
at once instead of waiting out their deadlines."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from imgproxy.transform.procs import GIVE_UP_AFTER, WorkerDied, WorkerSet


def exit_at_once() -> None:
    """A worker's initializer that fails as a broken install would: the process exits."""
    os._exit(3)


def nothing() -> None:
    pass


async def test_workers_that_die_starting_are_restarted_with_a_growing_delay_and_jobs_fail_fast() -> None:
    workers = WorkerSet(1, exit_at_once, ())
    try:
        failures, started = 0, time.monotonic()
        while time.monotonic() - started < 2.0:
            with pytest.raises(WorkerDied):
                async with asyncio.timeout(10):
                    await workers.run(30, os.getpid)
            failures += 1
            await asyncio.sleep(0.01)
        # Without the backoff every one of those runs would have started a process; with it,
        # 0.1 + 0.2 + 0.4 + 0.8 s of delays leave room for about five starts in two seconds.
        assert failures > workers.started
        assert workers.started <= 6
        assert failures >= GIVE_UP_AFTER
    finally:
        workers.close()


async def test_a_worker_killed_young_is_replaced_after_a_delay_and_the_replacement_answers() -> None:
    workers = WorkerSet(1, nothing, ())
    try:
        async with asyncio.timeout(30):
            first = await workers.run(30, os.getpid)
            [pid] = workers.pids()
            assert first == pid != os.getpid()
            os.kill(pid, 9)  # dies young (just started): the replacement comes after a delay
            while workers.pids() in ({pid}, set()):
                await asyncio.sleep(0.02)
            assert await workers.run(30, os.getpid) != pid
        assert workers.started == 2
    finally:
        workers.close()
