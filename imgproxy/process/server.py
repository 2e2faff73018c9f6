"""Running the app on a socket until SIGTERM/SIGINT, then stopping gracefully.

On a signal the listener closes first, in-flight requests get ``shutdown_timeout`` seconds to
finish, and then the cleanup contexts close the S3 clients and the image pool. aiohttp's
``AppRunner.cleanup`` does exactly that: it closes the sites, then waits for every handler still
running (a streamed body is written inside its handler, so a long download counts) for up to
``shutdown_timeout`` before cancelling it, and only then runs the cleanup contexts.

``sockets`` are listening sockets opened elsewhere (a supervisor's worker opens its own).
If start-up fails (an address in use, a cleanup context raising), whatever did start is closed
again and ``StartupError`` says what failed in one line. Connections are ``GuardedHandler``s
(``connections.py``): header timeout, connection cap, parser refusals in the error contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Sequence
from typing import Final

from aiohttp import web

from imgproxy.config import LogFormat
from imgproxy.protocol.connections import ConnectionPolicy, GuardedRunner
from imgproxy.protocol.sendwatch import reset
from imgproxy.startup import StartupError, os_reason, socket_url
from imgproxy.web import appkeys
from imgproxy.web.appkeys import LOG_FORMAT, METRICS, SEND_WATCHDOG

log = logging.getLogger("imgproxy")
FLUSH_POLL_SECONDS = 0.01
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def bound_addresses(sites: Sequence[web.BaseSite]) -> list[str]:
    found = []
    for site in sites:
        server = site._server
        if not isinstance(server, asyncio.Server):
            found.append(site.name)
            continue
        found += [socket_url(sock) for sock in server.sockets]
    return found


def make_runner(app: web.Application) -> GuardedRunner:
    """The runner for ``app`` (a ``create_app`` product) with its config's connection limits."""
    server = app[appkeys.CONFIG].server
    policy = ConnectionPolicy(header_timeout=server.header_timeout,
                              max_connections=server.max_connections,
                              send_buffer=server.send_buffer,
                              log_format=app.get(LOG_FORMAT, LogFormat.LOGFMT),
                              observe=app[METRICS].observe_connection_closed)
    return GuardedRunner(app, policy=policy, access_log=None, handle_signals=False,
                         shutdown_timeout=server.shutdown_timeout,
                         keepalive_timeout=server.keepalive_timeout)


async def serve(app: web.Application, host: str, port: int, *,
                sockets: Sequence[socket.socket] = ()) -> None:
    """Serve ``app`` until a signal arrives; raises StartupError if it cannot start."""
    shutdown_timeout = app[appkeys.CONFIG].server.shutdown_timeout
    runner = make_runner(app)
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
        deadline = loop.time() + shutdown_timeout  # one budget for the handlers and the flush
        # Answers still being written then (to clients that do not read) are cut off, so no
        # handler waits past the deadline on a client (aiohttp alone would wait twice as long).
        cutoff = loop.call_at(deadline, app[SEND_WATCHDOG].cut_all, "shutdown")
        open_transports = [handler.transport for handler in runner.server.connections
                           if handler.transport is not None] if runner.server else []
        await runner.cleanup()
        cutoff.cancel()
        await flush(open_transports, deadline)
    log.info("stopped")


async def flush(transports: Sequence[asyncio.BaseTransport], deadline: float) -> None:
    """Closed transports still hold up to a buffer's worth of the last response; keep the loop
    running until the kernel has it, or the process would exit and cut those bytes off. What a
    client has not taken by ``deadline`` (loop time) is dropped: it does not hold up the exit."""
    writers = [t for t in transports if isinstance(t, asyncio.WriteTransport)]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            # A transport offers no event for "buffer empty" once closed: poll it.
            while any(t.get_write_buffer_size() > 0 for t in writers):  # noqa: ASYNC110
                await asyncio.sleep(FLUSH_POLL_SECONDS)
    for transport in writers:
        if transport.get_write_buffer_size() > 0 and isinstance(transport, asyncio.Transport):
            reset(transport)
