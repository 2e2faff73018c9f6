"""Client connections: aiohttp's request handler with the limits a hostile client meets first.

- **Header timeout.** A request head must be complete ``header_timeout`` after its first byte
  (a connection's first request: after the connection opened), and at most ``MAX_HEAD_BYTES``
  long in all; a slow head (slowloris) is answered 408 and closed, a connection that sends
  nothing at all is closed silently.
- **Connection cap.** At most ``max_connections`` per serving process. A new connection beyond it
  closes the oldest idle keep-alive connection (then the oldest with a head still arriving); if
  every connection is busy answering, the newcomer gets 503 and is closed.
- **Parser refusals in our shape.** A request aiohttp's parser refuses (a raw control byte,
  conflicting framing, an over-long line) gets the error contract's JSON body and headers, with
  nothing of the request echoed, and one access-log line at INFO: request id, client, status,
  code and a reason taken from the parser's fixed wording, never the request's bytes and never a
  traceback.

aiohttp builds one ``RequestHandler`` (an asyncio protocol) per connection; ``GuardedRunner``
makes it build a ``GuardedHandler`` instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from imgproxy.config import LogFormat
from imgproxy.errors import (
    HeaderTooLarge,
    MalformedRequest,
    Overloaded,
    ProxyError,
    RequestTimeout,
    UriTooLong,
)
from imgproxy.protocol import accesslog
from imgproxy.protocol.contract import SERVER_NAME, error_response, new_request_id
from imgproxy.protocol.media import NOSNIFF

log = logging.getLogger("imgproxy.connections")
# The two must differ: LineTooLong says which limit it hit, not which line.
MAX_REQUEST_LINE: Final = 8192
MAX_HEADER_LINE: Final = 8190
MAX_HEADERS: Final = 64
MAX_HEAD_BYTES: Final = 32 * 1024  # a request head in all; memory per connection stays small
# The proxy's own buffer per connection pauses a writer above this (asyncio's default: 64 KiB),
# so a client that stops reading holds at most about this plus one chunk here.
WRITE_HIGH_WATER: Final = 16 * 1024
_APOSTROPHE: Final = re.compile(r"(?<=[A-Za-z])'(?=[a-z])")  # "can't": wording, not a quote
_REASON_END: Final = re.compile(r"[:\n'\"(\[{]")  # where the wording ends and quoted bytes begin
# A connection closed by these limits: why (the ``imgproxy_connections_closed_total`` label).
ConnectionObserver = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    header_timeout: float
    max_connections: int
    send_buffer: int = 0  # SO_SNDBUF for each connection; 0: the kernel's autotuning
    log_format: LogFormat = LogFormat.LOGFMT
    observe: ConnectionObserver = lambda reason: None


def parser_reason(exc: HttpProcessingError) -> str:
    """A short code from the parser's own fixed wording (which precedes any quoted bytes)."""
    if isinstance(exc, LineTooLong):
        return "line_too_long"
    if isinstance(exc, BadHttpMethod):
        return "bad_method"
    text = _REASON_END.split(_APOSTROPHE.sub("", exc.message or ""), maxsplit=1)[0]
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:48].strip("_")
    return slug or exc.__class__.__name__.lower()


def refusal(exc: HttpProcessingError) -> ProxyError:
    """The error a client sees for a request the parser refused."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == MAX_REQUEST_LINE:
            return UriTooLong("request line too long")
        return HeaderTooLarge("header line too long")
    return MalformedRequest("refused by the HTTP parser")


def raw_response(error: ProxyError, request_id: str) -> bytes:
    """A complete ``Connection: close`` answer for a connection with no request object."""
    body = json.dumps({"error": error.code, "message": error.public_message,
                       "request_id": request_id}).encode()
    headers = {
        hdrs.CONTENT_TYPE: "application/json; charset=utf-8",
        hdrs.CONTENT_LENGTH: str(len(body)),
        hdrs.CACHE_CONTROL: "no-store",
        **NOSNIFF,
        "X-Request-Id": request_id,
        hdrs.SERVER: SERVER_NAME,
        hdrs.DATE: formatdate(usegmt=True),
        hdrs.CONNECTION: "close",
        **error.headers,
    }
    head = f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


class GuardedHandler(RequestHandler):
    """One client connection (see the module docstring for its limits)."""

    def __init__(self, manager: web.Server, *, policy: ConnectionPolicy, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._policy = policy
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # of a request head still arriving; 0: none is
        self._heads = 0  # request heads parsed ...
        self._answers = 0  # ... and answers finished: busy while they differ
        self._idle_since = time.monotonic()
        self._peer = "-"

    # -- state --------------------------------------------------------------------------------

    @property
    def is_busy(self) -> bool:
        return self._heads > self._answers

    @property
    def is_idle(self) -> bool:
        """Waiting for a request, none of whose bytes have arrived: safe to close."""
        return not self.is_busy and not self._head_bytes and self.transport is not None

    @property
    def is_receiving_head(self) -> bool:
        return not self.is_busy and self._head_bytes > 0 and self.transport is not None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if isinstance(transport, asyncio.WriteTransport):
            transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self._policy.send_buffer:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._policy.send_buffer)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else "-"
        self._start_head_timer()  # the first request's head: from the connection's opening
        self._enforce_cap()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        if not self.is_busy:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._start_head_timer()
        heads_before = self._request_count
        super().data_received(data)
        parsed = self._request_count - heads_before
        if parsed:
            self._heads += parsed
            self._head_bytes = 0
            self._cancel_head_timer()
        elif self._head_bytes > MAX_HEAD_BYTES and not self.is_busy:
            self._close_with(HeaderTooLarge("request head too large"), "header_too_large")

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    # -- aiohttp hooks --------------------------------------------------------------------------

    async def finish_response(self, request: Any, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answers += 1
            if not self.is_busy:
                self._idle_since = time.monotonic()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's answer to a refused request (and to an exception past the middleware)."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; the connection is cut instead")
        request_id = new_request_id(None)
        if isinstance(exc, HttpProcessingError):
            error = refusal(exc)
            self._policy.observe(error.code)
            reason = parser_reason(exc)
        else:  # the middleware answers every exception; reaching here is a bug of ours
            log.error("request_id=%s unhandled %s past the middleware", request_id,
                      exc.__class__.__name__ if exc else f"status {status}", exc_info=exc)
            error, reason = ProxyError("past the middleware"), "internal"
        response = error_response(error, request_id)
        response.headers["X-Request-Id"] = request_id
        response.headers[hdrs.SERVER] = SERVER_NAME
        response.force_close()
        self._log_refusal(request_id, error, reason, response.content_length or 0)
        return response

    # -- limits ---------------------------------------------------------------------------------

    def _start_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self._loop.call_later(self._policy.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self.is_busy:
            return
        if self._head_bytes:
            self._close_with(RequestTimeout("request head not complete in time"), "header_timeout")
        else:  # never sent a byte (a port scan, a browser's unused preconnect): no answer owed
            self._policy.observe("no_request")
            self.force_close()

    def _enforce_cap(self) -> None:
        others = [h for h in self._manager.connections if h is not self and h.transport is not None] \
            if self._manager is not None else []
        if len(others) < self._policy.max_connections:
            return
        guarded = [h for h in others if isinstance(h, GuardedHandler)]
        idle = [h for h in guarded if h.is_idle] or [h for h in guarded if h.is_receiving_head]
        if idle:
            victim = min(idle, key=lambda h: h._idle_since)
            self._policy.observe("evicted_idle")
            victim.force_close()
            return
        self._close_with(Overloaded(f"{len(others)} connections busy"), "over_limit")

    def _close_with(self, error: ProxyError, reason: str) -> None:
        """Answer ``error`` on a connection with no request in flight, then close it."""
        self._cancel_head_timer()
        transport = self.transport
        if transport is None:
            return
        request_id = new_request_id(None)
        payload = raw_response(error, request_id)
        self._policy.observe(reason)
        self._log_refusal(request_id, error, reason, len(payload))
        transport.write(payload)
        self.force_close()  # closes once the answer is flushed

    def _log_refusal(self, request_id: str, error: ProxyError, reason: str, sent: int) -> None:
        accesslog.write({
            "request_id": request_id,
            "method": "-",
            "route": "-",
            "status": str(error.status),
            "bytes": str(sent),
            "duration_ms": "0.0",
            "client": self._peer,
            "error": error.code,
            "reason": reason,
        }, self._policy.log_format)


class GuardedServer(web.Server):
    """The protocol factory: one ``GuardedHandler`` per connection."""

    def __init__(self, *args: Any, policy: ConnectionPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, policy=self.policy, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are ``GuardedHandler``s with ``policy``."""

    def __init__(self, app: web.Application, *, policy: ConnectionPolicy, **kwargs: Any) -> None:
        kwargs.update(max_line_size=MAX_REQUEST_LINE, max_field_size=MAX_HEADER_LINE,
                      max_headers=MAX_HEADERS)
        super().__init__(app, **kwargs)
        self._policy = policy

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return GuardedServer(server.request_handler, request_factory=server.request_factory,
                             handler_cancellation=server.handler_cancellation, loop=server._loop,
                             policy=self._policy, **server._kwargs)
