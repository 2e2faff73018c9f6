"""Start-up failures in the operator's words: ``StartupError`` and how addresses are named."""

from __future__ import annotations

import os
import socket


class StartupError(Exception):
    """The server could not start; the message is one line for the operator."""


def os_reason(exc: OSError) -> str:
    """The system's words for an OSError (asyncio's own ``strerror`` repeats the address)."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"
