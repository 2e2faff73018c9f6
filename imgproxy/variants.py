"""Variants: answering a transform request from the variant cache, a 304, or one coalesced render.

The order keeps the expensive work last: the variant's ETag is computed from the source's ETag
(known from the metadata cache, else one HEAD) and the normalised parameters, so a matching
``If-None-Match`` is a 304 before anything is fetched or decoded; then the variant cache; then
one piece of work shared by every concurrent identical request: the shared variant store (if
configured), else a render, whose result is written back to the store in the background.
``X-Cache`` says where the body came from: ``HIT`` (memory), ``STORE`` (shared store), ``MISS``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import hdrs, web

from imgproxy.cache import Coalescer, MetadataCache, SourceMeta, Variant, VariantCache
from imgproxy.conditional import etag_matches
from imgproxy.config import TransformConfig
from imgproxy.errors import InvalidParameter, SourceTooLarge, StorageError
from imgproxy.media import safety_headers
from imgproxy.middleware import DURATIONS, LOG_FIELDS
from imgproxy.storage.body import ObjectBody
from imgproxy.storage.s3 import NotModified, ObjectMeta, S3Source
from imgproxy.storage.store import VariantStore
from imgproxy.transform.negotiate import choose_target
from imgproxy.transform.params import OutputFormat, TransformLimits, TransformSpec, parse_transform
from imgproxy.transform.pool import TransformPool
from imgproxy.transform.steps import RenderSettings

PIPELINE_VERSION: Final = "2"  # bump when rendering changes, so browsers and caches re-fetch
READ_CHUNK: Final = 256 * 1024


def variant_etag(source_etag: str | None, canonical: str, target: str) -> str:
    digest = hashlib.sha256(f"{PIPELINE_VERSION}|{source_etag}|{canonical}|{target}".encode())
    return f'"v{PIPELINE_VERSION}-{digest.hexdigest()[:40]}"'


@dataclass(slots=True)
class Timing:
    storage: float = 0.0
    transform: float = 0.0

    def header(self, total: float) -> str:
        return (f"storage;dur={self.storage * 1000:.1f}, transform;dur={self.transform * 1000:.1f}, "
                f"total;dur={total * 1000:.1f}")


class VariantService:
    """Owns the variant cache, the metadata cache, the coalescer and the worker pool."""

    def __init__(self, config: TransformConfig, pool: TransformPool, variants: VariantCache,
                 metadata: MetadataCache, formats: Collection[OutputFormat],
                 store: VariantStore | None = None) -> None:
        self.config = config
        self.store = store
        self.pool = pool
        self.variants = variants
        self.metadata = metadata
        self.formats = formats
        self.coalescer: Coalescer[tuple[Variant, str]] = Coalescer()
        self.limits = TransformLimits(config.max_width, config.max_height, formats)
        self.settings = RenderSettings(
            input_formats=config.input_formats,
            max_source_pixels=config.max_source_pixels,
            jpeg_quality=config.jpeg_quality,
            webp_quality=config.webp_quality,
            avif_quality=config.avif_quality,
            png_compress_level=config.png_compress_level,
        )

    def parse(self, params: Mapping[str, str]) -> TransformSpec | None:
        """The transform the signed query asks for; None: stream the original untouched."""
        spec = parse_transform(params, self.limits)
        if spec is not None and not self.config.enabled:
            raise InvalidParameter("transforms disabled",
                                   public_message="This server does not transform images.")
        return spec

    async def source_meta(self, source: S3Source, key: str, timing: Timing) -> SourceMeta:
        meta = self.metadata.get(source.config.name, key)
        if meta is None:
            started = time.perf_counter()
            head = await source.head(key)
            timing.storage += time.perf_counter() - started
            assert not isinstance(head, NotModified)  # no preconditions were sent
            meta = SourceMeta(head.etag, head.content_length, head.content_type)
            self.metadata.put(source.config.name, key, meta)
        return meta

    async def download(self, source: S3Source, key: str) -> tuple[ObjectMeta, bytearray]:
        """The whole object, read into one buffer of its Content-Length (no chunks to join)."""
        result = await source.get(key)
        assert not isinstance(result, NotModified)
        meta, body = result
        try:
            self.check_size(meta.content_length)
            return meta, await read_exactly(body, meta.content_length, source.config.name)
        finally:
            body.close()

    def check_size(self, size: int) -> None:
        if size > self.config.max_source_bytes:
            raise SourceTooLarge(f"{size} bytes > {self.config.max_source_bytes}",
                                 public_message=f"The source image is larger than "
                                                f"{self.config.max_source_bytes} bytes, the most "
                                                "this server transforms.")

    async def respond(self, request: web.Request, source: S3Source, key: str, spec: TransformSpec,
                      cache_control: str, inline_types: tuple[str, ...]) -> web.Response:
        started = time.perf_counter()
        timing = Timing()
        target = choose_target(spec, request.headers.get(hdrs.ACCEPT), self.formats)
        target_label = target.value if target is not None else ("legacy" if spec.auto_format else "source")
        # 1. The source's ETag (cached, else one HEAD) gives the variant's ETag without decoding.
        meta = await self.source_meta(source, key, timing)
        self.check_size(meta.content_length)
        etag = variant_etag(meta.etag, spec.canonical, target_label)
        base_headers: dict[str, str] = {hdrs.CACHE_CONTROL: cache_control, hdrs.ETAG: etag}
        if spec.auto_format:
            base_headers[hdrs.VARY] = "Accept"
        # 2. The client already has it.
        if_none_match = request.headers.get(hdrs.IF_NONE_MATCH)
        if if_none_match and etag_matches(if_none_match, etag):
            return web.Response(status=304, headers={**base_headers, "X-Cache": "HIT",
                                                     "X-Content-Type-Options": "nosniff"})
        # 3. Rendered before, or 4. rendered once for every concurrent identical request.
        cache_key = (source.config.name, key, meta.etag, spec.canonical, target_label)
        variant = self.variants.get(cache_key)
        state = "HIT"
        if variant is None:
            (variant, origin), ran = await self.coalescer.run(
                cache_key, lambda: self.fetch_or_render(cache_key, source, key, spec, target,
                                                        target_label, timing))
            state = origin if ran or origin == "STORE" else "HIT"
        request[LOG_FIELDS]["cache"] = state
        if timing.storage:
            request[DURATIONS]["storage"] = timing.storage
        if timing.transform:
            request[DURATIONS]["transform"] = timing.transform
        headers = {
            **base_headers,
            hdrs.ETAG: variant.etag,
            hdrs.CONTENT_TYPE: variant.media_type,
            "X-Cache": state,
            **safety_headers(variant.media_type, inline_types),
        }
        headers["Server-Timing"] = timing.header(time.perf_counter() - started)
        return web.Response(body=variant.body, headers=headers)

    async def fetch_or_render(self, cache_key: tuple[str, str, str | None, str, str], source: S3Source,
                              key: str, spec: TransformSpec, target: OutputFormat | None,
                              target_label: str, timing: Timing) -> tuple[Variant, str]:
        """The variant from the shared store ("STORE"), else rendered ("MISS")."""
        if self.store is not None:
            started = time.perf_counter()
            variant = await self.store.get(store_key(cache_key))
            timing.storage += time.perf_counter() - started
            if variant is not None:
                self.variants.put(cache_key, variant)
                return variant, "STORE"
        return await self.render(source, key, spec, target, target_label, timing), "MISS"

    async def render(self, source: S3Source, key: str, spec: TransformSpec,
                     target: OutputFormat | None, target_label: str, timing: Timing) -> Variant:
        # Admitted (or 503) before a byte is read; then the source is in memory only while this
        # job is rendering or next in line (transform/pool.py), never while it queues.
        with self.pool.admit() as ticket:
            async with ticket.loading():
                started = time.perf_counter()
                meta, data = await self.download(source, key)
                timing.storage += time.perf_counter() - started
                # The object may have changed since the HEAD: what we read decides the variant.
                self.metadata.put(source.config.name, key,
                                  SourceMeta(meta.etag, len(data), meta.content_type))
                started = time.perf_counter()
                rendered = await self.pool.render(data, spec, target, self.settings)
                timing.transform += time.perf_counter() - started
        variant = Variant(body=rendered.body, media_type=rendered.media_type,
                          etag=variant_etag(meta.etag, spec.canonical, target_label),
                          width=rendered.width, height=rendered.height)
        cache_key = (source.config.name, key, meta.etag, spec.canonical, target_label)
        self.variants.put(cache_key, variant)
        if self.store is not None:
            self.store.put(store_key(cache_key), variant)  # in the background: never awaited here
        return variant


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


def store_key(cache_key: tuple[str, str, str | None, str, str]) -> tuple[str, ...]:
    """The shared store's key: the memory cache's, plus the pipeline version, since replicas
    running different releases share the bucket."""
    return (PIPELINE_VERSION, *(str(part) for part in cache_key))
