"""A TCP relay in its own process: one fixed endpoint in front of a server that is restarted.

A benchmark points the proxy's ``endpoint_url`` at the relay and the relay at moto; to restart
S3 it takes the relay down (open connections are reset, new ones closed at once: S3 is
unreachable, not empty), replaces moto, and points the relay at the new one. The relay is a
process of its own so that its CPU is a column of its own. It counts the bytes the upstream sent
(``RelayProcess.received``: what S3 sent the proxy). Used by ``bench_soak.py``, ``bench_meta.py``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Final

from harness import HOST, BenchError, receive, spawned

CHUNK: Final = 64 * 1024
STOP: Final = "stop"  # a command: the relay process ends
COUNT: Final = "count"  # a command: answer the bytes received from upstream so far


class Relay:
    """In the relay process: accept, connect to the upstream port, copy both ways; down: none."""

    def __init__(self) -> None:
        self.upstream: int | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.received = 0  # bytes the upstream sent, all connections

    def point(self, port: int | None) -> None:
        self.upstream = port
        if port is None:
            for writer in list(self.writers):
                writer.transport.abort()  # an unreachable S3: connections reset, not finished
            self.writers.clear()

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = self.upstream
        if port is None:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, port)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self.writers |= pair
        try:
            await asyncio.gather(self.pump(reader, up_writer), self.pump(up_reader, writer, counted=True),
                                 return_exceptions=True)
        finally:
            self.writers -= pair

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   counted: bool = False) -> None:
        """Copy until EOF, then close the other side (moto closes after every response)."""
        try:
            while data := await reader.read(CHUNK):
                if counted:
                    self.received += len(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            writer.transport.abort()
        else:
            writer.close()


def relay_main(conn: Connection) -> None:
    """The relay process: send its port, then apply each command (an upstream port, or None:
    down) and answer "ok", until STOP or the pipe closes (the bench process has gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the bench's to handle; it stops us
    asyncio.run(relay_serve(conn))


async def relay_serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay()
    server = await asyncio.start_server(relay.accept, HOST, 0, backlog=512)
    conn.send(int(server.sockets[0].getsockname()[1]))
    while (command := await loop.run_in_executor(None, receive, conn, STOP)) != STOP:
        if command == COUNT:
            conn.send(relay.received)
            continue
        relay.point(command if isinstance(command, int) else None)
        conn.send("ok")
    server.close()
    relay.point(None)


class RelayProcess:
    """The bench's end of the relay process: its endpoint, its pid, where it forwards to."""

    def __init__(self, conn: Connection, pid: int, port: int) -> None:
        self._conn = conn
        self.pid = pid
        self.endpoint = f"http://{HOST}:{port}"

    def point(self, port: int | None) -> None:
        """Forward new connections to ``port``; None: down (blocking: call from a thread)."""
        self._conn.send(port)
        try:
            if not self._conn.poll(30) or self._conn.recv() != "ok":
                raise BenchError("the relay did not answer")
        except EOFError:
            raise BenchError("the relay process died") from None


    def received(self) -> int:
        """The bytes the upstream has sent through the relay so far (blocking)."""
        self._conn.send(COUNT)
        try:
            if not self._conn.poll(30):
                raise BenchError("the relay did not answer")
            count = self._conn.recv()
        except EOFError:
            raise BenchError("the relay process died") from None
        if not isinstance(count, int):
            raise BenchError(f"the relay answered {count!r}")
        return count


@contextmanager
def relay_process() -> Iterator[RelayProcess]:
    """The relay, started and down (pointed at nothing) until ``point``; stopped on exit."""
    with spawned(relay_main, name="bench-relay", stop=STOP) as (conn, pid):
        try:
            if not conn.poll(60):
                raise BenchError("the relay process did not start")
            port = conn.recv()
        except EOFError:
            raise BenchError("the relay process died") from None
        yield RelayProcess(conn, pid, port)
