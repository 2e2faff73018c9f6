"""Raw HTTP/1.1 over a plain socket, as a hostile client writes it: bytes no client library would
send (control characters, conflicting framing, half a request head), and clients that read
slowly or never. Shared by the tests that attack a real ``imgproxy serve``."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

READ_TIMEOUT = 10.0


@dataclass(frozen=True)
class RawReply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def connect(port: int, *, rcvbuf: int | None = None, source: str | None = None,
            timeout: float = READ_TIMEOUT) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port``; ``rcvbuf`` (set before connecting) keeps the
    kernel from reading ahead on a client's behalf; ``source`` binds another loopback address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def read_reply(sock: socket.socket, *, head_only: bool = False) -> RawReply:
    """One response: the head, then Content-Length bytes of body (or up to EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if not head_only:
        length = int(headers.get("content-length", "-1"))
        while (length < 0 or len(body) < length) and (chunk := sock.recv(65536)):
            body += chunk
    return RawReply(status, headers, body, head + b"\r\n\r\n" + body)


def exchange(port: int, request: bytes, **options: Any) -> RawReply:
    """Send ``request`` on a new connection and read one response (a HEAD's: the head only)."""
    with connect(port, **options) as sock:
        sock.sendall(request)
        return read_reply(sock, head_only=request.startswith(b"HEAD "))


def get(target: str, *headers: str) -> bytes:
    """A GET request head, target and header lines written as given."""
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


TCP_CLOSE = 7  # linux/tcp_states.h: after a reset
TCP_CLOSE_WAIT = 8  # the peer sent FIN


def is_dropped(sock: socket.socket, within: float) -> bool:
    """Whether the server closes or resets ``sock`` within ``within`` seconds, *without reading
    from it* (a client that does not read must stay one): the kernel's TCP state says so."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        if state in (TCP_CLOSE, TCP_CLOSE_WAIT):
            return True
        time.sleep(0.05)
    return False


def is_closed(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds, reading and
    discarding whatever arrives before that."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False
