"""Answering a failed image request with the placeholder ``delivery/fallback.py`` chose for it.

The source's fallback object is rendered through the request's own transform (cached like any
variant of it, so every missing photo at 96x96 shares one render) or, for an untransformed
request, streamed as stored; a drawing (initials avatar, silhouette) comes from the worker pool
without an S3 read. Placeholders are always answered whole: no 304 and no range (their ETag is
never the real object's, so a revalidation finds the photo once it exists). If the placeholder
fails as well (the fallback object is missing too, the pool is full), the original error stands:
a fallback never falls back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from aiohttp import hdrs, web

from imgproxy.delivery.fallback import Placeholder, fallback_etag
from imgproxy.delivery.originals import sniff_remote
from imgproxy.delivery.responses import send_head, stream_object, variant_response
from imgproxy.errors import ProxyError
from imgproxy.facts import Part, RequestFacts
from imgproxy.protocol.media import needs_sniffing
from imgproxy.protocol.sendwatch import SendWatch
from imgproxy.storage.objects import NotModified, ObjectMeta
from imgproxy.storage.s3 import S3Source
from imgproxy.transform.params import TransformSpec
from imgproxy.transform.policy import TransformPolicy
from imgproxy.transform.variants import VariantService, Wanted

log = logging.getLogger("imgproxy.fallback")


@dataclass(frozen=True, slots=True)
class Asked:
    """What the failed request asked for and what answering it uses, in plain values."""

    source: S3Source
    spec: TransformSpec | None  # None: the original was asked for
    policy: TransformPolicy
    variants: VariantService
    charge_render: Callable[[], None]  # the request's transforms budget (spent at most once)
    inline_types: tuple[str, ...]
    facts: RequestFacts
    watch: SendWatch | None


async def respond_placeholder(request: web.Request, error: ProxyError, placeholder: Placeholder,
                              asked: Asked) -> web.StreamResponse:
    """The placeholder's answer, or ``error`` raised again if the placeholder fails too."""
    facts = asked.facts
    facts.fallback, facts.fallback_for = placeholder.kind, error.status  # X-Fallback, metrics
    try:
        return await render_placeholder(request, placeholder, asked)
    except ProxyError as failed:
        facts.fallback = facts.fallback_for = None
        log.warning("request_id=%s %s fallback failed (%s): the %s stands", facts.request_id,
                    placeholder.kind, failed.code, error.code)
        raise error from None


async def render_placeholder(request: web.Request, placeholder: Placeholder,
                             asked: Asked) -> web.StreamResponse:
    head_only, accept = request.method == hdrs.METH_HEAD, request.headers.get(hdrs.ACCEPT)
    facts, spec = asked.facts, asked.spec
    if placeholder.drawing is not None:
        answer = await asked.variants.drawn(asked.source.config.name, placeholder.drawing, spec, accept,
                                            asked.policy, facts.durations)
    elif spec is not None:
        assert placeholder.key is not None
        wanted = Wanted(asked.source, placeholder.key, asked.policy, spec, accept, None, head_only,
                        asked.charge_render)
        answer = await asked.variants.answer(wanted, facts.durations)
    else:
        assert placeholder.key is not None
        return await stream_placeholder(request, placeholder, placeholder.key, asked)
    facts.cache = answer.cache
    etag = fallback_etag(answer.etag)
    assert etag is not None
    response = variant_response(replace(answer, etag=etag), placeholder.cache_control, asked.inline_types)
    response.set_status(placeholder.status)
    return response


async def stream_placeholder(request: web.Request, placeholder: Placeholder, key: str,
                             asked: Asked) -> web.StreamResponse:
    """The fallback object as stored, whole, under its marked ETag and the placeholder's status."""
    source, facts = asked.source, asked.facts
    if request.method == hdrs.METH_HEAD:
        with facts.durations.timing(Part.STORAGE):
            head = await source.head(key)
        assert isinstance(head, ObjectMeta)  # no preconditions were sent
        content_type = head.content_type or ""
        if needs_sniffing(content_type):
            with facts.durations.timing(Part.STORAGE):
                content_type = await sniff_remote(source, key)
        return await send_head(request, marked(head), content_type, placeholder.cache_control,
                               asked.inline_types, placeholder.status)
    with facts.durations.timing(Part.STORAGE):
        result = await source.get(key, stream=True)
    assert not isinstance(result, NotModified)  # no preconditions were sent
    meta, body = result
    return await stream_object(request, marked(meta), body, placeholder.cache_control, asked.inline_types,
                               facts, asked.watch, placeholder.status)


def marked(meta: ObjectMeta) -> ObjectMeta:
    """``meta`` as a placeholder's: its ETag marked, no Last-Modified (the real object's own)."""
    return replace(meta, etag=fallback_etag(meta.etag), last_modified=None)
