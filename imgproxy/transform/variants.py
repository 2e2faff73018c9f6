"""Variants: the answer to a transform request, from a 304, the variant cache, or one coalesced render.

The order keeps the expensive work last: the variant's ETag is computed from the source's ETag
(known from the metadata cache, else one HEAD) and the normalised parameters, so a matching
``If-None-Match`` is a 304 before anything is fetched or decoded; then the variant cache; then
one piece of work shared by every concurrent identical request: the shared variant store (if
configured), else a render, whose result is written back to the store in the background.

A HEAD needs the variant's size, not its bytes: one the variant cache holds is answered from
it; else the shared store is asked with a HEAD of the stored object (its bytes are not read),
and only a variant neither knows is rendered, as for a GET. Either way its headers are the ones
a GET would get at that moment, ``X-Cache`` included.

The service returns a ``VariantAnswer`` (a value); ``delivery/responses.py`` writes it as a response, and
the caller records the cache result in the request's facts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from imgproxy.cache import (
    Coalescer,
    MetadataCache,
    SourceMeta,
    Variant,
    VariantCache,
    VariantHead,
    VariantKey,
)
from imgproxy.errors import StorageError
from imgproxy.facts import CacheResult, Durations, Part
from imgproxy.protocol.conditional import is_not_modified
from imgproxy.storage.body import ObjectBody
from imgproxy.storage.metadata import known_meta
from imgproxy.storage.objects import NotModified, ObjectMeta
from imgproxy.storage.s3 import S3Source
from imgproxy.storage.variant_store import VariantStore
from imgproxy.transform.negotiate import choose_target
from imgproxy.transform.params import OutputFormat, TransformSpec
from imgproxy.transform.policy import TransformPolicy
from imgproxy.transform.pool import TransformPool

READ_CHUNK: Final = 256 * 1024


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
    """One request for a variant, in plain values."""

    source: S3Source
    key: str
    spec: TransformSpec
    accept: str | None
    if_none_match: str | None
    head_only: bool = False  # a HEAD: the size and headers suffice, the bytes need not be at hand


class VariantService:
    """Owns the variant cache, the coalescer, the shared store and the worker pool."""

    def __init__(self, policy: TransformPolicy, pool: TransformPool, variants: VariantCache,
                 metadata: MetadataCache, store: VariantStore | None = None) -> None:
        self.policy = policy
        self.pool = pool
        self.variants = variants
        self.metadata = metadata
        self.store = store
        self.coalescer: Coalescer[tuple[Variant, CacheResult]] = Coalescer()

    async def answer(self, wanted: Wanted, durations: Durations) -> VariantAnswer:
        source, key, spec = wanted.source, wanted.key, wanted.spec
        target = choose_target(spec, wanted.accept, self.policy.auto_formats)
        label = target.value if target is not None else ("legacy" if spec.auto_format else "source")
        # 1. The source's ETag (cached, else one HEAD) gives the variant's ETag without decoding.
        meta = await known_meta(source, key, self.metadata, durations)
        self.policy.check_size(meta.content_length)
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
        (variant, origin), ran = await self.coalescer.run(
            name, lambda: self.fetch_or_render(name, wanted, target, durations, store_asked))
        cache = origin if ran or origin is CacheResult.STORE else CacheResult.HIT
        return VariantAnswer.of(variant, cache, spec.auto_format)

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
        source, key = wanted.source, wanted.key
        # Admitted (or 503) before a byte is read; then the source is in memory only while this
        # job is rendering or next in line (transform/pool.py), never while it queues.
        with self.pool.admit() as ticket:
            async with ticket.loading():
                with durations.timing(Part.STORAGE):
                    meta, data = await self.download(source, key)
                # The object may have changed since the HEAD: what was read decides the variant.
                self.metadata.put(source.config.name, key,
                                  SourceMeta(meta.etag, len(data), meta.content_type))
                with durations.timing(Part.TRANSFORM):
                    rendered = await self.pool.render(data, wanted.spec, target, self.policy.settings)
        read = replace(name, source_etag=meta.etag)
        variant = Variant(body=rendered.body, media_type=rendered.media_type, etag=read.etag,
                          width=rendered.width, height=rendered.height)
        self.variants.put(read, variant)
        if self.store is not None:
            self.store.put(read, variant)  # in the background: never awaited here
        return variant

    async def download(self, source: S3Source, key: str) -> tuple[ObjectMeta, bytearray]:
        """The whole object, read into one buffer of its Content-Length (no chunks to join)."""
        result = await source.get(key)
        assert not isinstance(result, NotModified)
        meta, body = result
        try:
            self.policy.check_size(meta.content_length)
            return meta, await read_exactly(body, meta.content_length, source.config.name)
        finally:
            body.close()


async def read_exactly(body: ObjectBody, length: int, source: str) -> bytearray:
    """``length`` bytes of ``body`` into one preallocated buffer; a body that ends early or
    runs past its Content-Length is a storage error (never a short or unbounded read)."""
    buffer = bytearray(length)
    view, filled = memoryview(buffer), 0
    while filled < length:
        chunk = await body.read(min(READ_CHUNK, length - filled))
        if not chunk:
            raise StorageError(f"source={source}: body ended after {filled} of {length} bytes")
        view[filled:filled + len(chunk)] = chunk
        filled += len(chunk)
    if await body.read(1):
        raise StorageError(f"source={source}: body longer than its Content-Length {length}")
    return buffer
