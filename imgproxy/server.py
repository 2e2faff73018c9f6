"""Running the app on a socket until SIGTERM/SIGINT, then stopping gracefully.

On a signal the listener closes first, in-flight requests get ``shutdown_timeout`` seconds to
finish, and then the cleanup contexts close the S3 clients and the image pool.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

from aiohttp import web

log = logging.getLogger("imgproxy")


def bound_addresses(site: web.TCPSite) -> list[str]:
    server = site._server
    if not isinstance(server, asyncio.Server):
        return [site.name]
    found = []
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        found.append(f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}")
    return found


async def serve(app: web.Application, host: str, port: int, *, shutdown_timeout: float,
                keepalive_timeout: float) -> None:
    """Serve ``app`` until a signal arrives; raises OSError if the address cannot be bound."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout,
                           keepalive_timeout=keepalive_timeout, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        log.info("listening on %s", ", ".join(bound_addresses(site)))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("stopping: no new connections; in-flight requests get %gs", shutdown_timeout)
    finally:
        await runner.cleanup()
    log.info("stopped")
