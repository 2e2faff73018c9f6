"""SigV4 presigned GET (and HEAD) URLs with a chosen signing time, so a URL can stay identical for a window.

Pure: plain values in, a URL out (no clock, no network, no aiobotocore). botocore always signs
with the current time, which gives every request a new URL and defeats the browser cache; this
module signs with ``signed_at`` instead (``delivery.policy.presign_window`` rounds it down). The
algorithm is AWS Signature Version 4, query-string form, with ``UNSIGNED-PAYLOAD`` and only the
``host`` header signed; ``tests/storage/test_presign.py`` checks it byte for byte against
botocore's own presigner at the same instant.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

from imgproxy.config import MAX_TTL_LIMIT, AddressingStyle
from imgproxy.protocol.paths import percent_encode


@dataclass(frozen=True, slots=True)
class PresignCredentials:
    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:
        return f"PresignCredentials(access_key={self.access_key[:4]!r}…, secret_key='**********')"


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where a bucket answers: scheme, host[:port], and path- or virtual-hosted addressing."""

    scheme: str
    host: str
    path_style: bool
    region: str


def locate(endpoint_url: str | None, region: str, bucket: str,
           addressing_style: AddressingStyle) -> S3Location:
    """The bucket's URL base. AWS defaults to virtual-hosted; custom endpoints to path-style."""
    if endpoint_url:
        parts = urlsplit(endpoint_url)
        path_style = addressing_style != AddressingStyle.VIRTUAL
        host = parts.netloc if path_style else f"{bucket}.{parts.netloc}"
        return S3Location(parts.scheme, host, path_style, region)
    if addressing_style == AddressingStyle.PATH or "." in bucket:
        return S3Location("https", f"s3.{region}.amazonaws.com", True, region)
    return S3Location("https", f"{bucket}.s3.{region}.amazonaws.com", False, region)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


@functools.lru_cache(maxsize=16)
def _signing_key(secret_key: str, day: str, region: str) -> bytes:
    """SigV4's key for one day and region: four HMACs, the same for every URL signed that day."""
    return _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), day), region), "s3"), "aws4_request")


def presign_get(
    location: S3Location,
    bucket: str,
    key: str,
    credentials: PresignCredentials,
    *,
    signed_at: datetime,
    expires_in: int,
    response_headers: Mapping[str, str] | None = None,
    method: Literal["GET", "HEAD"] = "GET",
) -> str:
    """A presigned GET URL, valid from ``signed_at`` for ``expires_in`` seconds (``method``
    HEAD: the same object's headers, as the proxy's own HEADs ask for them).

    ``response_headers`` are S3's ``response-*`` overrides, e.g. ``{"response-cache-control":
    "private, max-age=3600"}``: S3 answers with those headers, which is what the browser caches.
    """
    if not 1 <= expires_in <= MAX_TTL_LIMIT:
        raise ValueError(f"expires_in must be 1..{MAX_TTL_LIMIT} seconds")
    moment = signed_at.astimezone(UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    scope = f"{day}/{location.region}/s3/aws4_request"
    path = f"/{bucket}/{key}" if location.path_style else f"/{key}"
    canonical_uri = percent_encode(path, keep_slash=True)
    query = {
        **(response_headers or {}),
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{credentials.access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires_in),
        "X-Amz-SignedHeaders": "host",
    }
    if credentials.token:
        query["X-Amz-Security-Token"] = credentials.token
    encoded = sorted((percent_encode(k, keep_slash=False), percent_encode(v, keep_slash=False))
                     for k, v in query.items())
    canonical_query = "&".join(f"{name}={value}" for name, value in encoded)
    canonical_request = "\n".join(
        [method, canonical_uri, canonical_query, f"host:{location.host}", "", "host", "UNSIGNED-PAYLOAD"])
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    signing_key = _signing_key(credentials.secret_key, day, location.region)
    signature = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return (f"{location.scheme}://{location.host}{canonical_uri}?{canonical_query}"
            f"&X-Amz-Signature={signature}")
