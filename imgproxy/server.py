"""Running the app on a socket until SIGTERM/SIGINT, then stopping gracefully.

On a signal the listener closes first, in-flight requests get ``shutdown_timeout`` seconds to
finish, and then the cleanup contexts close the S3 clients and the image pool. aiohttp's
``AppRunner.cleanup`` does exactly that: it closes the sites, then waits for every handler still
running (a streamed body is written inside its handler, so a long download counts) for up to
``shutdown_timeout`` before cancelling it, and only then runs the cleanup contexts.

``sockets`` are listening sockets opened elsewhere (a supervisor's worker opens its own).
If start-up fails (an address in use, a cleanup context raising), whatever did start is closed
again and ``StartupError`` says what failed in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Sequence
from typing import Final

from aiohttp import web

log = logging.getLogger("imgproxy")
FLUSH_POLL_SECONDS = 0.01
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class StartupError(Exception):
    """The server could not start; the message is one line for the operator."""


def os_reason(exc: OSError) -> str:
    """The system's words for an OSError (asyncio's own ``strerror`` repeats the address)."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def bound_addresses(sites: Sequence[web.BaseSite]) -> list[str]:
    found = []
    for site in sites:
        server = site._server
        if not isinstance(server, asyncio.Server):
            found.append(site.name)
            continue
        found += [socket_url(sock) for sock in server.sockets]
    return found


async def serve(app: web.Application, host: str, port: int, *, shutdown_timeout: float,
                keepalive_timeout: float, sockets: Sequence[socket.socket] = ()) -> None:
    """Serve ``app`` until a signal arrives; raises StartupError if it cannot start."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout,
                           keepalive_timeout=keepalive_timeout, handle_signals=False)
    # Handlers first, so a signal during start-up is a graceful stop once started. A supervisor's
    # worker is forked with these signals blocked (pending ones arrive now), so none is lost.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        await runner.setup()
    except (OSError, StartupError) as exc:
        await runner.cleanup()  # the cleanup contexts that did start (S3 clients, the pool)
        if isinstance(exc, StartupError):  # a cleanup context said what failed
            raise
        raise StartupError(f"start-up failed: {os_reason(exc)}") from exc
    try:
        sites: list[web.BaseSite] = ([web.SockSite(runner, sock) for sock in sockets] if sockets
                                     else [web.TCPSite(runner, host, port, reuse_address=True)])
        try:
            for site in sites:
                await site.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {os_reason(exc)}") from exc
        log.info("listening on %s", ", ".join(bound_addresses(sites)))
        await stop.wait()
        log.info("stopping: no new connections; in-flight requests get %gs", shutdown_timeout)
    finally:
        open_transports = [handler.transport for handler in runner.server.connections
                           if handler.transport is not None] if runner.server else []
        await runner.cleanup()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(shutdown_timeout):
                await flush(open_transports)
    log.info("stopped")


async def flush(transports: Sequence[asyncio.BaseTransport]) -> None:
    """Closed transports still hold up to a buffer's worth of the last response; keep the loop
    running until the kernel has it, or the process would exit and cut those bytes off."""
    # A transport offers no event for "buffer empty" once closed: poll it.
    while any(isinstance(t, asyncio.WriteTransport) and t.get_write_buffer_size() > 0  # noqa: ASYNC110
              for t in transports):
        await asyncio.sleep(FLUSH_POLL_SECONDS)
