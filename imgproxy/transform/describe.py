"""``/meta`` answers: an image's size, format and frames from a ranged read of its header, and
its ThumbHash placeholder from a small render, both cached like variants.

The order keeps the expensive work last, as ``variants.py`` does:

1. The object's ETag, when the metadata cache knows it, gives the answer's ETag at once: a
   matching ``If-None-Match`` is a 304 before anything is read.
2. The header, cached under the object's ETag (the variant cache, so the host's), else read:
   the first ``FIRST_READ`` bytes (a ranged GET; S3's ``Content-Range`` tells the object's size),
   walked by an image worker (``transform/header.py``); when the header goes on (a JPEG's frame
   header after a large EXIF segment), the next range, at least doubling, pinned to the first
   read's ETag with ``If-Match``, at most ``MAX_READS`` reads and ``MAX_HEADER_BYTES`` in all
   (then 422 ``corrupt_image``: a header that never ends is refused, not followed). A 40 MB
   original costs 64 KiB of reading, not 40 MB.
3. The placeholder is included when it is cached (any earlier ``placeholder=1`` made it), or
   when ``placeholder=1`` asks for it: then an image worker reads the whole object itself
   (``storage/worker_read.py``, ``max_source_bytes`` and the pixel limit as for a render) and
   hashes a 64 px render of it (``metajobs.py``). Only that render spends the asker's transforms
   budget; it is coalesced with every identical request on the host, like a render.

Every job is admitted by the pool (503 when full) before anything is read, and the reads hold
a slot of the source's ``reads`` pool: a burst of ``/meta`` requests holds bounded memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from imgproxy.auth.signing import RESERVED_PARAMS
from imgproxy.cache import PIPELINE_VERSION, SourceMeta, Variant, VariantKey
from imgproxy.errors import InvalidParameter, NotAnImage, RangeNotSatisfiable, UnprocessableImage
from imgproxy.facts import CacheResult, Durations, Part
from imgproxy.protocol.conditional import ByteRange, Preconditions, is_not_modified
from imgproxy.storage.metadata import remember, total_size
from imgproxy.storage.objects import NotModified
from imgproxy.storage.s3 import S3Source
from imgproxy.transform.header import Header, NeedBytes
from imgproxy.transform.policy import TransformPolicy
from imgproxy.transform.variants import VariantService

FIRST_READ: Final = 64 * 1024
MAX_HEADER_BYTES: Final = 1024 * 1024
MAX_READS: Final = 5
READ_PIECE: Final = 32 * 1024
HEADER: Final = "meta-header"  # the VariantKey canonical names of the two cached parts
PLACEHOLDER: Final = "meta-thumbhash"


@dataclass(frozen=True, slots=True)
class ImageMeta:
    """The answer: the image as displayed, and the object it was read from."""

    width: int
    height: int
    format: str  # lower case: jpeg, png, gif, webp, avif, heif
    frames: int | None
    bytes: int
    etag: str | None  # the object's
    placeholder: str | None  # ThumbHash, base64

    def as_json(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "format": self.format, "frames": self.frames,
                "bytes": self.bytes, "etag": self.etag, "placeholder": self.placeholder}


@dataclass(frozen=True, slots=True)
class MetaAnswer:
    """``meta`` None: a 304 (the client's ``If-None-Match`` matched ``etag``)."""

    etag: str | None
    cache: CacheResult
    meta: ImageMeta | None


def wants_placeholder(params: Mapping[str, str]) -> bool:
    """``/meta``'s one parameter: ``placeholder=1`` (or ``0``); any other but the signing ones is a
    400, so a signed ``/meta`` URL cannot carry transforms it would silently ignore."""
    for name in sorted(params.keys() - RESERVED_PARAMS - {"placeholder"}):
        raise InvalidParameter(f"meta parameter {name!r}", public_message=(
            f"Parameter {name!r} is not known here (/meta takes placeholder=1)."))
    value = params.get("placeholder", "0")
    if value not in ("0", "1"):
        raise InvalidParameter("placeholder not 0 or 1",
                               public_message="Parameter 'placeholder' must be 0 or 1.")
    return value == "1"


def meta_etag(object_etag: str | None, with_placeholder: bool) -> str | None:
    """The JSON's strong ETag: of the object's version and of whether a placeholder is in it."""
    if object_etag is None:
        return None
    digest = hashlib.sha256(f"{PIPELINE_VERSION}|meta|{object_etag}|{int(with_placeholder)}".encode())
    return f'"m{PIPELINE_VERSION}-{digest.hexdigest()[:40]}"'


@dataclass(frozen=True, slots=True)
class Asked:
    """One ``/meta`` request in plain values."""

    source: S3Source
    key: str
    policy: TransformPolicy
    placeholder: bool  # placeholder=1
    if_none_match: str | None
    charge_render: Callable[[], None]  # the transforms budget, spent by a placeholder render only


class Describer:
    """``/meta``'s answers, with the variant service's pool, caches and coalescer."""

    def __init__(self, service: VariantService) -> None:
        self.service = service

    async def describe(self, asked: Asked, durations: Durations) -> MetaAnswer:
        service, source, key = self.service, asked.source, asked.key
        name = source.config.name
        known = service.metadata.get(name, key)
        cache = CacheResult.HIT
        # 1. The client's copy is current (the object's ETag known, no byte read).
        if known is not None and known.etag is not None:
            hashed = self._cached(name, key, known.etag, PLACEHOLDER)
            etag = meta_etag(known.etag, hashed is not None or asked.placeholder)
            if etag is not None and is_not_modified(asked.if_none_match, etag):
                return MetaAnswer(etag, CacheResult.HIT, None)
        # 2. The header: cached under the object's ETag, else read (once for the host).
        found = None if known is None else self._found(self._cached(name, key, known.etag, HEADER))
        if found is None:
            cache = CacheResult.MISS
            header_key = VariantKey(name, key, known.etag if known else None, HEADER, "json")
            (variant, _), _ = await service.shared(header_key, lambda: self._read_header(asked, durations))
            found = self._found(variant)
            assert found is not None
        header, size, object_etag = found
        # 3. The placeholder: cached, or made for placeholder=1.
        placeholder = self._cached(name, key, object_etag, PLACEHOLDER)
        if placeholder is None and asked.placeholder:
            cache = CacheResult.MISS
            placeholder = await self._placeholder(asked, SourceMeta(object_etag, size, None), durations)
        thumbhash = placeholder.body.decode("ascii") if placeholder is not None else None
        meta = ImageMeta(width=header.width, height=header.height, format=header.format.lower(),
                         frames=header.frames, bytes=size, etag=object_etag, placeholder=thumbhash)
        etag = meta_etag(object_etag, thumbhash is not None)
        if etag is not None and is_not_modified(asked.if_none_match, etag):
            return MetaAnswer(etag, cache, None)
        return MetaAnswer(etag, cache, meta)

    def _cached(self, source: str, key: str, etag: str | None, part: str) -> Variant | None:
        if etag is None:
            return None
        return self.service.variants.get(VariantKey(source, key, etag, part, "json"), counted=False)

    @staticmethod
    def _found(variant: Variant | None) -> tuple[Header, int, str | None] | None:
        """A cached header record: the header, the object's size and ETag when it was read."""
        if variant is None:
            return None
        data = json.loads(variant.body)
        header = Header(data["format"], data["width"], data["height"], data["frames"], data["orientation"])
        return header, data["bytes"], data["etag"]

    async def _read_header(self, asked: Asked, durations: Durations) -> tuple[Variant, CacheResult]:
        """Ranged reads of the object's first bytes, each walked by a worker, until its header ends."""
        service, source, key = self.service, asked.source, asked.key
        data, etag, total, end = b"", None, None, FIRST_READ
        with service.pool.admit():
            for _ in range(MAX_READS):
                want = ByteRange(len(data), end - 1)
                piece, etag, total = await self._read_range(source, key, want, etag, durations)
                data += piece
                with durations.timing(Part.TRANSFORM):
                    found = await service.pool.read_header(data, total, asked.policy.settings.input_formats)
                if isinstance(found, Header):
                    break
                assert isinstance(found, NeedBytes)
                needed = found.end
                end = min(total, max(needed, 2 * len(data)))
                if needed > MAX_HEADER_BYTES or len(data) >= total:
                    raise UnprocessableImage(f"header goes on past {needed} bytes",
                                             public_message="The image's header does not end within the "
                                                            f"first {MAX_HEADER_BYTES} bytes.")
                end = min(end, MAX_HEADER_BYTES)
            else:
                raise UnprocessableImage(f"header not found in {MAX_READS} reads ({len(data)} bytes)",
                                         public_message="The image's header does not end within the "
                                                        f"first {MAX_HEADER_BYTES} bytes.")
        assert isinstance(found, Header)
        body = json.dumps({"format": found.format, "width": found.width, "height": found.height,
                           "frames": found.frames, "orientation": found.orientation, "bytes": total,
                           "etag": etag}).encode()
        variant = Variant(body=body, media_type="application/json", etag=etag or "", width=found.width,
                          height=found.height)
        if etag is not None:
            service.variants.put(VariantKey(source.config.name, key, etag, HEADER, "json"), variant)
        return variant, CacheResult.MISS

    async def _read_range(self, source: S3Source, key: str, want: ByteRange, etag: str | None,
                          durations: Durations) -> tuple[bytes, str | None, int]:
        """One range of the object (the next ones pinned to the first's ETag): its bytes, the
        object's ETag and its whole size."""
        pre = Preconditions(if_match=etag) if etag is not None else Preconditions()
        with durations.timing(Part.STORAGE):
            try:
                opened = await source.get(key, want, pre)
            except RangeNotSatisfiable:  # an empty object: no byte is a header
                raise NotAnImage("empty object") from None
            assert not isinstance(opened, NotModified)  # no If-None-Match was sent
            meta, body = opened
            try:
                pieces, size, limit = [], 0, (want.last or 0) - (want.first or 0) + 1
                while size < limit:
                    piece = await body.read(READ_PIECE)
                    if not piece:
                        break
                    pieces.append(piece)
                    size += len(piece)
            finally:
                body.close()
        remember(self.service.metadata, source, key, meta)
        total = total_size(meta)
        return b"".join(pieces)[:limit], meta.etag, total if total is not None else size

    async def _placeholder(self, asked: Asked, known: SourceMeta, durations: Durations) -> Variant:
        """The ThumbHash of a small render, once for every identical request on the host."""
        service, source, key, policy = self.service, asked.source, asked.key, asked.policy
        name = VariantKey(source.config.name, key, known.etag, PLACEHOLDER, "json")
        policy.check_size(known.content_length)

        async def render() -> tuple[Variant, CacheResult]:
            async with service.flight.hold(name.store_name):
                cached = service.variants.get(name, counted=False)
                if cached is not None:
                    return cached, CacheResult.HIT
                meta, made = await service.in_worker(
                    source, key, policy, asked.charge_render, durations,
                    lambda read: service.pool.read_placeholder(read, policy.settings))
                variant = Variant(body=made.thumbhash.encode("ascii"), media_type="text/plain",
                                  etag=meta.etag or "", width=made.width, height=made.height)
                # Filed under the ETag the worker read: if the object changed meanwhile, the
                # hash belongs to the new version, and the next answer's header is read anew.
                service.variants.put(VariantKey(name.source, key, meta.etag, PLACEHOLDER, "json"), variant)
                return variant, CacheResult.MISS

        (variant, _), _ = await service.shared(name, render)
        return variant
