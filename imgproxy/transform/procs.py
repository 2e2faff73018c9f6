"""Image worker processes driven from the event loop itself: a pipe each, no executor threads.

``concurrent.futures.ProcessPoolExecutor`` hands every job through two threads of the serving
process (its manager and its queue feeder) and wakes each several times per job: measured
under ``bench/bench_transform.py``, those threads were about 0.7 ms of the serving process's
2.6 ms per thumbnail. Here each worker has one duplex pipe; the loop writes a job to an idle
worker's pipe (a few hundred bytes: the source is read by the worker, ``storage/worker_read.py``)
and reads the answer when the pipe becomes readable (``loop.add_reader``), so a job costs the
serving process two small pickles and two system calls.

A worker that exits (killed, crashed) is noticed through its process sentinel, also watched by
the loop: its job fails with ``WorkerDied`` and a new worker takes its place, at once; after a
worker that died young (a broken install, a job that kills every worker), with a growing delay,
and once ``GIVE_UP_AFTER`` died young in a row, the jobs waiting for a worker fail at once
instead of waiting out their deadlines. A job that runs
past its deadline gets its worker killed (the others keep working). A caller that stops
waiting (its client left) leaves the job running; its answer is dropped and the worker goes
back to work. The processes are started through a forkserver, so no thread of the server is
forked into them.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final, TypeVar

log = logging.getLogger("imgproxy.transform")
T = TypeVar("T")
JOIN_SECONDS: Final = 5.0
YOUNG_SECONDS: Final = 2.0  # a worker that exits sooner died starting (or on its first job)
RESPAWN_BACKOFF: Final = 0.1  # seconds before the next start after a young death; doubles ...
RESPAWN_BACKOFF_MAX: Final = 5.0  # ... up to this
GIVE_UP_AFTER: Final = 3  # young deaths in a row: jobs waiting for a worker fail at once


class WorkerDied(Exception):
    """The worker running a job exited before answering it."""


def _serve(conn: Connection, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
    """A worker's life: run each job it is sent, send back ``(True, result)`` or ``(False, error)``;
    exit when the pipe closes."""
    initializer(*initargs)
    while True:
        try:
            job, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            outcome: tuple[bool, Any] = (True, job(*args))
        except BaseException as exc:
            outcome = (False, exc)
        try:
            payload = pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an exception (or result) that cannot cross the pipe
            payload = pickle.dumps((False, RuntimeError(f"unpicklable outcome: {exc!r}")))
        try:
            conn.send_bytes(payload)
        except (BrokenPipeError, OSError):
            return


class _Worker:
    __slots__ = ("conn", "job", "process", "started")

    def __init__(self, process: BaseProcess, conn: Connection, started: float) -> None:
        self.process = process
        self.conn = conn
        self.started = started
        self.job: asyncio.Future[Any] | None = None


class WorkerSet:
    """``count`` worker processes; ``run`` gives a job to the next idle one."""

    def __init__(self, count: int, initializer: Callable[..., None], initargs: tuple[Any, ...],
                 preload: Sequence[str] = ()) -> None:
        self.count = count
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(preload))
        self._initializer = initializer
        self._initargs = initargs
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []
        self._waiting: deque[asyncio.Future[_Worker]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop watching the pipes
        self._young_deaths = 0  # in a row: a worker that cannot start must not be restarted in a loop
        self._respawn: asyncio.TimerHandle | None = None
        self.started = 0  # processes started, replacements included
        self._closed = False

    def pids(self) -> set[int]:
        return {worker.process.pid for worker in self._workers if worker.process.pid is not None}

    def start(self) -> None:
        """Start the missing workers now (called from the loop; ``run`` calls it too), unless a
        restart after young deaths is pending."""
        if self._respawn is not None:
            return
        while len(self._workers) < self.count and not self._closed:
            self._spawn()

    def _respawn_now(self) -> None:
        self._respawn = None
        self.start()

    def _spawn(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_serve, args=(child, self._initializer, self._initargs),
                                        daemon=True, name="imgproxy-image-worker")
        process.start()
        self.started += 1
        child.close()
        worker = _Worker(process, parent, loop.time())
        self._workers.add(worker)
        loop.add_reader(parent.fileno(), self._answered, worker)
        loop.add_reader(process.sentinel, self._exited, worker)
        self._release(worker)

    async def run(self, deadline: float, job: Callable[..., T], *args: object) -> T:
        """``job(*args)`` in a worker; ``TimeoutError`` after ``deadline`` seconds (its worker is
        killed), ``WorkerDied`` if the worker exits first."""
        self.start()
        if self._young_deaths >= GIVE_UP_AFTER and not self._idle:
            raise WorkerDied(f"{self._young_deaths} workers in a row died young")
        worker = await self._acquire()
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        worker.job = answer
        try:
            worker.conn.send((job, args))
        except (OSError, ValueError):  # its pipe is gone: the worker is exiting
            worker.job = None
            self._kill(worker)
            raise WorkerDied("the worker's pipe closed") from None
        try:
            async with asyncio.timeout(deadline):
                return await asyncio.shield(answer)
        except TimeoutError:
            if not answer.done():
                self._kill(worker)
            raise

    async def _acquire(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker in self._workers:
                return worker
        waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed over just as the caller left
            raise

    def _release(self, worker: _Worker) -> None:
        if worker not in self._workers:
            return
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def _answered(self, worker: _Worker) -> None:
        try:
            ok, value = pickle.loads(worker.conn.recv_bytes())  # noqa: S301 - our own worker's bytes
        except (EOFError, OSError):
            if self._loop is not None:
                self._loop.remove_reader(worker.conn.fileno())
            return  # the worker is exiting: ``_exited`` follows
        job, worker.job = worker.job, None
        self._young_deaths = 0  # it ran a job to its end: workers can start
        if job is not None and not job.done():
            if ok:
                job.set_result(value)
            else:
                job.set_exception(value)
                job.exception()  # retrieved: a caller that left must not leave a warning
        self._release(worker)

    def _exited(self, worker: _Worker) -> None:
        self._forget(worker)
        worker.process.join(0)
        job, worker.job = worker.job, None
        if job is not None and not job.done():
            job.set_exception(WorkerDied(f"exit code {worker.process.exitcode}"))
            job.exception()
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - worker.started >= YOUNG_SECONDS:
            self._young_deaths = 0
            self.start()
            return
        # Died young: a broken install or a job that kills every worker. Restart with a growing
        # delay, and past GIVE_UP_AFTER fail the jobs waiting for a worker instead of letting
        # them wait out their deadlines.
        self._young_deaths += 1
        if self._young_deaths >= GIVE_UP_AFTER:
            log.error("%d image workers in a row died within %gs of starting (exit code %s)",
                      self._young_deaths, YOUNG_SECONDS, worker.process.exitcode)
            while self._waiting:
                waiter = self._waiting.popleft()
                if not waiter.done():
                    waiter.set_exception(WorkerDied("image workers keep dying at start"))
                    waiter.exception()
        if self._respawn is None:
            delay = min(RESPAWN_BACKOFF * 2 ** (self._young_deaths - 1), RESPAWN_BACKOFF_MAX)
            self._respawn = loop.call_later(delay, self._respawn_now)

    def _forget(self, worker: _Worker) -> None:
        if worker not in self._workers:
            return
        self._workers.discard(worker)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(worker.process.sentinel)
            if not worker.conn.closed:
                loop.remove_reader(worker.conn.fileno())
        if not worker.conn.closed:
            worker.conn.close()
        if worker in self._idle:
            self._idle.remove(worker)

    @staticmethod
    def _kill(worker: _Worker) -> None:
        """Kill it; the loop sees its sentinel, fails its job and starts another."""
        if worker.process.is_alive():
            worker.process.kill()

    def close(self) -> None:
        """Stop every worker: close the pipes (a worker exits at EOF, after its current job),
        wait ``JOIN_SECONDS``, kill what is left."""
        self._closed = True
        if self._respawn is not None:
            self._respawn.cancel()
            self._respawn = None
        workers = list(self._workers)
        for worker in workers:
            self._forget(worker)
        for worker in workers:
            worker.process.join(JOIN_SECONDS)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(JOIN_SECONDS)
        for waiter in self._waiting:
            if not waiter.done():
                waiter.cancel()
