"""Converted originals: which untransformed requests a source answers with a render instead of the
object as stored (``[sources.NAME] convert_originals``), and the transform they get.

Browsers other than Safari cannot show HEIC, the format phones store photos in, so a source that
lists ``HEIF`` answers a plain ``/img/SOURCE/photo.heic`` with a JPEG (or, with ``convert_format =
"auto"``, what ``fmt=auto`` chooses), as large as the output limits allow, rendered and cached
like any variant. It is never streamed, redirected to S3 or handed to nginx as stored, whatever
the delivery mode: the decision comes before the delivery choice.

An object is taken for HEIF by its key's suffix (no S3 call); else by its stored Content-Type
(from the metadata cache, else one HEAD); an untyped one (``application/octet-stream``) by its
first bytes (one ranged GET).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from imgproxy.cache import MetadataCaching
from imgproxy.config import ConvertFormat
from imgproxy.delivery.originals import sniff_remote
from imgproxy.facts import Durations, Part
from imgproxy.protocol.media import needs_sniffing
from imgproxy.storage.metadata import known_meta
from imgproxy.storage.s3 import S3Source
from imgproxy.transform.params import Fit, OutputFormat, TransformLimits, TransformSpec

# Per convertible input format: the key suffixes and the media types it is stored under.
SUFFIXES: Final = {"HEIF": (".heic", ".heif", ".hif", ".heics", ".heifs")}
MEDIA_TYPES: Final = {"HEIF": frozenset({"image/heic", "image/heif", "image/heic-sequence",
                                         "image/heif-sequence"})}


def is_named_as(formats: Collection[str], key: str) -> bool:
    """Whether ``key``'s suffix is one of ``formats``' (case-insensitive)."""
    lowered = key.lower()
    return any(lowered.endswith(SUFFIXES[fmt]) for fmt in formats)


def is_typed_as(formats: Collection[str], content_type: str | None) -> bool:
    """Whether a media type (parameters ignored) is one of ``formats``'."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    return any(media_type in MEDIA_TYPES[fmt] for fmt in formats)


def conversion_spec(limits: TransformLimits, output: ConvertFormat) -> TransformSpec:
    """The whole picture, as large as the output limits allow (never enlarged), as ``output``."""
    auto = output is ConvertFormat.AUTO
    return TransformSpec(width=limits.max_width, height=limits.max_height, fit=Fit.INSIDE,
                         fmt=None if auto else OutputFormat.JPEG, auto_format=auto)


async def converted_spec(source: S3Source, key: str, limits: TransformLimits, metadata: MetadataCaching,
                         durations: Durations) -> TransformSpec | None:
    """The transform an untransformed request for ``key`` gets, or None: sent as stored."""
    formats = source.config.convert_originals
    if not formats:
        return None
    if not is_named_as(formats, key):
        content_type = (await known_meta(source, key, metadata, durations)).content_type
        if needs_sniffing(content_type):
            with durations.timing(Part.STORAGE):
                content_type = await sniff_remote(source, key)
        if not is_typed_as(formats, content_type):
            return None
    return conversion_spec(limits, source.config.convert_format)
