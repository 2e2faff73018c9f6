"""What S3 says about an object, and how a request's preconditions are put to S3.

``ObjectMeta`` and ``NotModified`` are the values every reader of a source gets back from a
presigned GET or HEAD (``storage/presigned_get.py``), in the serving process or an image worker.
The preconditions are mapped once, in ``_VALIDATORS``: each field of ``Preconditions`` with its
HTTP header.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from aiohttp import ClientResponse

from imgproxy.protocol.conditional import Preconditions, format_http_date, parse_http_date

# (Preconditions field, HTTP request header)
_VALIDATORS: Final = (
    ("if_none_match", "If-None-Match"),
    ("if_modified_since", "If-Modified-Since"),
    ("if_match", "If-Match"),
    ("if_unmodified_since", "If-Unmodified-Since"),
)


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What S3 said about an object (or the requested range of it)."""

    content_length: int
    content_type: str | None
    etag: str | None
    last_modified: datetime | None
    content_range: str | None = None

    @property
    def is_partial(self) -> bool:
        return self.content_range is not None


@dataclass(frozen=True, slots=True)
class NotModified:
    """S3 answered 304: the client's copy is current. Validators to echo back."""

    etag: str | None
    last_modified: datetime | None


def validator_headers(pre: Preconditions) -> dict[str, str]:
    """The validators as HTTP request headers (dates in IMF-fixdate)."""
    headers = {}
    for field, header in _VALIDATORS:
        value = getattr(pre, field)
        if value:
            headers[header] = value if isinstance(value, str) else format_http_date(value)
    return headers


def meta_from_headers(response: ClientResponse) -> ObjectMeta:
    """An object GET's metadata, from S3's response headers."""
    length = response.headers.get("Content-Length", "")
    return ObjectMeta(
        content_length=int(length) if length.isdigit() else 0,
        content_type=response.headers.get("Content-Type"),
        etag=response.headers.get("ETag"),
        last_modified=parse_http_date(response.headers.get("Last-Modified")),
        content_range=response.headers.get("Content-Range"),
    )


def not_modified_from_headers(headers: Any) -> NotModified:
    """S3's 304, from its response headers (aiohttp's or botocore's, both case-insensitive)."""
    return NotModified(headers.get("etag"), parse_http_date(headers.get("last-modified")))
