"""transform/pool.py on real worker processes: admission is bounded (one more is ``Overloaded``
at once), a worker that dies is replaced and the next job renders, and a render stuck past the
time limit is ended by the backstop, its worker killed.

A "stuck" render is a worker stopped with SIGSTOP (it can run neither the job nor its own
alarm) and a "crash" is a SIGKILL, as from the OOM killer: real processes, nothing mocked.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from PIL import Image
from support import RENDER_SETTINGS as SETTINGS

from imgproxy.errors import Overloaded, TransformTimeout
from imgproxy.transform.jobs import Rendered
from imgproxy.transform.params import TransformSpec
from imgproxy.transform.pool import BACKSTOP_SECONDS, TransformPool, is_alive

W20 = TransformSpec(width=20, height=None)
MARGIN = 10.0  # seconds a loaded 2-core machine may add to anything involving a process start
PoolFactory = Callable[..., TransformPool]


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), (10, 120, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


SOURCE = jpeg()


def worker_pids(pool: TransformPool) -> set[int]:
    """The pool's live worker processes."""
    return {pid for pid in pool.worker_pids() if is_alive(pid)}


def wait_until_gone(pid: int) -> bool:
    deadline = time.monotonic() + MARGIN
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def render(pool: TransformPool) -> Rendered:
    with pool.admit() as ticket:
        async with ticket.loading():
            return await pool.render(SOURCE, W20, None, SETTINGS)


@pytest.fixture
def make_pool() -> Iterator[PoolFactory]:
    """``make_pool(workers=1, queue_size=0, timeout=5)``: a pool, closed when the test ends."""
    pools: list[TransformPool] = []

    def make(workers: int = 1, queue_size: int = 0, timeout: float = 5.0) -> TransformPool:
        pools.append(TransformPool(workers, queue_size, timeout, SETTINGS.max_source_pixels))
        return pools[-1]

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def stop_worker(make_pool: PoolFactory) -> Iterator[Callable[[int], None]]:
    """``stop_worker(pid)``: SIGSTOP a worker; whatever the test's outcome, it is killed before
    the pools close (a stopped worker would keep its executor, and so pytest, from exiting)."""
    stopped: list[int] = []

    def stop(pid: int) -> None:
        stopped.append(pid)
        os.kill(pid, signal.SIGSTOP)

    yield stop
    for pid in stopped:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


# --- admission ---------------------------------------------------------------------------------

def test_admission_holds_workers_plus_queue_size_and_refuses_the_next_at_once(make_pool: PoolFactory) -> None:
    pool = make_pool(workers=2, queue_size=3)
    with ExitStack() as admitted:
        for _ in range(5):
            admitted.enter_context(pool.admit())
        assert (pool.active, pool.queued) == (5, 3)
        with pytest.raises(Overloaded) as refused, pool.admit():
            pytest.fail("a sixth job was admitted")
        assert (refused.value.status, refused.value.implied_headers()) == (503, {"Retry-After": "1"})
        assert (pool.active, pool.rejected) == (5, 1)  # the refusal took no place
    assert pool.active == 0


def test_a_finished_job_gives_its_place_back(make_pool: PoolFactory) -> None:
    pool = make_pool(workers=1, queue_size=0)
    with pool.admit(), pytest.raises(Overloaded), pool.admit():
        pass  # the one place is taken
    with pool.admit():
        assert pool.active == 1


def test_a_job_that_fails_gives_its_place_back(make_pool: PoolFactory) -> None:
    pool = make_pool(workers=1, queue_size=0)
    with pytest.raises(ValueError, match="download failed"), pool.admit():
        raise ValueError("download failed")
    assert pool.active == 0
    with pool.admit():
        assert pool.active == 1


async def test_at_most_two_sources_per_worker_are_held_in_memory(make_pool: PoolFactory) -> None:
    pool = make_pool(workers=1, queue_size=5)
    release = asyncio.Event()
    holding = 0

    async def job() -> None:
        nonlocal holding
        with pool.admit() as ticket:
            async with ticket.loading():
                holding += 1
                await release.wait()

    jobs = [asyncio.ensure_future(job()) for _ in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert (holding, pool.loaded, pool.active) == (2, 2, 5)  # the other three wait holding nothing
    release.set()
    async with asyncio.timeout(MARGIN):
        await asyncio.gather(*jobs)
    assert (holding, pool.peak_loaded, pool.loaded, pool.active) == (5, 2, 0, 0)


# --- real workers ------------------------------------------------------------------------------

async def test_a_job_renders_in_a_worker_process(make_pool: PoolFactory) -> None:
    pool = make_pool()
    await pool.start()
    [pid] = worker_pids(pool)
    assert pid != os.getpid()
    rendered = await render(pool)
    assert (rendered.width, rendered.height, rendered.media_type) == (20, 15, "image/jpeg")
    assert Image.open(io.BytesIO(rendered.body)).size == (20, 15)
    assert (pool.completed, worker_pids(pool)) == (1, {pid})


async def test_a_worker_that_dies_mid_job_is_replaced_and_the_next_job_renders(
        make_pool: PoolFactory, stop_worker: Callable[[int], None]) -> None:
    pool = make_pool()
    await pool.start()
    [crashed] = worker_pids(pool)
    stop_worker(crashed)  # so the job is surely still in flight when the worker dies
    job = asyncio.ensure_future(render(pool))
    await asyncio.sleep(0.2)
    assert not job.done()
    os.kill(crashed, signal.SIGKILL)
    async with asyncio.timeout(MARGIN):
        with pytest.raises(Overloaded, match="worker died"):
            await job
    assert pool.active == 0

    async with asyncio.timeout(MARGIN):
        rendered = await render(pool)
    assert rendered.width == 20
    assert crashed not in worker_pids(pool)
    assert len(worker_pids(pool)) == 1
    assert pool.completed == 1


@pytest.mark.slow
async def test_the_backstop_ends_a_stuck_render_and_kills_its_worker(
        make_pool: PoolFactory, stop_worker: Callable[[int], None]) -> None:
    pool = make_pool(timeout=0.5)
    await pool.start()
    [stuck] = worker_pids(pool)
    stop_worker(stuck)  # the worker's own alarm cannot fire either
    started = time.monotonic()
    async with asyncio.timeout(MARGIN + 5):
        with pytest.raises(TransformTimeout, match="backstop"):
            await render(pool)
    waited = time.monotonic() - started
    backstop = pool.timeout * 2 + BACKSTOP_SECONDS
    assert backstop - 0.05 <= waited < backstop + MARGIN
    assert wait_until_gone(stuck), "the stuck worker was left running"
    assert pool.active == 0

    async with asyncio.timeout(MARGIN):
        rendered = await render(pool)
    assert rendered.width == 20
    assert stuck not in worker_pids(pool)


async def test_a_caller_that_stops_waiting_leaves_its_worker_working_for_the_next(
        make_pool: PoolFactory, stop_worker: Callable[[int], None]) -> None:
    """A client that leaves mid-render cancels its request, not the job: the job finishes in its
    worker, its answer is dropped, and the worker takes the next job."""
    pool = make_pool()
    await pool.start()
    [pid] = worker_pids(pool)
    stop_worker(pid)  # the job stays in flight until the caller has gone
    job = asyncio.ensure_future(render(pool))
    await asyncio.sleep(0.2)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    os.kill(pid, signal.SIGCONT)
    async with asyncio.timeout(MARGIN):
        rendered = await render(pool)
    assert rendered.width == 20
    assert worker_pids(pool) == {pid}  # the same worker: nothing was killed or replaced
    assert pool.active == 0


async def test_one_worker_dying_leaves_the_others_rendering(make_pool: PoolFactory) -> None:
    pool = make_pool(workers=2, queue_size=2)
    await pool.start()
    first, second = sorted(worker_pids(pool))
    os.kill(first, signal.SIGKILL)
    async with asyncio.timeout(MARGIN):
        while first in worker_pids(pool) or len(worker_pids(pool)) < 2:  # noticed, and replaced
            await asyncio.sleep(0.02)
        rendered = await asyncio.gather(*(render(pool) for _ in range(4)))
    assert [r.width for r in rendered] == [20] * 4
    assert second in worker_pids(pool)
    assert first not in worker_pids(pool)
    assert len(worker_pids(pool)) == 2
