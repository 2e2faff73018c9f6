"""The workers' address: reserved once by the supervisor, then one listening socket per worker.

Every socket is ``SO_REUSEPORT`` on the same address, so the kernel spreads new connections
evenly over the workers (see ``supervisor.py`` for why not one shared socket).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Final

LISTEN_BACKLOG: Final = 128  # each worker socket's queue of connections not yet accepted


def _share_address(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if sock.family == socket.AF_INET6:  # "::" must not also claim IPv4: 0.0.0.0 may be next
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def reserve_addresses(host: str, port: int) -> list[socket.socket]:
    """Bound, not listening, ``SO_REUSEPORT`` sockets: one per address ``host`` resolves to
    (``localhost`` is 127.0.0.1 and ::1, ``""`` is 0.0.0.0 and ::), as a single process's
    aiohttp site binds them, all on one port (port 0: the first one's). They hold the port for
    the workers' own listening sockets (``listen_on``) and fail at once if it is taken.
    OSError if an address is unusable."""
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()  # (family, host): getaddrinfo may repeat an address
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this kernel lacks (IPv6 disabled): skipped, as asyncio does
                continue
            sockets.append(sock)
            _share_address(sock)
            sock.bind((address[0], sockets[0].getsockname()[1] if len(sockets) > 1 else port,
                       *address[2:]))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(f"no usable address for {host!r}")
    return sockets


def listen_on(reserved: Sequence[socket.socket]) -> list[socket.socket]:
    """A worker's own listening sockets on the reserved addresses. With one ``SO_REUSEPORT``
    socket per worker the kernel spreads new connections evenly over the workers; on one shared
    socket the first worker to wake accepts a whole burst (asyncio accepts in a loop) and
    keep-alive pins those clients to it while the other workers idle."""
    sockets: list[socket.socket] = []
    try:
        for twin in reserved:
            sock = socket.socket(twin.family, twin.type, twin.proto)
            sockets.append(sock)
            _share_address(sock)
            sock.bind(twin.getsockname())
            sock.listen(LISTEN_BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
