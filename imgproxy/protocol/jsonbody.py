"""Reading a bounded JSON request body (``POST /sign``): every limit checked before the step it
protects, every refusal a specific 4xx (or 503) that never echoes the body.

In order:

- **Media type.** ``Content-Type`` must be ``application/json``, with no ``charset`` or
  ``charset=utf-8`` (case-insensitive, quoted or not; other parameters are ignored): anything
  else is 415 ``unsupported_media_type``. An absent or empty ``Content-Type`` is read as JSON,
  since ``http.client``, ``requests.post(data=...)`` and many scripts send none; a body that is
  then not JSON is a 400 like any other. (``curl -d`` sends ``application/x-www-form-urlencoded``
  and is refused: add ``-H 'Content-Type: application/json'``.)
- **Size.** A ``Content-Length`` over ``max_bytes`` is 413 ``body_too_large`` before a byte is
  read; a chunked body is read only until it passes ``max_bytes``, then 413.
- **Admission.** At most ``MAX_BODIES`` bodies per process are being read or parsed at once;
  the next request is refused at once with 503 ``overloaded`` and ``Retry-After``, never
  queued, so memory is bounded by ``MAX_BODIES * max_bytes`` plus one parse.
- **Time.** The whole body must arrive within ``time_limit`` seconds (``server.body_timeout``),
  else 408 ``request_timeout``.
- **Framing.** A body the HTTP parser refuses half-way, or a connection that closes before the
  body is complete, is 400 ``malformed_request`` (logged as such, not as a 500). aiohttp's C
  parser does not wake the reader on a bad chunk after the first: that body stalls, then 408.
- **Strict JSON** (RFC 8259), each problem a 400 ``bad_request`` naming it: not UTF-8 (no BOM, no
  UTF-16 guessing); a syntax error (its position, not its text); an integer of more than
  ``MAX_INT_DIGITS`` digits (Python's int-string limit is never reached); a number that is
  infinite as a float (``1e999``); ``NaN``/``Infinity``, which are not JSON; nesting deeper than
  the interpreter's recursion limit (the C scanner stops there in microseconds: cheaper than any
  pre-scan in Python, which costs more than the parse on a 1 MiB body of brackets).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from aiohttp import StreamReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from imgproxy.errors import (
    BadRequest,
    BodyTooLarge,
    MalformedRequest,
    Overloaded,
    RequestTimeout,
    UnsupportedMediaType,
)

MAX_BODIES: Final = 8  # per process: bodies being read or parsed at once
MAX_INT_DIGITS: Final = 20  # more than any count, size or unix time needs (2**64 has 20)
JSON_MEDIA_TYPE: Final = "application/json"


class BodySlots:
    """Admission for body reads: at most ``size`` at once; the next is refused, not queued.

    Touched only on the event loop thread, so a plain counter is enough."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0

    @contextmanager
    def take(self) -> Iterator[None]:
        if self.in_use >= self.size:
            raise Overloaded(f"{self.in_use} request bodies already being read",
                             public_message="Too many request bodies are being read at once; retry shortly.")
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


async def read_json(request: web.Request, slots: BodySlots, *, max_bytes: int, time_limit: float) -> Any:
    """The request's body as a JSON value, within every limit in the module docstring; ``slots``
    is the app's one ``BodySlots(MAX_BODIES)``."""
    check_media_type(request.headers.get(hdrs.CONTENT_TYPE))
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    with slots.take():
        body = await read_body(request.content, max_bytes, time_limit)
        return parse_json(body)


def check_media_type(header: str | None) -> None:
    """``None`` if the body may be read as UTF-8 JSON, else ``UnsupportedMediaType``."""
    if header is None or not header.strip():
        return
    media_type, *params = header.split(";")
    if media_type.strip().lower() != JSON_MEDIA_TYPE:
        raise UnsupportedMediaType(f"content-type {_short(media_type.strip())!r}")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaType(f"charset {_short(value.strip())!r}")


async def read_body(content: StreamReader, max_bytes: int, time_limit: float) -> bytes:
    """All of a body, refusing it once it passes ``max_bytes`` or outlasts ``time_limit``."""
    buffer = bytearray()
    try:
        async with asyncio.timeout(time_limit):
            while chunk := await content.readany():
                if len(buffer) + len(chunk) > max_bytes:
                    raise _too_large(max_bytes)
                buffer += chunk
    except TimeoutError:
        raise RequestTimeout(f"body incomplete after {time_limit:g}s ({len(buffer)} bytes)",
                             public_message=f"The request body did not arrive within {time_limit:g} s."
                             ) from None
    except (HttpProcessingError, web.RequestPayloadError) as exc:
        raise MalformedRequest(f"body framing: {type(exc).__name__}",
                               public_message="The request body's framing is malformed.") from None
    except ConnectionError:
        raise MalformedRequest(f"connection lost after {len(buffer)} body bytes",
                               public_message="The connection closed before the request body was complete."
                               ) from None
    return bytes(buffer)


class _Refused(ValueError):
    """A number the strict parser will not read; its text is the public message."""


def parse_json(body: bytes) -> Any:
    """Strict RFC 8259 JSON from UTF-8 bytes, or ``BadRequest`` naming what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"The body is not UTF-8 (byte {exc.start} is not).") from None
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:  # its text is a position and a fixed phrase, never the body's
        raise _bad(f"The body is not valid JSON: {exc}.") from None
    except _Refused as exc:
        raise _bad(f"The body is not JSON this server accepts: {exc}.") from None
    except RecursionError:
        raise _bad("The body is not JSON this server accepts: it is nested too deeply.") from None


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("a number is too large")
    return value


def _parse_constant(name: str) -> float:
    raise _Refused(f"{name} is not a JSON number")


def _bad(message: str) -> BadRequest:
    return BadRequest(message, public_message=message)


def _too_large(max_bytes: int) -> BodyTooLarge:
    return BodyTooLarge(f"body over {max_bytes} bytes",
                        public_message=f"The request body is larger than {max_bytes} bytes, the most "
                                       "this server accepts.")


def _short(text: str) -> str:
    return text if len(text) <= 64 else text[:64] + "..."
