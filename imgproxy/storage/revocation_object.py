"""The polled revocation object (``auth.revocations_url``): one conditional GET of it.

``fetch(etag)`` asks with ``If-None-Match``, so an unchanged list costs S3 a 304 and this
process nothing; a changed one is read whole (at most ``MAX_OBJECT_BYTES``, never more into
memory). Every failure is a ``FetchFailed`` with a short, fixed ``kind`` (the metric's label and
the log's word), never an exception text, which may hold the presigned request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from imgproxy.config import SourceConfig
from imgproxy.config.revocations import MAX_OBJECT_BYTES
from imgproxy.storage.clients import s3_client
from imgproxy.storage.tls import tls_problem, warn_if_unverified

BODY_SECONDS: Final = 60.0  # a changed list (up to 64 MiB) must be read within this
_DENIED: Final = frozenset({"AccessDenied", "Forbidden", "403", "InvalidAccessKeyId",
                            "SignatureDoesNotMatch"})
_MISSING: Final = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_UNCHANGED: Final = frozenset({"304", "NotModified"})
# The kinds of a failed fetch; web/polling.py adds "invalid" (the body) and "internal" (a bug).
KINDS: Final = ("unreachable", "timeout", "tls", "no_credentials", "denied", "not_found",
                "s3_error", "too_large")


class FetchFailed(Exception):
    """The object could not be read; ``kind`` is one of ``KINDS``."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail  # safe to log: a status, a code, a TLS reason, a parse error


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    etag: str


def _kind(exc: BaseException) -> FetchFailed:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _DENIED or status == 403:
            return FetchFailed("denied", f"HTTP {status} {code}".strip())
        if code in _MISSING or status == 404:
            return FetchFailed("not_found", f"HTTP {status} {code}".strip())
        return FetchFailed("s3_error", f"HTTP {status} {code}".strip())
    if (problem := tls_problem(exc)) is not None:
        return FetchFailed("tls", problem)
    if isinstance(exc, TimeoutError):
        return FetchFailed("timeout")
    if isinstance(exc, NoCredentialsError):
        return FetchFailed("no_credentials")
    return FetchFailed("unreachable", exc.__class__.__name__)


class RevocationObject:
    """Conditional GETs of one object; the client is owned by ``open_revocation_object``."""

    def __init__(self, config: SourceConfig, key: str, client: Any) -> None:
        self.config = config
        self.key = key
        self.client = client

    def __repr__(self) -> str:
        return f"RevocationObject(bucket={self.config.bucket!r}, key={self.key!r})"

    async def fetch(self, etag: str | None) -> Fetched | None:
        """The object, or None if it still has ``etag``; raises ``FetchFailed``."""
        request = {"Bucket": self.config.bucket, "Key": self.key}
        if etag is not None:
            request["IfNoneMatch"] = etag
        try:
            async with asyncio.timeout(self.config.connect_timeout + self.config.read_timeout):
                response = await self.client.get_object(**request)
            async with asyncio.timeout(BODY_SECONDS), response["Body"] as stream:
                if int(response.get("ContentLength", 0) or 0) > MAX_OBJECT_BYTES:
                    raise FetchFailed("too_large", f"{response['ContentLength']} bytes")
                body: bytes = await stream.read(MAX_OBJECT_BYTES + 1)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _UNCHANGED:
                return None
            raise _kind(exc) from None
        except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _kind(exc) from None
        if len(body) > MAX_OBJECT_BYTES:
            raise FetchFailed("too_large", f"more than {MAX_OBJECT_BYTES} bytes")
        return Fetched(body, str(response.get("ETag", "")))


@asynccontextmanager
async def open_revocation_object(config: SourceConfig, key: str) -> AsyncIterator[RevocationObject]:
    """A ``RevocationObject`` and its client, for the app's lifetime."""
    warn_if_unverified(config, "auth.revocations_s3")
    async with s3_client(config) as client:
        yield RevocationObject(config, key, client)
