"""Variants: the answer to a transform request, from a 304, the variant cache, or one coalesced render.

The order keeps the expensive work last: the variant's ETag is computed from the source's ETag
(known from the metadata cache, else one HEAD) and the normalised parameters, so a matching
``If-None-Match`` is a 304 before anything is fetched or decoded; then the variant cache; then
one piece of work shared by every concurrent identical request: the shared variant store (if
configured), else a render, whose result is written back to the store in the background. With
several workers the variant cache is the host's (``hostcache/``) and so is that one piece of
work: the ``Flight`` lock is taken before the store or the pool's admission, and whoever waited
for it finds the variant in the host cache.

The HEAD is skipped when it could find nothing: the source's ETag is not cached, the client
sends no ``If-None-Match``, no store is configured, and the variant cache holds this variant
under no source ETag at all (``VariantCache.holds_any``): a directory page's first view of 200
photos. The render then starts at once, and its GET (in the image worker) tells the ETag, the
size (over ``max_source_bytes``: 413, the body unread) and the type.

A HEAD needs the variant's size, not its bytes: one the variant cache holds is answered from
it; else the shared store is asked with a HEAD of the stored object (its bytes are not read),
and only a variant neither knows is rendered, as for a GET. Either way its headers are the ones
a GET would get at that moment, ``X-Cache`` included.

Only a render spends the asker's transforms budget (``Wanted.charge_render``, called once the
pool admitted it, before its source is read): a 304, a cache or store hit, and a waiter for
another request's identical render cost nothing. A waiter shares the render's outcome, except
a 429: that refusal was for the leader's budget, so the waiter renders with its own (``shared``).

The service returns a ``VariantAnswer`` (a value); ``delivery/responses.py`` writes it as a response, and
the caller records the cache result in the request's facts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from imgproxy.cache import (
    Coalescer,
    Flight,
    LocalFlight,
    MetadataCaching,
    SourceMeta,
    Variant,
    VariantCaching,
    VariantHead,
    VariantKey,
)
from imgproxy.errors import RateLimited
from imgproxy.facts import CacheResult, Durations, Part
from imgproxy.protocol.conditional import is_not_modified
from imgproxy.storage.metadata import known_meta
from imgproxy.storage.s3 import S3Source
from imgproxy.storage.variant_store import VariantStore
from imgproxy.storage.worker_read import ReadMeta, SourceRead, SourceReadFailed
from imgproxy.transform.drawing import Drawing
from imgproxy.transform.negotiate import choose_target
from imgproxy.transform.params import OutputFormat, TransformSpec
from imgproxy.transform.policy import TransformPolicy
from imgproxy.transform.pool import TransformPool

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class VariantAnswer:
    """What to answer: the variant's ETag, where it came from, whether it depends on ``Accept``
    (``fmt=auto``: ``Vary: Accept``); its head (None: 304, the client has it) and its body (None:
    a HEAD answered from the variant's known size)."""

    etag: str
    cache: CacheResult
    vary_accept: bool
    head: VariantHead | None
    body: bytes | None = None

    @classmethod
    def of(cls, variant: Variant, cache: CacheResult, vary_accept: bool) -> VariantAnswer:
        return cls(variant.etag, cache, vary_accept, variant.head, variant.body)


@dataclass(frozen=True, slots=True)
class Wanted:
    """One request for a variant, in plain values; ``policy`` is the one the request started
    with (a reload does not change it midway)."""

    source: S3Source
    key: str
    policy: TransformPolicy
    spec: TransformSpec
    accept: str | None
    if_none_match: str | None
    head_only: bool = False  # a HEAD: the size and headers suffice, the bytes need not be at hand
    # Called once a render of it is admitted, before anything is read: raises (429 rate_limited)
    # when the asker's transforms budget is spent. A 304, a hit or a stored variant never calls it.
    charge_render: Callable[[], None] = field(default=lambda: None, repr=False)


class VariantService:
    """Owns the variant cache, the coalescer, the shared store and the worker pool."""

    def __init__(self, pool: TransformPool, variants: VariantCaching, metadata: MetadataCaching,
                 store: VariantStore | None = None, flight: Flight | None = None) -> None:
        self.pool = pool
        self.variants = variants
        self.metadata = metadata
        self.store = store
        self.flight = flight or LocalFlight()
        self.coalescer: Coalescer[tuple[Variant, CacheResult]] = Coalescer()

    async def answer(self, wanted: Wanted, durations: Durations) -> VariantAnswer:
        source, key, spec = wanted.source, wanted.key, wanted.spec
        target = choose_target(spec, wanted.accept, wanted.policy.auto_formats)
        label = target.value if target is not None else ("legacy" if spec.auto_format else "source")
        family = VariantKey(source.config.name, key, None, spec.canonical, label)
        # 0. Nothing to look up: the source's ETag is not known, no variant of it is cached and
        # the client has none. No HEAD then: the render's own GET tells the ETag.
        if self.metadata.get(source.config.name, key) is None and self.needs_no_head(wanted, family):
            self.variants.misses += 1  # looked up, by its family: not there
            (rendered, origin), ran = await self.shared(
                family, lambda: self.rendered(family, wanted, target, durations))
            return VariantAnswer.of(rendered, origin if ran else CacheResult.HIT, spec.auto_format)
        # 1. The source's ETag (cached, else one HEAD) gives the variant's ETag without decoding.
        meta = await known_meta(source, key, self.metadata, durations)
        wanted.policy.check_size(meta.content_length)
        name = VariantKey(source.config.name, key, meta.etag, spec.canonical, label)
        # 2. The client already has it.
        if is_not_modified(wanted.if_none_match, name.etag):
            return VariantAnswer(name.etag, CacheResult.HIT, spec.auto_format, None)
        # 3. Rendered before.
        variant = self.variants.get(name)
        if variant is not None:
            return VariantAnswer.of(variant, CacheResult.HIT, spec.auto_format)
        # 4. A HEAD: the shared store may know the size without a byte read.
        store_asked = False
        if wanted.head_only and self.store is not None:
            with durations.timing(Part.STORAGE):
                head = await self.store.head(name)
            if head is not None:
                return VariantAnswer(head.etag, CacheResult.STORE, spec.auto_format, head)
            store_asked = True
        # 5. Fetched from the store or rendered, once for every concurrent identical request.
        (variant, origin), ran = await self.shared(
            name, lambda: self.fetch_or_render_once(name, wanted, target, durations, store_asked))
        cache = origin if ran or origin is CacheResult.STORE else CacheResult.HIT
        return VariantAnswer.of(variant, cache, spec.auto_format)

    async def drawn(self, source: str, drawing: Drawing, spec: TransformSpec | None, accept: str | None,
                    policy: TransformPolicy, durations: Durations) -> VariantAnswer:
        """A placeholder drawn in the pool (``transform/drawing.py``), cached like a variant under
        a name no object has; it reads nothing from S3, and spends no transforms budget."""
        target = choose_target(spec, accept, policy.auto_formats) if spec is not None else None
        output = target or OutputFormat.PNG
        quality = spec.quality if spec is not None else None
        name = VariantKey(source, drawing.canonical, drawing.canonical, f"q={quality or 0}", output.value)
        vary_accept = spec is not None and spec.auto_format
        variant = self.variants.get(name)
        if variant is not None:
            return VariantAnswer.of(variant, CacheResult.HIT, vary_accept)

        async def draw() -> tuple[Variant, CacheResult]:
            with self.pool.admit(), durations.timing(Part.TRANSFORM):
                rendered = await self.pool.draw(drawing, output, quality, policy.settings)
            drawn = Variant(body=rendered.body, media_type=rendered.media_type, etag=name.etag,
                            width=rendered.width, height=rendered.height)
            self.variants.put(name, drawn)
            return drawn, CacheResult.MISS

        (variant, origin), ran = await self.shared(name, draw)
        return VariantAnswer.of(variant, origin if ran else CacheResult.HIT, vary_accept)

    async def shared(self, key: VariantKey, work: Callable[[], Awaitable[tuple[Variant, CacheResult]]],
                     ) -> tuple[tuple[Variant, CacheResult], bool]:
        """``coalescer.run``: the work's result and whether this request ran it; except that a
        waiter whose leader's render was refused for the leader's own budget (429) does not
        share that refusal: it runs the work itself, and its own budget decides."""
        led = False

        async def leading() -> tuple[Variant, CacheResult]:
            nonlocal led
            led = True
            return await work()

        try:
            return await self.coalescer.run(key, leading)
        except RateLimited:
            if led:
                raise
            return await self.coalescer.run(key, work)

    def needs_no_head(self, wanted: Wanted, family: VariantKey) -> bool:
        """Whether a HEAD could find nothing to answer from: not for a HEAD request (its size is
        what is asked), a client holding some ETag (it may be current: a 304), a shared store
        (looked up by the source's ETag), or a variant of this family in the cache."""
        return (not wanted.head_only and wanted.if_none_match is None and self.store is None
                and not self.variants.holds_any(family))

    async def rendered(self, name: VariantKey, wanted: Wanted, target: OutputFormat | None,
                       durations: Durations) -> tuple[Variant, CacheResult]:
        """A render of ``name``'s family under the host's lock: a worker that waited for another's
        render of it finds the variant under the ETag that render's read taught the metadata."""
        async with self.flight.hold(name.store_name):
            meta = self.metadata.get(name.source, name.key)
            variant = None if meta is None else self.variants.get(replace(name, source_etag=meta.etag),
                                                                  counted=False)
            if variant is not None:
                return variant, CacheResult.HIT
            return await self.render(name, wanted, target, durations), CacheResult.MISS

    async def fetch_or_render_once(self, name: VariantKey, wanted: Wanted, target: OutputFormat | None,
                                   durations: Durations, store_asked: bool) -> tuple[Variant, CacheResult]:
        """``fetch_or_render`` under the host's lock (no admission slot is held while waiting for
        it); another worker may have cached the variant meanwhile."""
        async with self.flight.hold(name.store_name):
            variant = self.variants.get(name, counted=False)
            if variant is not None:
                return variant, CacheResult.HIT
            return await self.fetch_or_render(name, wanted, target, durations, store_asked)

    async def fetch_or_render(self, name: VariantKey, wanted: Wanted, target: OutputFormat | None,
                              durations: Durations, store_asked: bool = False) -> tuple[Variant, CacheResult]:
        """The variant from the shared store (unless it was just asked), else rendered."""
        if self.store is not None and not store_asked:
            with durations.timing(Part.STORAGE):
                variant = await self.store.get(name)
            if variant is not None:
                self.variants.put(name, variant)
                return variant, CacheResult.STORE
        return await self.render(name, wanted, target, durations), CacheResult.MISS

    async def render(self, name: VariantKey, wanted: Wanted, target: OutputFormat | None,
                     durations: Durations) -> Variant:
        source, key, policy = wanted.source, wanted.key, wanted.policy
        meta, rendered = await self.in_worker(
            source, key, policy, wanted.charge_render, durations,
            lambda read: self.pool.read_and_render(read, wanted.spec, target, policy.settings))
        # The object may have changed since the HEAD: what was read decides the variant.
        self.metadata.put(source.config.name, key, SourceMeta(meta.etag, meta.length, meta.content_type))
        read_name = replace(name, source_etag=meta.etag)
        variant = Variant(body=rendered.body, media_type=rendered.media_type, etag=read_name.etag,
                          width=rendered.width, height=rendered.height)
        self.variants.put(read_name, variant)
        if self.store is not None:
            self.store.put(read_name, variant)  # in the background: never awaited here
        return variant

    async def in_worker(self, source: S3Source, key: str, policy: TransformPolicy, charge: Callable[[], None],
                        durations: Durations, job: Callable[[SourceRead], Awaitable[tuple[ReadMeta, R]]],
                        ) -> tuple[ReadMeta, R]:
        """``job`` on ``key``'s source, read by the worker itself (a render, ``/meta``'s
        placeholder): admitted (or 503) and charged before a byte is read, the source never in
        this process's memory (storage/worker_read.py); the read and the work timed apart."""
        with self.pool.admit() as ticket:
            charge()
            async with ticket.loading():
                read = await source.worker_read(key, policy.max_source_bytes)
                started = time.perf_counter()
                try:
                    meta, result = await job(read)
                except SourceReadFailed as failed:
                    durations.add(Part.STORAGE, failed.seconds)
                    if failed.kind == "too_large":
                        policy.check_size(failed.status)  # raises: 413, as before a read
                    raise source.worker_read_failed(failed) from None
                source.worker_read_done(meta.seconds)
                durations.add(Part.STORAGE, meta.seconds)
                durations.add(Part.TRANSFORM, time.perf_counter() - started - meta.seconds)
        return meta, result
