"""Real sockets between the proxy and its storage, for tests that must observe the wire.

``TcpRelay`` forwards every connection to an upstream (moto) and counts the bytes that flow each
way, per connection, and when each upstream connection closed: "no object bytes were read" and
"the S3 connection was released" become measurements, not mocks. ``Blackhole`` accepts
connections and never answers (a storage that hangs). Both run on the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Link:
    """One relayed connection: the proxy's side and its own connection to the upstream."""

    opened_at: float
    from_upstream: int = 0  # bytes the upstream (S3) sent back towards the proxy
    to_upstream: int = 0  # bytes the proxy sent towards the upstream
    closed_at: float | None = None  # when the connection to the upstream was closed
    sent: bytearray = field(default_factory=bytearray)  # what the proxy sent (requests are small)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class TcpRelay:
    """A loopback TCP forwarder to ``upstream`` (an ``http://host:port`` URL) that counts bytes."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None, upstream
        assert parts.port is not None, upstream
        self._target = (parts.hostname, parts.port)
        self._server: asyncio.Server | None = None
        self.links: list[Link] = []
        # When set, each connection stops forwarding (and reading) after this many bytes from
        # the upstream: a storage that stalls mid-body.
        self.stall_after: int | None = None

    async def start(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the relay first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bytes_from_upstream(self) -> int:
        return sum(link.from_upstream for link in self.links)

    @property
    def bytes_to_upstream(self) -> int:
        return sum(link.to_upstream for link in self.links)

    def requests_sent(self) -> int:
        """How many HTTP requests the proxy sent through the relay (their request lines)."""
        return sum(bytes(link.sent).count(b" HTTP/1.1\r\n") for link in self.links)

    def open_links(self) -> list[Link]:
        return [link for link in self.links if link.is_open]

    async def wait_until_closed(self, link: Link, timeout: float) -> float | None:
        """Wait up to ``timeout`` seconds for ``link``'s upstream side to close; when it did."""
        deadline = time.monotonic() + timeout
        while link.is_open and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return link.closed_at

    def _budget(self, link: Link) -> int:
        if self.stall_after is None:
            return 64 * 1024
        return max(0, min(64 * 1024, self.stall_after - link.from_upstream))

    async def _accept(self, down_reader: asyncio.StreamReader, down_writer: asyncio.StreamWriter) -> None:
        link = Link(opened_at=time.monotonic())
        self.links.append(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            link.closed_at = time.monotonic()
            down_writer.close()
            return

        def close_both() -> None:
            if link.closed_at is None:
                link.closed_at = time.monotonic()
            up_writer.close()
            down_writer.close()

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
            try:
                while data := await reader.read(self._budget(link) if upstream else 64 * 1024):
                    if upstream:
                        link.from_upstream += len(data)
                    else:
                        link.to_upstream += len(data)
                        link.sent += data
                    writer.write(data)
                    await writer.drain()
                    if upstream and self._budget(link) == 0:
                        await asyncio.Event().wait()  # stalled: hold the connection, send nothing
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                # Either side going away ends the whole link, as a proxying load balancer would.
                close_both()

        link.tasks = [
            asyncio.create_task(pump(up_reader, down_writer, upstream=True)),
            asyncio.create_task(pump(down_reader, up_writer, upstream=False)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links:
            for task in link.tasks:
                task.cancel()
        for link in self.links:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


class Blackhole:
    """A TCP server that accepts connections, reads whatever is sent, and never answers."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.accepted = 0

    async def start(self) -> Blackhole:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() the blackhole first"
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        with contextlib.suppress(OSError):
            while await reader.read(64 * 1024):
                pass
        writer.close()

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
