"""The image worker pool: a bounded set of processes, a bounded queue, a time limit per job.

Pillow never runs on the event loop. Work goes to ``workers`` processes (started through a
forkserver, so no thread of the server is forked); at most ``workers + queue_size`` jobs are
admitted at once and the next is refused with 503 + ``Retry-After`` instead of waiting without
bound. Each job has a time limit enforced inside the worker (SIGALRM between decoder chunks)
and, as a backstop, outside it: a job that overruns both gets its pool replaced, so no worker
stays stuck.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import FrameType
from typing import Final

from imgproxy.errors import Overloaded, TransformTimeout
from imgproxy.transform.params import OutputFormat, TransformSpec
from imgproxy.transform.steps import Rendered, RenderSettings, render

log = logging.getLogger("imgproxy.transform")
BACKSTOP_SECONDS: Final = 2.0
RETRY_AFTER: Final = "1"
ORPHAN_POLL_SECONDS: Final = 1.0


class _Alarm(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Alarm


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _exit_when_orphaned(server_pid: int) -> None:
    """If the server is SIGKILLed (OOM killer), leave too; once every worker has gone, the
    forkserver and the resource tracker see EOF on their pipes and exit as well."""
    while is_alive(server_pid):
        time.sleep(ORPHAN_POLL_SECONDS)
    os._exit(0)


def _init_worker(max_pixels: int, server_pid: int) -> None:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    signal.signal(signal.SIGALRM, _on_alarm)
    threading.Thread(target=_exit_when_orphaned, args=(server_pid,), daemon=True,
                     name="orphan-watch").start()


def _warm() -> int:
    return os.getpid()


def run_job(data: bytes, spec: TransformSpec, target: OutputFormat | None,
            settings: RenderSettings, timeout: float) -> Rendered:
    """Runs in a worker process: render under a wall-clock limit."""
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return render(data, spec, target, settings)
    except _Alarm:
        raise TransformTimeout(f"over {timeout:g}s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class TransformPool:
    """Admission control and dispatch; used only from the event loop thread."""

    def __init__(self, workers: int, queue_size: int, timeout: float, max_pixels: int) -> None:
        self.workers = workers or default_workers()
        self.capacity = self.workers + queue_size
        self.timeout = timeout
        self._max_pixels = max_pixels
        self.active = 0
        self.rejected = 0
        self.completed = 0
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["imgproxy.transform.steps"])
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                   initializer=_init_worker, initargs=(self._max_pixels, os.getpid()))

    async def start(self) -> None:
        """Start every worker now, so the first requests do not pay for process start-up."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, _warm) for _ in range(self.workers)))

    @property
    def queued(self) -> int:
        return max(0, self.active - self.workers)

    async def render(self, data: bytes, spec: TransformSpec, target: OutputFormat | None,
                     settings: RenderSettings) -> Rendered:
        if self.active >= self.capacity:
            self.rejected += 1
            raise Overloaded(f"{self.active} jobs admitted, capacity {self.capacity}",
                             headers={"Retry-After": RETRY_AFTER})
        self.active += 1
        loop = asyncio.get_running_loop()
        executor = self._executor
        try:
            future = loop.run_in_executor(executor, run_job, data, spec, target, settings, self.timeout)
            result = await asyncio.wait_for(future, self.timeout * (1 + self.queued) + BACKSTOP_SECONDS)
            self.completed += 1
            return result
        except TimeoutError:
            log.error("a transform overran its time limit; replacing the worker pool")
            self._replace(executor)
            raise TransformTimeout("backstop timeout") from None
        except BrokenProcessPool:
            log.error("a transform worker died; replacing the worker pool")
            self._replace(executor)
            raise Overloaded("worker pool broken", headers={"Retry-After": RETRY_AFTER}) from None
        finally:
            self.active -= 1

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if broken is not self._executor:
            return  # another job already replaced it
        self._executor = self._new_executor()
        for process in list(getattr(broken, "_processes", {}).values()):
            process.kill()
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
