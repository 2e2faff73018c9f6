"""Originals: delivering an object as stored (no transform), with S3 doing the heavy lifting.

Validators and a single range are handed to S3, so S3 answers 304/412/206 and no bytes are
read and discarded. The forms S3 compares as one exact string (ETag lists, weak tags, ``*``)
are evaluated here against the ETag of one HEAD instead.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from imgproxy.conditional import (
    ByteRange,
    Decision,
    evaluate,
    needs_local_evaluation,
    parse_preconditions,
    parse_range,
    without_etag_validators,
)
from imgproxy.errors import PreconditionFailed
from imgproxy.media import SNIFF_BYTES, needs_sniffing, sniff_type
from imgproxy.respond import not_modified, send_head, stream_object
from imgproxy.storage.s3 import NotModified, ObjectMeta, S3Source


async def respond_original(request: web.Request, source: S3Source, key: str,
                           inline_types: tuple[str, ...]) -> web.StreamResponse:
    cache_control = source.config.cache_control
    preconditions = parse_preconditions(request.headers)
    # 1. Validators S3 cannot compare: decide here from a HEAD (still no object bytes).
    if needs_local_evaluation(preconditions):
        head = await source.head(key)
        assert isinstance(head, ObjectMeta)
        decision = evaluate(preconditions, head.etag)
        if decision is Decision.NOT_MODIFIED:
            return not_modified(NotModified(head.etag, head.last_modified), cache_control)
        if decision is Decision.PRECONDITION_FAILED:
            raise PreconditionFailed("If-Match did not match")
        preconditions = without_etag_validators(preconditions)
    # 2. HEAD: metadata only (and the first bytes, if S3 has no useful type).
    if request.method == hdrs.METH_HEAD:
        meta = await source.head(key, preconditions)
        if isinstance(meta, NotModified):
            return not_modified(meta, cache_control)
        content_type = meta.content_type or ""
        if needs_sniffing(content_type):
            content_type = await sniff_remote(source, key)
        return await send_head(request, meta, content_type, cache_control, inline_types)
    # 3. GET: S3 answers the conditions and the range itself; the body streams.
    byte_range = parse_range(request.headers.get(hdrs.RANGE))
    if preconditions.if_range_never_matches:
        byte_range = None
    result = await source.get(key, byte_range, preconditions)
    if isinstance(result, NotModified):
        return not_modified(result, cache_control)
    meta, body = result
    return await stream_object(request, meta, body, cache_control, inline_types)


async def sniff_remote(source: S3Source, key: str) -> str:
    """For HEAD of an untyped object: read only its first bytes, as a ranged GET."""
    result = await source.get(key, ByteRange(0, SNIFF_BYTES - 1))
    if isinstance(result, NotModified):
        return "application/octet-stream"
    _, body = result
    try:
        return sniff_type(await body.read(SNIFF_BYTES))
    finally:
        body.close()
