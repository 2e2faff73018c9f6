"""The image worker pool: a bounded set of processes, a bounded queue, a time limit per job.

Pillow never runs on the event loop. Work goes to ``workers`` processes (``transform/procs.py``:
started through a forkserver, so no thread of the server is forked, and driven from the loop
through a pipe each, without executor threads). Memory is bounded by admitted work, and work
is admitted before it costs any:

- ``admit()``: at most ``workers + queue_size`` jobs at once; the next is refused with 503 +
  ``Retry-After`` at once, before its source is downloaded, instead of waiting without bound.
- ``Ticket.loading()``: of the admitted jobs, at most ``2 * workers`` are handed to the workers
  (one reading and rendering, one next in line, per worker); the others wait their turn holding
  nothing. A worker reads its job's source itself (``read_and_render``,
  ``storage/worker_read.py``), so a source is only ever in the memory of the worker rendering
  it, never in the serving process's (README, "Memory").

Each job has a time limit enforced inside the worker (SIGALRM: the source read's budget, then the
transform timeout between decoder chunks) and, as a backstop, outside it: a job that overruns
both gets its worker killed and replaced, so no worker stays stuck (the others keep working).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import FrameType
from typing import Final, TypeVar

from imgproxy.errors import Overloaded, TransformTimeout
from imgproxy.memory import TRIM_INTERVAL, find_malloc_trim
from imgproxy.storage.worker_read import ReadMeta, SourceRead
from imgproxy.transform.drawing import Drawing
from imgproxy.transform.header import Header, NeedBytes
from imgproxy.transform.jobs import Rendered, RenderSettings
from imgproxy.transform.metajobs import Placeholder, run_header_job, run_placeholder_job
from imgproxy.transform.params import OutputFormat, TransformSpec
from imgproxy.transform.procs import WorkerDied, WorkerSet

log = logging.getLogger("imgproxy.transform")
BACKSTOP_SECONDS: Final = 2.0
ORPHAN_POLL_SECONDS: Final = 1.0
T = TypeVar("T")


class _Alarm(BaseException):  # a signal, not an error: no ``except Exception`` may swallow it
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


def _watch_worker(server_pid: int) -> None:
    """If the server is SIGKILLed (OOM killer), leave too; once every worker has gone, the
    forkserver and the resource tracker see EOF on their pipes and exit as well. Meanwhile, give
    the heap a big render freed back to the OS now and then (``memory.py``)."""
    trim, polls = find_malloc_trim(), 0
    while is_alive(server_pid):
        time.sleep(ORPHAN_POLL_SECONDS)
        polls += 1
        if trim is not None and polls * ORPHAN_POLL_SECONDS >= TRIM_INTERVAL:
            trim(0)
            polls = 0
    os._exit(0)


def _init_worker(max_pixels: int, server_pid: int) -> None:
    from PIL import Image

    from imgproxy.transform.heif import register_opener

    Image.MAX_IMAGE_PIXELS = max_pixels
    register_opener()  # HEIF input, when the heif extra is installed (transform/heif.py)
    # urllib3 logs each request line, presigned query included, at DEBUG: never from a worker.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    signal.signal(signal.SIGALRM, _on_alarm)
    threading.Thread(target=_watch_worker, args=(server_pid,), daemon=True,
                     name="worker-watch").start()


def _warm() -> int:
    return os.getpid()


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """In a worker: the block under a wall-clock limit (SIGALRM); overrun: 422 transform_timeout."""
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Alarm:
        raise TransformTimeout(f"over {seconds:g}s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def run_job(data: bytes | bytearray, spec: TransformSpec, target: OutputFormat | None,
            settings: RenderSettings, timeout: float) -> Rendered:
    """Runs in a worker process: render under a wall-clock limit. Pillow is imported here, in
    the worker (the forkserver preloads it), never in the serving process."""
    from imgproxy.transform.steps import render

    with time_limit(timeout):
        return render(data, spec, target, settings)


def run_draw_job(drawing: Drawing, target: OutputFormat | None, quality: int | None,
                 settings: RenderSettings, timeout: float) -> Rendered:
    """Runs in a worker process: draw a placeholder (``transform/avatar.py``), no read."""
    from imgproxy.transform.avatar import render_drawing

    with time_limit(timeout):
        return render_drawing(drawing, target, quality, settings)


def run_read_job(read: SourceRead, spec: TransformSpec, target: OutputFormat | None,
                 settings: RenderSettings, timeout: float) -> tuple[ReadMeta, Rendered]:
    """Runs in a worker process: read the source (``storage/worker_read.py``, under its own
    budget), then render it as ``run_job`` does. The source lives in this worker only."""
    from imgproxy.storage.worker_read import SourceReadFailed, read_source

    signal.setitimer(signal.ITIMER_REAL, read.budget)
    try:
        meta, data = read_source(read)
    except _Alarm:
        raise SourceReadFailed("timeout", detail=f"read over {read.budget:g}s", seconds=read.budget) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return meta, run_job(data, spec, target, settings, timeout)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Ticket:
    """One admitted job: holds its place in the pool's capacity until the block ends."""

    def __init__(self, pool: TransformPool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def loading(self) -> AsyncIterator[None]:
        """Wait until this job may hold its source in memory; the block downloads and renders."""
        pool = self._pool
        async with pool._loading:
            pool.loaded += 1
            pool.peak_loaded = max(pool.peak_loaded, pool.loaded)
            try:
                yield
            finally:
                pool.loaded -= 1


class TransformPool:
    """Admission control and dispatch; used only from the event loop thread."""

    def __init__(self, workers: int, queue_size: int, timeout: float, max_pixels: int) -> None:
        self.workers = workers or default_workers()
        self.capacity = self.workers + queue_size
        self.in_memory = 2 * self.workers  # sources held at once: rendering, and next in line
        self.timeout = timeout
        self._max_pixels = max_pixels
        self.active = 0
        self.loaded = 0  # jobs holding their source in memory, at most ``in_memory``
        self.peak_loaded = 0
        self.rejected = 0
        self.completed = 0
        self._loading = asyncio.Semaphore(self.in_memory)
        self._workers = WorkerSet(self.workers, _init_worker, (max_pixels, os.getpid()),
                                  preload=("imgproxy.transform.steps", "imgproxy.transform.avatar",
                                           "imgproxy.storage.worker_read", "pillow_heif"))

    def worker_pids(self) -> set[int]:
        return self._workers.pids()

    async def start(self) -> None:
        """Start every worker now, so the first requests do not pay for process start-up."""
        self._workers.start()
        await asyncio.gather(*(self._workers.run(BACKSTOP_SECONDS + 30, _warm) for _ in range(self.workers)))

    @property
    def queued(self) -> int:
        return max(0, self.active - self.workers)

    @contextlib.contextmanager
    def admit(self) -> Iterator[Ticket]:
        """A place for one job, or 503 now: taken before the job costs anything."""
        if self.active >= self.capacity:
            self.rejected += 1
            raise Overloaded(f"{self.active} jobs admitted, capacity {self.capacity}")
        self.active += 1
        try:
            yield Ticket(self)
        finally:
            self.active -= 1

    async def render(self, data: bytes | bytearray, spec: TransformSpec, target: OutputFormat | None,
                     settings: RenderSettings) -> Rendered:
        """Render bytes at hand (call inside ``admit()`` and ``loading()``)."""
        return await self._run(self.timeout * 2 + BACKSTOP_SECONDS, run_job, data, spec, target, settings,
                               self.timeout)

    async def draw(self, drawing: Drawing, target: OutputFormat | None, quality: int | None,
                   settings: RenderSettings) -> Rendered:
        """Draw a placeholder (call inside ``admit()``; it reads nothing)."""
        return await self._run(self.timeout + BACKSTOP_SECONDS, run_draw_job, drawing, target, quality,
                               settings, self.timeout)

    async def read_and_render(self, read: SourceRead, spec: TransformSpec, target: OutputFormat | None,
                              settings: RenderSettings) -> tuple[ReadMeta, Rendered]:
        """A worker reads the source and renders it (call inside ``admit()`` and ``loading()``);
        a failed read raises ``SourceReadFailed``."""
        return await self._run(read.budget + self.timeout * 2 + BACKSTOP_SECONDS, run_read_job, read, spec,
                               target, settings, self.timeout)

    async def read_header(self, data: bytes, total: int,
                          input_formats: tuple[str, ...]) -> Header | NeedBytes:
        """What the first bytes of an object say (``/meta``; call inside ``admit()``)."""
        return await self._run(self.timeout + BACKSTOP_SECONDS, run_header_job, data, total,
                               input_formats)

    async def read_placeholder(self, read: SourceRead,
                               settings: RenderSettings) -> tuple[ReadMeta, Placeholder]:
        """A worker reads the source and hashes a small render of it (call inside ``admit()``
        and ``loading()``)."""
        return await self._run(read.budget + self.timeout * 2 + BACKSTOP_SECONDS, run_placeholder_job, read,
                               settings, self.timeout)

    async def _run(self, backstop: float, job: Callable[..., T], *args: object) -> T:
        try:
            # At most ``in_memory`` jobs reach here, so at most that many wait for a worker.
            result = await self._workers.run(backstop, job, *args)
        except TimeoutError:
            log.error("a transform overran its time limit; its worker is killed and replaced")
            raise TransformTimeout("backstop timeout") from None
        except WorkerDied:
            log.error("a transform worker died; it is replaced")
            raise Overloaded("worker died") from None
        self.completed += 1
        return result

    def close(self) -> None:
        self._workers.close()
