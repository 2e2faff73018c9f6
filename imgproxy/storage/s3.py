"""S3 access for one source: a long-lived aiobotocore client, and get/head/probe on it.

Every botocore or aiohttp exception is translated here into a ``ProxyError`` (the log gets the
detail; the client gets a fixed sentence). Keys are joined to the source's prefix by
``paths.object_key``, so nothing outside the prefix can be requested.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    ReadTimeoutError,
)

from imgproxy.conditional import ByteRange, Preconditions, format_http_date, parse_http_date
from imgproxy.config import SourceConfig
from imgproxy.errors import (
    ObjectNotFound,
    PreconditionFailed,
    ProxyError,
    RangeNotSatisfiable,
    StorageError,
    StorageTimeout,
)
from imgproxy.paths import object_key
from imgproxy.storage.presign import PresignCredentials, locate, presign_get
from imgproxy.storage.reader import ResponseStream, error_code, fetch, open_session

log = logging.getLogger("imgproxy.storage")
T = TypeVar("T")
NO_PRECONDITIONS = Preconditions()
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
# (operation, seconds until S3's answer, the public error code or None): the app's metrics.
StorageObserver = Callable[[str, float, str | None], None]
_DENIED = frozenset({"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                     "ExpiredToken", "InvalidToken", "AccountProblem", "AllAccessDisabled"})


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


class ObjectBody:
    """An open S3 response body; ``close()`` frees its connection at once."""

    def __init__(self, stream: Any, source: SourceConfig) -> None:
        self._stream = stream
        self._source = source

    async def read(self, size: int) -> bytes:
        try:
            data: bytes = await self._stream.read(size)
        except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _translate(self._source, exc, "read") from None
        return data

    def close(self) -> None:
        self._stream.close()


def _session(source: SourceConfig) -> AioSession:
    return AioSession(profile=source.profile) if source.profile else AioSession()


@asynccontextmanager
async def s3_client(source: SourceConfig, session: AioSession | None = None) -> AsyncIterator[Any]:
    """One aiobotocore client for the source's lifetime: bounded pool, timeouts, retries."""
    session = session or _session(source)
    config = AioConfig(
        region_name=source.region,
        signature_version="s3v4",
        connect_timeout=source.connect_timeout,
        read_timeout=source.read_timeout,
        max_pool_connections=source.max_connections,
        retries={"total_max_attempts": source.max_attempts, "mode": "standard"},
        s3={"addressing_style": source.addressing_style},
        # botocore >= 1.36 adds CRC checksums by default; MinIO/R2/older stores reject or
        # mangle them. Only send or check checksums where the API requires them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    kwargs: dict[str, Any] = {"config": config, "region_name": source.region}
    if source.endpoint_url:
        kwargs["endpoint_url"] = source.endpoint_url
    if source.access_key_id is not None and source.secret_access_key is not None:
        kwargs["aws_access_key_id"] = source.access_key_id.reveal()
        kwargs["aws_secret_access_key"] = source.secret_access_key.reveal()
        if source.session_token is not None:
            kwargs["aws_session_token"] = source.session_token.reveal()
    async with session.create_client("s3", **kwargs) as client:
        yield client


def translate_status(source: SourceConfig, status: int, code: str, operation: str) -> ProxyError:
    """An S3 error answer (HTTP status and the XML ``<Code>``) -> the ProxyError a client sees."""
    where = f"source={source.name} op={operation}"
    if code in _NOT_FOUND or (status == 404 and not code):
        return ObjectNotFound(f"{where}: no such key")
    if code in ("PreconditionFailed", "412") or status == 412:
        return PreconditionFailed(f"{where}: precondition failed")
    if code in _DENIED or status == 403:
        log.error("storage denied the proxy's credentials (%s, code=%s)", where, code)
        return StorageError(f"{where}: access denied ({code})")
    if code == "NoSuchBucket":
        log.error("storage says the bucket does not exist (%s)", where)
        return StorageError(f"{where}: no such bucket")
    if status in (301, 307):
        log.error("storage redirected: is sources.%s.region right? (%s, code=%s)", source.name, where, code)
        return StorageError(f"{where}: redirected ({code})")
    log.error("storage error (%s, code=%s, status=%s)", where, code, status)
    return StorageError(f"{where}: {code or status}")


def _translate(source: SourceConfig, exc: BaseException, operation: str) -> ProxyError:
    """One botocore/aiohttp/timeout exception -> the ProxyError a client may see."""
    where = f"source={source.name} op={operation}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return translate_status(source, int(status or 0), str(error.get("Code", "")), operation)
    if isinstance(exc, (TimeoutError, ReadTimeoutError, ConnectTimeoutError)):
        log.error("storage timed out (%s)", where)
        return StorageTimeout(f"{where}: timed out")
    if isinstance(exc, NoCredentialsError):
        log.error("no AWS credentials found for the source (%s)", where)
        return StorageError(f"{where}: no credentials")
    log.error("storage unreachable (%s): %s", where, exc.__class__.__name__)
    return StorageError(f"{where}: {exc.__class__.__name__}")


class Credentials:
    """The source's credentials as plain values for presigning: explicit ones from the config,
    else the standard AWS chain (refreshed by botocore before temporary ones expire)."""

    def __init__(self, source: SourceConfig, session: AioSession) -> None:
        self._source = source
        self._session = session
        self._chain: Any = None

    def __repr__(self) -> str:
        return f"Credentials(source={self._source.name!r})"

    async def current(self) -> tuple[PresignCredentials, float | None]:
        """Frozen credentials and, for temporary ones, when they expire (unix seconds)."""
        src = self._source
        if src.access_key_id is not None and src.secret_access_key is not None:
            token = src.session_token.reveal() if src.session_token else None
            return PresignCredentials(src.access_key_id.reveal(), src.secret_access_key.reveal(), token), None
        if self._chain is None:
            self._chain = await self._session.get_credentials()
        if self._chain is None:
            log.error("no AWS credentials found for presigning (source=%s)", src.name)
            raise StorageError(f"source={src.name}: no credentials")
        frozen = await self._chain.get_frozen_credentials()
        expiry = getattr(self._chain, "_expiry_time", None)
        expires = expiry.timestamp() if isinstance(expiry, datetime) else None
        return PresignCredentials(frozen.access_key, frozen.secret_key, frozen.token), expires


@asynccontextmanager
async def open_source(config: SourceConfig,
                      clock: Callable[[], float] = time.time) -> AsyncIterator[S3Source]:
    """An ``S3Source`` with its clients and credentials, for the app's lifetime."""
    session = _session(config)
    async with s3_client(config, session) as client, open_session(config) as http:
        yield S3Source(config, client, Credentials(config, session), http, clock)


class S3Source:
    """Object reads from one configured source; the client is owned by the app's cleanup_ctx."""

    def __init__(self, config: SourceConfig, client: Any, credentials: Credentials,
                 session: aiohttp.ClientSession, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock  # signing time of the GETs' presigned URLs
        self.client = client  # aiobotocore: HEAD and LIST
        self.session = session  # aiohttp: body GETs (storage/reader.py)
        self.credentials = credentials
        self.observe: StorageObserver = _ignore
        self.location = locate(config.endpoint_url, config.region, config.bucket, config.addressing_style)

    def presign(self, key: str, signed_at: int, expires_in: int, response_headers: dict[str, str],
                creds: PresignCredentials) -> str:
        """A presigned GET URL for ``key`` (inside the prefix), signed at ``signed_at``."""
        return presign_get(self.location, self.config.bucket, object_key(self.config.prefix, key), creds,
                           signed_at=datetime.fromtimestamp(signed_at, UTC), expires_in=expires_in,
                           response_headers=response_headers)

    def __repr__(self) -> str:
        return f"S3Source(name={self.config.name!r})"

    @property
    def deadline(self) -> float:
        """The most a call may take until S3's response headers, retries included."""
        return self.config.connect_timeout + self.config.read_timeout

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started, code = time.perf_counter(), None
        try:
            async with asyncio.timeout(self.deadline):
                return await call()
        except (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = _translate(self.config, exc, operation)
            code = error.code
            raise error from None
        finally:
            self.observe(operation, time.perf_counter() - started, code)

    def _request(self, key: str, pre: Preconditions) -> dict[str, Any]:
        request: dict[str, Any] = {"Bucket": self.config.bucket, "Key": object_key(self.config.prefix, key)}
        if pre.if_none_match:
            request["IfNoneMatch"] = pre.if_none_match
        if pre.if_modified_since:
            request["IfModifiedSince"] = pre.if_modified_since
        if pre.if_match:
            request["IfMatch"] = pre.if_match
        if pre.if_unmodified_since:
            request["IfUnmodifiedSince"] = pre.if_unmodified_since
        return request

    @staticmethod
    def _not_modified(exc: ClientError) -> NotModified | None:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 304:
            return None
        headers = exc.response["ResponseMetadata"].get("HTTPHeaders", {})
        return NotModified(headers.get("etag"), parse_http_date(headers.get("last-modified")))

    async def head(self, key: str, pre: Preconditions = NO_PRECONDITIONS) -> ObjectMeta | NotModified:
        request = self._request(key, pre)
        try:
            response = await self._call("head", lambda: self._head_or_304(request))
        except _NotModifiedSignal as signal:
            return signal.answer
        return _meta(response)

    async def _head_or_304(self, request: dict[str, Any]) -> Any:
        try:
            return await self.client.head_object(**request)
        except ClientError as exc:
            answer = self._not_modified(exc)
            if answer is not None:
                raise _NotModifiedSignal(answer) from None
            raise

    async def get(
        self, key: str, byte_range: ByteRange | None = None, pre: Preconditions = NO_PRECONDITIONS
    ) -> tuple[ObjectMeta, ObjectBody] | NotModified:
        """Open the object (or one range of it); the caller must ``close()`` the body.

        S3 evaluates the validators and the range itself, so a 304 or a 206 reads no bytes
        that are then thrown away."""
        started, code = time.perf_counter(), None
        try:
            return await self._get(key, byte_range, pre)
        except ProxyError as exc:
            code = exc.code
            raise
        finally:
            self.observe("get", time.perf_counter() - started, code)

    async def _get(
        self, key: str, byte_range: ByteRange | None, pre: Preconditions
    ) -> tuple[ObjectMeta, ObjectBody] | NotModified:
        headers = _validator_headers(pre)
        if byte_range is not None:
            headers["Range"] = byte_range.header()
            if pre.if_range_etag:
                headers.setdefault("If-Match", pre.if_range_etag)
            elif pre.if_range_date:
                headers.setdefault("If-Unmodified-Since", format_http_date(pre.if_range_date))
        response = await self._open(key, headers)
        status = response.status
        if status in (200, 206):
            return _meta_from_headers(response), ObjectBody(ResponseStream(response), self.config)
        if status == 304:
            response.release()
            return NotModified(response.headers.get("ETag"),
                               parse_http_date(response.headers.get("Last-Modified")))
        code = await error_code(response)
        if status == 412 and byte_range is not None and (pre.if_range_etag or pre.if_range_date):
            # If-Range did not match: RFC 9110 13.1.5 says send the whole, current object.
            return await self._get(key, None, Preconditions(pre.if_none_match, pre.if_modified_since,
                                                           pre.if_match, pre.if_unmodified_since))
        if status == 416 or code == "InvalidRange":
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            size = total if total.isdigit() else await self._size(key)
            raise RangeNotSatisfiable("range outside object", headers={"Content-Range": f"bytes */{size}"})
        raise translate_status(self.config, status, code, "get")

    async def _open(self, key: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        try:
            credentials, _ = await self.credentials.current()
            async with asyncio.timeout(self.deadline):
                return await fetch(self.session, self.location, self.config.bucket,
                                   object_key(self.config.prefix, key), credentials, headers,
                                   self.config.max_attempts, self.clock())
        except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _translate(self.config, exc, "get") from None

    async def _size(self, key: str) -> int | str:
        try:
            meta = await self.head(key)
        except ProxyError:
            return "*"
        return meta.content_length if isinstance(meta, ObjectMeta) else "*"

    async def probe(self) -> None:
        """Prove the bucket is reachable with the configured credentials (one small LIST)."""
        await self._call("probe", lambda: self.client.list_objects_v2(
            Bucket=self.config.bucket, Prefix=self.config.prefix, MaxKeys=1))


def _ignore(operation: str, seconds: float, error_code: str | None) -> None:
    pass


class _NotModifiedSignal(Exception):
    def __init__(self, answer: NotModified) -> None:
        super().__init__("not modified")
        self.answer = answer


def _validator_headers(pre: Preconditions) -> dict[str, str]:
    headers = {}
    if pre.if_none_match:
        headers["If-None-Match"] = pre.if_none_match
    if pre.if_modified_since:
        headers["If-Modified-Since"] = format_http_date(pre.if_modified_since)
    if pre.if_match:
        headers["If-Match"] = pre.if_match
    if pre.if_unmodified_since:
        headers["If-Unmodified-Since"] = format_http_date(pre.if_unmodified_since)
    return headers


def _meta_from_headers(response: aiohttp.ClientResponse) -> ObjectMeta:
    length = response.headers.get("Content-Length", "")
    return ObjectMeta(
        content_length=int(length) if length.isdigit() else 0,
        content_type=response.headers.get("Content-Type"),
        etag=response.headers.get("ETag"),
        last_modified=parse_http_date(response.headers.get("Last-Modified")),
        content_range=response.headers.get("Content-Range"),
    )


def _meta(response: dict[str, Any]) -> ObjectMeta:
    return ObjectMeta(
        content_length=int(response.get("ContentLength", 0)),
        content_type=response.get("ContentType"),
        etag=response.get("ETag"),
        last_modified=response.get("LastModified"),
        content_range=response.get("ContentRange"),
    )
