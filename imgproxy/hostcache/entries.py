"""One cached variant as bytes: ``MAGIC``, a JSON header's length and the header, then the body.

The header names the entry's whole key (file names are digests, so a collision or a stray file
is caught), the response fields, the body's length and its blake2b checksum. ``decode`` returns
a ``Variant`` only if every one of them checks out; anything else (truncated, foreign, another
key's, a flipped bit) is ``None``, a miss. JSON, never pickle: an entry is data, not code.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import replace
from typing import Final

from imgproxy.cache import PIPELINE_VERSION, Variant, VariantKey

MAGIC: Final = b"imgproxy-variant-1\n"
LENGTH: Final = struct.Struct(">I")
MAX_HEADER_BYTES: Final = 8192  # the key parts are bounded (an object key is at most 1 KiB)
PREFIX_BYTES: Final = len(MAGIC) + LENGTH.size  # what ``expected_size`` needs before the header


def key_fields(key: VariantKey) -> list[str | None]:
    return [PIPELINE_VERSION, key.source, key.key, key.source_etag, key.canonical, key.target]


def family_id(key: VariantKey) -> bytes:
    """The name of ``key``'s family (the key without its source ETag): what ``holds_any`` asks."""
    return bytes.fromhex(replace(key, source_etag=None).store_name)


def header_family(header: dict[str, object]) -> bytes | None:
    """The family of the key a header names, if it is a key of this pipeline version."""
    fields = header.get("key")
    if not (isinstance(fields, list) and len(fields) == 6 and fields[0] == PIPELINE_VERSION
            and all(isinstance(f, str) for f in fields[1:3] + fields[4:])):
        return None
    _, source, key, _, canonical, target = fields
    return family_id(VariantKey(source, key, None, canonical, target))


def checksum(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=32).hexdigest()


def encode(key: VariantKey, variant: Variant) -> bytes:
    """The file's bytes for ``variant`` under ``key``."""
    header = json.dumps({
        "key": key_fields(key),
        "media_type": variant.media_type,
        "etag": variant.etag,
        "width": variant.width,
        "height": variant.height,
        "length": len(variant.body),
        "blake2b": checksum(variant.body),
    }, separators=(",", ":")).encode()
    return MAGIC + LENGTH.pack(len(header)) + header + variant.body


def read_header(data: bytes) -> tuple[dict[str, object], int] | None:
    """The header and where the body starts, or None if ``data`` does not start like an entry."""
    if not data.startswith(MAGIC) or len(data) < PREFIX_BYTES:
        return None
    (size,) = LENGTH.unpack_from(data, len(MAGIC))
    end = PREFIX_BYTES + size
    if size > MAX_HEADER_BYTES or len(data) < end:
        return None
    try:
        header = json.loads(data[PREFIX_BYTES:end])
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return (header, end) if isinstance(header, dict) else None


def expected_size(data: bytes) -> int | None:
    """The whole file's size as its header states it (from its first bytes), or None."""
    described = describe(data)
    return None if described is None else described[0]


def describe(data: bytes) -> tuple[int, bytes] | None:
    """From an entry's first bytes: the whole file's size as its header states it, and its key's
    family; None if they are not an entry's of this pipeline version."""
    parsed = read_header(data)
    if parsed is None:
        return None
    header, start = parsed
    length, family = header.get("length"), header_family(header)
    if not isinstance(length, int) or length < 0 or family is None:
        return None
    return start + length, family


def decode(data: bytes, key: VariantKey) -> Variant | None:
    """The variant ``data`` holds for ``key``, or None if anything about it does not check out."""
    parsed = read_header(data)
    if parsed is None:
        return None
    header, start = parsed
    body = data[start:]
    media_type, etag = header.get("media_type"), header.get("etag")
    width, height, digest = header.get("width"), header.get("height"), header.get("blake2b")
    if (header.get("key") != key_fields(key) or header.get("length") != len(body)
            or not isinstance(media_type, str) or not isinstance(etag, str)
            or not isinstance(width, int) or not isinstance(height, int) or not isinstance(digest, str)):
        return None
    if not hmac.compare_digest(digest, checksum(body)):
        return None
    return Variant(body=body, media_type=media_type, etag=etag, width=width, height=height)
