"""The supervisor: N worker processes serving one listening socket, restarted when they die.

How the workers start, and why that way. The parent reserves the address (bound
``SO_REUSEPORT`` sockets, not listening: a port in use fails before any fork), then
``os.fork``s each worker from a plain synchronous loop that never starts a thread or an event
loop (checked before every fork). A child is thus a clean single-threaded copy of the parsed
config and the logging set-up; it opens its own listening ``SO_REUSEPORT`` socket on the
reserved address and runs its own ``asyncio.run`` with ``web.SockSite`` on it.
``spawn``/``forkserver`` would re-import aiohttp, botocore and Pillow in every worker (about a
second per restart).

Why a socket per worker and not one shared socket: asyncio accepts every pending connection
each time its loop wakes, so on a shared socket the first worker to wake took a whole burst
(16 keep-alive clients connecting at once all landed on one worker, the other idle for the
whole benchmark run); the kernel spreads connections evenly over ``SO_REUSEPORT`` sockets. The
cost: connections queued on a worker that crashes, not yet accepted, are reset (a dead worker's
socket leaves the group, so no new ones go there). Each worker's image pool starts its own
forkserver lazily, after the fork.

The parent blocks SIGTERM, SIGINT, SIGHUP and SIGCHLD and reads them with ``sigtimedwait``: no
handler races, no event loop. A worker that exits when not asked to is logged (exit code or signal) and
restarted after a short backoff that grows while it keeps dying young. SIGTERM or SIGINT is
forwarded to every worker, which stops accepting, lets in-flight requests finish for
``server.shutdown_timeout`` and closes its S3 clients and image pool; the parent exits 0 once all
have exited 0, or kills the stragglers after the grace period plus a margin and exits 1.

SIGHUP reloads the config (``process/reload.py``): the parent loads and validates it once, then
writes the resulting ``Config`` down a pipe it made for each worker before forking it
(``process/channel.py``); each worker installs it for its new requests. A worker started later
(a restart) is forked with the config in force. Workers keep SIGHUP blocked: only the parent
reads the file.

The host cache (``hostcache/``): the parent prepares ``cache.dir`` before the first fork (its
permissions checked, what a previous run left half-done swept away), or, with no ``cache.dir``,
makes a private temporary directory and removes it at exit; the workers get its path in their
config. Prometheus multi-process mode: the parent creates a fresh directory, names it in
``PROMETHEUS_MULTIPROC_DIR`` for the workers (``web/metrics.enable_multiprocess_metrics``), and
removes it at exit. The sockets are ``process/sockets.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry

from imgproxy.config import Config
from imgproxy.config.digest import config_version
from imgproxy.hostcache.directory import prepare, private_temp_dir
from imgproxy.process import channel
from imgproxy.process.reload import Reloader
from imgproxy.process.sockets import listen_on, reserve_addresses
from imgproxy.transform.pool import default_workers
from imgproxy.web.metrics import enable_multiprocess_metrics, forget_metrics_of, reload_counter

log = logging.getLogger("imgproxy.supervisor")
SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD})
STOPS: Final = frozenset({signal.SIGTERM, signal.SIGINT})
RESTART_BACKOFF: Final = 0.2  # seconds before the first restart; doubles while workers die young
RESTART_BACKOFF_MAX: Final = 5.0
STABLE_SECONDS: Final = 10.0  # a worker that lived this long resets the backoff
STOP_MARGIN: Final = 5.0  # beyond shutdown_timeout, for cancelled handlers and cleanup contexts
POLL_SECONDS: Final = 1.0  # the wait when no signal comes (a lost SIGCHLD is found by then)
ORPHAN_POLL_SECONDS: Final = 1.0
EXIT_STARTUP: Final = 3  # a worker's exit code for "could not start": restarting cannot help


def worker_count(configured: int) -> int:
    return configured or default_workers()


def config_for_worker(config: Config, workers: int, cache_dir: str | None = None) -> Config:
    """Share the cores: an unset ``transform.workers`` means CPUs / serving workers per worker;
    share the caches: ``cache_dir`` (the host cache's directory) in ``cache.dir``."""
    if cache_dir is not None:
        config = dataclasses.replace(config, cache=dataclasses.replace(config.cache, dir=cache_dir))
    if config.transform.workers:
        return config
    per_worker = max(1, default_workers() // workers)
    return dataclasses.replace(config, transform=dataclasses.replace(config.transform, workers=per_worker))


def describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:  # a real-time signal has no name
        return f"signal {-code}"


def _exit_when_orphaned(parent: int) -> None:
    """If the supervisor is SIGKILLed, stop gracefully instead of serving on unsupervised."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


@dataclass(slots=True)
class _Slot:
    pid: int = 0  # 0: not running
    pipe: int = -1  # the write end of the worker's config pipe (process/channel.py); -1: none
    started: float = 0.0
    failures: int = 0  # consecutive early deaths
    restart_at: float = 0.0


class Supervisor:
    """Forks ``count`` workers that each run ``work(fd)`` (its return value is their exit code;
    ``fd`` the read end of their config pipe). On SIGHUP, ``reload()`` gives the message to
    write to every worker's pipe, or None (nothing to send)."""

    def __init__(self, count: int, work: Callable[[int], int], grace: float,
                 listeners: Sequence[socket.socket] = (),
                 reload: Callable[[], bytes | None] | None = None) -> None:
        self.slots = [_Slot() for _ in range(count)]
        self._work = work
        self._reload = reload
        self._listeners = listeners  # closed in the parent as soon as stopping begins
        self._grace = grace
        self._parent = os.getpid()
        self.gave_up = False  # a worker could not start, so every worker was stopped

    def run(self) -> int:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            for index in range(len(self.slots)):
                self._start(index)
            signum = self._supervise()
            code = self._stop(signum)
            return 1 if self.gave_up else code
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _start(self, index: int) -> None:
        if threading.active_count() != 1:
            raise RuntimeError("the supervisor must not fork once a thread runs")
        sys.stdout.flush()
        sys.stderr.flush()
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(writer)
            self._run_child(index, reader)
        os.close(reader)
        os.set_blocking(writer, False)
        slot = self.slots[index]
        slot.pid, slot.started, slot.pipe = pid, time.monotonic(), writer
        log.info("worker %d started (pid %d)", index, pid)

    def _run_child(self, index: int, reader: int) -> None:
        code = 1
        try:
            for slot in self.slots:  # the other workers' pipes are the parent's to write
                if slot.pipe >= 0:
                    os.close(slot.pipe)
            # SIGTERM/SIGINT stay blocked (pending) until server.serve has its handlers.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            threading.Thread(target=_exit_when_orphaned, args=(self._parent,), daemon=True,
                             name="orphan-watch").start()
            code = self._work(reader)
        except KeyboardInterrupt:
            code = 0
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # never the parent's atexit handlers or finally blocks

    def _wait(self, timeout: float) -> int | None:
        """The SIGTERM/SIGINT/SIGHUP that arrived, or None on a SIGCHLD or after ``timeout``."""
        info = signal.sigtimedwait(SIGNALS, max(timeout, 0.0))
        if info is not None and info.si_signo != signal.SIGCHLD:
            return info.si_signo
        return None

    def _send_reload(self) -> None:
        """SIGHUP: the config validated once, then written to every running worker."""
        message = self._reload() if self._reload is not None else None
        if message is None:
            return
        for index, slot in enumerate(self.slots):
            if slot.pid and not channel.send(slot.pipe, message):
                # Part of the message may be in the pipe: that worker cannot read another. It
                # stops gracefully, and its replacement is forked with the new config.
                log.warning("reload: worker %d (pid %d) did not take the new config within %gs; "
                            "stopping it gracefully (its replacement starts with the new config)",
                            index, slot.pid, channel.SEND_SECONDS)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGTERM)

    def _reap(self) -> list[tuple[int, int, int]]:
        """(slot index, pid, wait status) of each worker that has exited."""
        exited = []
        for index, slot in enumerate(self.slots):
            if not slot.pid:
                continue
            pid, status = os.waitpid(slot.pid, os.WNOHANG)
            if pid:
                exited.append((index, pid, status))
                slot.pid = 0
                os.close(slot.pipe)
                slot.pipe = -1
                forget_metrics_of(pid)
        return exited

    def _supervise(self) -> int:
        """Restart workers that die until a stop signal arrives; returns that signal."""
        while True:
            now = time.monotonic()
            for index, pid, status in self._reap():
                if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_STARTUP:
                    log.error("worker %d (pid %d) could not start; stopping every worker", index, pid)
                    self.gave_up = True
                    return signal.SIGTERM
                slot = self.slots[index]
                slot.failures = 0 if now - slot.started >= STABLE_SECONDS else slot.failures + 1
                delay = min(RESTART_BACKOFF * 2 ** max(slot.failures - 1, 0), RESTART_BACKOFF_MAX)
                slot.restart_at = now + delay
                log.warning("worker %d (pid %d) died with %s; restarting it in %.1fs",
                            index, pid, describe_exit(status), delay)
            for index, slot in enumerate(self.slots):
                if not slot.pid and slot.restart_at <= now:
                    self._start(index)
            pending = [slot.restart_at - now for slot in self.slots if not slot.pid]
            signum = self._wait(min([POLL_SECONDS, *pending]))
            if signum == signal.SIGHUP:
                self._send_reload()
            elif signum is not None:
                return signum

    def _forward(self, signum: int) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):  # a zombie not yet reaped
                    os.kill(slot.pid, signum)

    def _stop(self, signum: int) -> int:
        log.info("%s: stopping %d workers; in-flight requests get %gs",
                 signal.Signals(signum).name, sum(1 for s in self.slots if s.pid), self._grace)
        self._forward(signum)
        for listener in self._listeners:
            listener.close()
        deadline = time.monotonic() + self._grace + STOP_MARGIN
        clean = True
        while any(slot.pid for slot in self.slots):
            for index, pid, status in self._reap():
                if status != 0:
                    clean = False
                    log.warning("worker %d (pid %d) stopped with %s", index, pid, describe_exit(status))
            if not any(slot.pid for slot in self.slots):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for index, slot in enumerate(self.slots):
                    if slot.pid:
                        log.error("worker %d (pid %d) still running %gs after %s; killing it",
                                  index, slot.pid, self._grace + STOP_MARGIN,
                                  signal.Signals(signum).name)
                        os.kill(slot.pid, signal.SIGKILL)
                        os.waitpid(slot.pid, 0)
                        slot.pid = 0
                        os.close(slot.pipe)
                        slot.pipe = -1
                return 1
            again = self._wait(min(remaining, POLL_SECONDS))
            if again in STOPS:
                self._forward(again)
        log.info("all workers stopped")
        return 0 if clean else 1


@dataclass(slots=True)
class _InForce:
    """The workers' config now (a restarted worker is forked with it) and its version."""

    config: Config
    version: str


def serve_workers(config: Config, host: str, port: int, workers: int, path: str | None = None) -> int:
    """Bind ``host:port``, run ``workers`` supervised workers on it until SIGTERM/SIGINT; SIGHUP
    reloads the config from ``path`` (or the environment, as ``load_config``).

    Raises OSError if the address cannot be bound; returns the exit status.
    """
    from imgproxy.process.reload import pipe_reloads
    from imgproxy.process.server import serve
    from imgproxy.startup import StartupError, os_reason, socket_url
    from imgproxy.web.app import create_app

    reserved = reserve_addresses(host, port)
    log.info("listening on %s with %d workers", ", ".join(map(socket_url, reserved)), workers)
    own_cache = private_temp_dir() if config.cache.dir is None else None
    try:
        cache_dir = str(own_cache or config.cache.dir)
        held = prepare(cache_dir, config.cache.variant_bytes)
    except BaseException:
        for sock in reserved:
            sock.close()
        if own_cache is not None:
            shutil.rmtree(own_cache, ignore_errors=True)
        raise
    log.info("host cache in %s (%d bytes of variants at most)", cache_dir, config.cache.variant_bytes)
    version = config_version(config)
    in_force = _InForce(config_for_worker(config, workers, cache_dir), version)
    metrics_dir = tempfile.mkdtemp(prefix="imgproxy-metrics-")
    enable_multiprocess_metrics(metrics_dir)
    reloads = reload_counter(CollectorRegistry())  # the parent's own file in metrics_dir
    reloader = Reloader(path, config, version, lambda result: reloads.labels(result).inc())

    def reload() -> bytes | None:
        reloaded = reloader.reload()
        if reloaded is None:
            return None
        in_force.config = config_for_worker(reloaded.config, workers, cache_dir)
        in_force.version = reloaded.version
        return channel.encode(in_force.config, in_force.version)

    def work(updates: int) -> int:
        try:
            try:
                sockets = listen_on(reserved)
            except OSError as exc:
                raise StartupError(f"cannot listen on {host}:{port}: {os_reason(exc)}") from exc
            app = create_app(in_force.config, version=in_force.version)
            app.cleanup_ctx.append(pipe_reloads(updates))
            asyncio.run(serve(app, host, port, sockets=sockets))
        except StartupError as exc:
            log.error("%s", exc)
            return EXIT_STARTUP
        return 0

    try:
        return Supervisor(workers, work, config.server.shutdown_timeout, listeners=reserved,
                          reload=reload).run()
    finally:
        for sock in reserved:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        held.release()
        if own_cache is not None:
            shutil.rmtree(own_cache, ignore_errors=True)
