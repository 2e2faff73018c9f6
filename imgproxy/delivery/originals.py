"""Originals: delivering an object as stored (no transform), with S3 doing the heavy lifting.

The delivery mode is chosen first (``delivery.policy.choose_delivery``) from what the caches already
know, and whether the request carries an ``Origin`` (never redirected); redirect and accel hand
the bytes to S3 or nginx (``offload``), stream sends them here.

Validators and a single range are handed to S3, so S3 answers 304/412/206 and no bytes are
read and discarded. The forms S3 compares as one exact string (ETag lists, weak tags, ``*``)
are evaluated here against the ETag of one HEAD instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web

from imgproxy.cache import HotCounting, MetadataCaching
from imgproxy.delivery.offload import offload
from imgproxy.delivery.policy import Delivery, choose_delivery
from imgproxy.delivery.responses import not_modified, send_head, stream_object
from imgproxy.errors import PreconditionFailed
from imgproxy.facts import Part, RequestFacts
from imgproxy.protocol.conditional import (
    ByteRange,
    Decision,
    Preconditions,
    evaluate,
    is_not_modified,
    needs_local_evaluation,
    parse_preconditions,
    parse_range,
    without_etag_validators,
)
from imgproxy.protocol.media import SNIFF_BYTES, needs_sniffing, sniff_type
from imgproxy.protocol.sendwatch import SendWatch
from imgproxy.storage.metadata import known_meta, remember
from imgproxy.storage.objects import NotModified, ObjectMeta
from imgproxy.storage.s3 import S3Source


@dataclass(frozen=True, slots=True)
class Context:
    """What delivering an original needs besides the request: the app-wide caches (loop-thread
    only), and this request's facts (filled in here) and send watch."""

    metadata: MetadataCaching
    hot: HotCounting
    inline_types: tuple[str, ...]
    now: float
    facts: RequestFacts
    watch: SendWatch | None


async def respond_original(request: web.Request, source: S3Source, key: str,
                           context: Context) -> web.StreamResponse:
    """The answer; the request's facts say how it was delivered (stream, redirect or accel)."""
    facts = context.facts
    # 1. Choose: the source's mode, with what the caches know (no S3 call to decide).
    cached = context.metadata.get(source.config.name, key)
    recent = context.hot.hit(source.config.name, key, source.config.delivery.hot_window)
    how = facts.delivery = choose_delivery(source.config.delivery,
                                           size=cached.content_length if cached else None,
                                           recent_requests=recent, head=request.method == hdrs.METH_HEAD,
                                           has_origin=hdrs.ORIGIN in request.headers)
    preconditions = parse_preconditions(request.headers)
    # 2. A validator the proxy can answer from what it knows: 304 without S3.
    if cached is not None and is_not_modified(preconditions.if_none_match, cached.etag):
        return not_modified(NotModified(cached.etag, None), source.config.cache_control)
    if how is Delivery.STREAM:
        return await stream_original(request, source, key, context, preconditions)
    # 3. Offload: S3 (redirect) or nginx (accel) moves the bytes; the HEAD (if needed) proves
    #    the object exists and gives its type for a safe response-content-type.
    meta = cached or await known_meta(source, key, context.metadata, facts.durations)
    if is_not_modified(preconditions.if_none_match, meta.etag):
        return not_modified(NotModified(meta.etag, None), source.config.cache_control)
    return await offload(source, key, meta, how, context.now, context.inline_types, facts.max_age_cap,
                         facts.private)


async def stream_original(request: web.Request, source: S3Source, key: str, context: Context,
                          preconditions: Preconditions) -> web.StreamResponse:
    cache_control = source.config.cache_control
    inline_types = context.inline_types
    # 1. Validators S3 cannot compare: decide here from a HEAD (still no object bytes).
    if needs_local_evaluation(preconditions):
        with context.facts.durations.timing(Part.STORAGE):
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
        with context.facts.durations.timing(Part.STORAGE):
            meta = await source.head(key, preconditions)
        if isinstance(meta, NotModified):
            return not_modified(meta, cache_control)
        remember(context.metadata, source, key, meta)
        content_type = meta.content_type or ""
        if needs_sniffing(content_type):
            with context.facts.durations.timing(Part.STORAGE):
                content_type = await sniff_remote(source, key)
        return await send_head(request, meta, content_type, cache_control, inline_types)
    # 3. GET: S3 answers the conditions and the range itself; the body streams.
    byte_range = parse_range(request.headers.get(hdrs.RANGE))
    if preconditions.if_range_never_matches:
        byte_range = None
    with context.facts.durations.timing(Part.STORAGE):  # until S3's headers; the body is the stream's
        result = await source.get(key, byte_range, preconditions, stream=True)
    if isinstance(result, NotModified):
        return not_modified(result, cache_control)
    meta, body = result
    remember(context.metadata, source, key, meta)
    return await stream_object(request, meta, body, cache_control, inline_types, context.facts,
                               context.watch)


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
