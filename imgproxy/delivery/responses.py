"""Writing the chosen answer to the client: streamed object, HEAD, or 304.

Streaming is a state machine: set every header, ``prepare()``, write piece by piece (each write
waits for the socket to drain, so memory stays flat), ``write_eof()``; the S3 body is closed in
``finally`` so a client that goes away frees the S3 connection at once.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http_writer import StreamWriter

from imgproxy.facts import RequestFacts
from imgproxy.protocol.conditional import format_http_date
from imgproxy.protocol.media import NOSNIFF, needs_sniffing, safety_headers, sniff_type
from imgproxy.protocol.sendwatch import SendWatch
from imgproxy.storage.body import ObjectBody
from imgproxy.storage.objects import NotModified, ObjectMeta
from imgproxy.transform.variants import VariantAnswer

log = logging.getLogger("imgproxy.respond")
# Bytes per read from S3 and per write to the client. The write waits for the client after each
# piece (``PacedResponse``), so one that stops reading holds about two pieces here, not 150 KiB.
# 16 KiB cost 5-10 % of streaming throughput; 32 KiB measured as fast as 64 (README).
CHUNK_BYTES: Final = 32 * 1024


class PacedResponse(web.StreamResponse):
    """A streamed response whose ``write`` waits for the client after every piece (aiohttp's own
    waits only once 64 KiB have gone out since the last wait): bounded memory per slow client."""

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        writer = self._payload_writer
        if not isinstance(writer, StreamWriter) or self._eof_sent:
            await super().write(data)  # aiohttp's own checks and errors
            return
        await writer.write(data, LIMIT=0)


def object_headers(
    meta: ObjectMeta, content_type: str, cache_control: str, inline_types: tuple[str, ...]
) -> dict[str, str]:
    headers = {
        hdrs.CONTENT_TYPE: content_type,
        hdrs.CACHE_CONTROL: cache_control,
        hdrs.ACCEPT_RANGES: "bytes",
        **safety_headers(content_type, inline_types),
    }
    if meta.etag:
        headers[hdrs.ETAG] = meta.etag
    if meta.last_modified:
        headers[hdrs.LAST_MODIFIED] = format_http_date(meta.last_modified)
    if meta.content_range:
        headers[hdrs.CONTENT_RANGE] = meta.content_range
    return headers


def variant_response(answer: VariantAnswer, cache_control: str,
                     inline_types: tuple[str, ...]) -> web.Response:
    """A transform's answer: the variant, its headers alone (a HEAD whose size was known without
    its bytes: the same headers, Content-Length included), or 304 when the client has it."""
    headers: dict[str, str] = {hdrs.CACHE_CONTROL: cache_control, hdrs.ETAG: answer.etag}
    if answer.vary_accept:
        headers[hdrs.VARY] = "Accept"
    if answer.head is None:
        return web.Response(status=304, headers={**headers, **NOSNIFF})
    media_type = answer.head.media_type
    headers.update({hdrs.CONTENT_TYPE: media_type, **safety_headers(media_type, inline_types)})
    if answer.body is None:
        headers[hdrs.CONTENT_LENGTH] = str(answer.head.length)
        return web.Response(headers=headers)
    return web.Response(body=answer.body, headers=headers)


def not_modified(answer: NotModified, cache_control: str) -> web.Response:
    """304 with the validators and caching policy, and no body (RFC 9110 15.4.5)."""
    headers = {hdrs.CACHE_CONTROL: cache_control, **NOSNIFF}
    if answer.etag:
        headers[hdrs.ETAG] = answer.etag
    if answer.last_modified:
        headers[hdrs.LAST_MODIFIED] = format_http_date(answer.last_modified)
    return web.Response(status=304, headers=headers)


async def send_head(
    request: web.Request, meta: ObjectMeta, content_type: str, cache_control: str,
    inline_types: tuple[str, ...], status: int = 200,
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=status, headers=object_headers(meta, content_type, cache_control, inline_types))
    response.content_length = meta.content_length
    await response.prepare(request)
    await response.write_eof()
    return response


async def stream_object(
    request: web.Request, meta: ObjectMeta, body: ObjectBody, cache_control: str,
    inline_types: tuple[str, ...], facts: RequestFacts, watch: SendWatch | None,
    status: int | None = None,
) -> web.StreamResponse:
    """Stream ``body`` to the client under its connection's send ``watch``, counting the bytes
    sent (or why not) in ``facts``; always closes ``body``. ``status``: 200 or 206 by the range
    unless given (a placeholder's)."""
    try:
        first = await body.read(CHUNK_BYTES)
        content_type = meta.content_type or ""
        if needs_sniffing(content_type):
            content_type = sniff_type(first)
        response = PacedResponse(
            status=status or (206 if meta.is_partial else 200),
            headers=object_headers(meta, content_type, cache_control, inline_types),
        )
        response.content_length = meta.content_length
        if watch is not None:
            watch.on_stall = body.on_client_stall  # its S3 connection is not the client's to hold
        sent = 0
        try:
            await response.prepare(request)
            chunk = first
            while chunk:
                if watch is not None:
                    watch.handed += len(chunk)  # handed to the transport inside write()
                await response.write(chunk)
                sent += len(chunk)
                facts.body_bytes = sent
                if watch is not None and watch.is_cut:
                    raise ConnectionResetError("cut off by the send watch")
                chunk = await body.read(CHUNK_BYTES)
            await response.write_eof()
            if watch is not None and watch.is_cut:
                raise ConnectionResetError("cut off by the send watch")
        except ConnectionError:
            reason = watch.reason if watch is not None and watch.reason else "client_gone"
            facts.aborted = reason
            log.info("stream aborted (%s) after %d bytes", reason, sent)
        except Exception as exc:
            # Headers are sent: the only honest signal left is to cut the connection short.
            facts.aborted = "storage_failed"
            log.error("storage failed mid-stream after %d bytes: %s", sent, exc.__class__.__name__)
            if request.transport is not None:
                request.transport.close()
        return response
    finally:
        body.close()
