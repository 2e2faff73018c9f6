"""What the proxy knows about an object without reading it: the metadata cache, else one HEAD.

Both branches use it: an original's delivery choice and offload, and a variant's ETag (which is
derived from the source's, so a 304 needs no read). Answers teach the cache for free.
"""

from __future__ import annotations

from imgproxy.cache import MetadataCaching, SourceMeta
from imgproxy.facts import Durations, Part
from imgproxy.storage.objects import ObjectMeta
from imgproxy.storage.s3 import S3Source


async def known_meta(source: S3Source, key: str, metadata: MetadataCaching,
                     durations: Durations) -> SourceMeta:
    """The cached metadata, else one HEAD (its time counted as storage time)."""
    meta = metadata.get(source.config.name, key)
    if meta is None:
        with durations.timing(Part.STORAGE):
            head = await source.head(key)
        assert isinstance(head, ObjectMeta)  # no preconditions were sent
        meta = SourceMeta(head.etag, head.content_length, head.content_type)
        metadata.put(source.config.name, key, meta)
    return meta


def remember(metadata: MetadataCaching, source: S3Source, key: str, meta: ObjectMeta) -> None:
    """An answer from S3 (a HEAD, a GET, a range of it) tells the object's size, ETag and type."""
    size = total_size(meta)
    if size is not None:
        metadata.put(source.config.name, key, SourceMeta(meta.etag, size, meta.content_type))


def total_size(meta: ObjectMeta) -> int | None:
    if meta.content_range is None:
        return meta.content_length
    total = meta.content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else None
