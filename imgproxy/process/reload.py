"""Reloading the config on SIGHUP: validated once, then in force in every serving process.

The process that receives the SIGHUP (the supervisor, or the one process with ``--workers 1``)
loads the config again exactly as at start-up (``load_config``: the file, ``file:`` secrets read
anew; ``$IMGPROXY_CONFIG_TOML`` and ``env:`` values cannot change in a running process). A
config that does not load is refused with one WARNING line naming the problem (the ConfigError's
text: a key path, never a secret), and the running config stays in force. One that loads is
laid over the running one by ``config.restart.apply_reload`` (keys that need a restart keep
their running values, and one line lists them), and each serving process installs it
(``Live.switch``): requests that start afterwards see it, those in flight finish with theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from imgproxy.config import Config, ConfigError, load_config
from imgproxy.config.digest import config_version
from imgproxy.config.restart import apply_reload
from imgproxy.process.channel import Receiver
from imgproxy.transform.jobs import available_outputs
from imgproxy.transform.policy import TransformPolicy
from imgproxy.web import appkeys

log = logging.getLogger("imgproxy.reload")
Result = Literal["ok", "partial", "invalid"]
CleanupContext = Callable[[web.Application], AsyncIterator[None]]


@dataclass(frozen=True, slots=True)
class Reloaded:
    """A config that loaded: the one now in force (restart-only keys as they were), its version."""

    config: Config
    version: str
    result: Result


class Reloader:
    """Loads the config again from where it first came (``path``, or the environment)."""

    def __init__(self, path: str | None, running: Config, version: str,
                 count: Callable[[str], None]) -> None:
        self.path = path
        self.config = running
        self.version = version
        self._count = count  # imgproxy_reloads_total{result}

    def reload(self) -> Reloaded | None:
        """The config now in force, or None: it did not load and the running one stays."""
        try:
            loaded = load_config(self.path)
            TransformPolicy.from_config(loaded.transform, available_outputs())  # presets checked
        except ConfigError as exc:
            self._count("invalid")
            log.warning("reload refused, config version %s stays in force: %s", self.version, exc)
            return None
        version = config_version(loaded)
        config, needs_restart = apply_reload(self.config, loaded)
        self.config, self.version = config, version
        if needs_restart:
            self._count("partial")
            log.warning("reload: config version %s in force, except what needs a restart to change: "
                        "%s", version, ", ".join(needs_restart))
            return Reloaded(config, version, "partial")
        self._count("ok")
        log.info("reload: config version %s in force", version)
        return Reloaded(config, version, "ok")


async def install(app: web.Application, config: Config, version: str) -> None:
    """Put ``config`` in force in this serving process (a worker that cannot keeps its own)."""
    live = app[appkeys.LIVE]
    try:
        settings = await live.switch(config, version)
    except Exception as exc:
        log.warning("reload: pid %d could not put config version %s in force (%s); it keeps "
                    "version %s", os.getpid(), version, exc.__class__.__name__, live.current.version)
        return
    app[appkeys.METRICS].observe_in_force(settings.version, settings.auth.revocations)


class _Installs:
    """Installs run one after another, in the order they were asked for."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._tasks: set[asyncio.Task[None]] = set()
        self._order = asyncio.Lock()

    def start(self, work: Callable[[], tuple[Config, str] | None]) -> None:
        """Install what ``work`` (run in a thread: it may read files) gives, if anything."""
        task = asyncio.get_running_loop().create_task(self._run(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, work: Callable[[], tuple[Config, str] | None]) -> None:
        async with self._order:
            outcome = await asyncio.to_thread(work)
            if outcome is not None:
                await install(self._app, *outcome)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)


def hangup_reloads(reloader: Reloader) -> CleanupContext:
    """``cleanup_ctx`` of the one serving process (``--workers 1``): SIGHUP reloads it."""

    async def follow(app: web.Application) -> AsyncIterator[None]:
        installs = _Installs(app)
        loop = asyncio.get_running_loop()
        def reload() -> tuple[Config, str] | None:
            reloaded = reloader.reload()
            return None if reloaded is None else (reloaded.config, reloaded.version)

        loop.add_signal_handler(signal.SIGHUP, installs.start, reload)
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            await installs.close()

    return follow


def pipe_reloads(fd: int) -> CleanupContext:
    """``cleanup_ctx`` of a supervisor's worker: the configs its supervisor validated, from ``fd``."""

    async def follow(app: web.Application) -> AsyncIterator[None]:
        installs = _Installs(app)

        receiver = Receiver(fd, lambda config, version: installs.start(lambda: (config, version)))
        receiver.start()
        try:
            yield
        finally:
            receiver.close()
            await installs.close()

    return follow
