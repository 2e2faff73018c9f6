"""``S3Source``: one configured source's object reads (GET, HEAD, probe), each through one of its pools.

It owns the order of a read, not its parts: the values it returns (``storage/objects.py``), the
aiobotocore client for the readiness LIST (``storage/clients.py``), the presigned GETs and HEADs
(``storage/presigned_get.py``), the URL and limits an image worker reads a transform's source
with (``storage/worker_read.py``), their credentials (``storage/credentials.py``), the open body
that can detach and resume (``storage/body.py``), and the translation of every botocore, aiohttp
or worker read failure into a ``ProxyError`` (``storage/errors.py``: the log gets the detail, the
client a fixed sentence). Keys are joined to the source's prefix by ``paths.object_key``, so
nothing outside the prefix can be requested. Each use in this process holds a slot of its own
pool (``storage/pool.py``) while it holds a connection: streamed originals, reads, and HEAD/LIST
cannot starve one another, and a full pool is a quick 503, not a timeout. (A worker's read holds
the worker instead: at most ``transform.workers`` of them at once.)
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, Literal, TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from imgproxy.config import SourceConfig
from imgproxy.errors import ProxyError, RangeNotSatisfiable, StorageError
from imgproxy.protocol.conditional import ByteRange, Preconditions, format_http_date
from imgproxy.protocol.paths import object_key
from imgproxy.storage.body import ObjectBody, ResumeFrom
from imgproxy.storage.clients import new_session, s3_client
from imgproxy.storage.credentials import Credentials
from imgproxy.storage.errors import translate, translate_read, translate_status
from imgproxy.storage.objects import (
    NotModified,
    ObjectMeta,
    meta_from_headers,
    not_modified_from_headers,
    validator_headers,
)
from imgproxy.storage.pool import CALLS, READS, STREAMS, ExhaustionObserver, Slot, SlotPool, take
from imgproxy.storage.presign import PresignCredentials, locate, presign_get
from imgproxy.storage.presigned_get import URL_LIFETIME, error_code, fetch, open_session
from imgproxy.storage.tls import warn_if_unverified
from imgproxy.storage.worker_read import SourceRead, SourceReadFailed

log = logging.getLogger("imgproxy.storage")
T = TypeVar("T")
NO_PRECONDITIONS = Preconditions()
_CONTENT_RANGE: Final = re.compile(r"bytes (\d+)-(\d+)/(?:\d+|\*)$")
# (operation, seconds until S3's answer, the public error code or None): the app's metrics.
StorageObserver = Callable[[str, float, str | None], None]


@asynccontextmanager
async def open_source(config: SourceConfig,
                      clock: Callable[[], float] = time.time) -> AsyncIterator[S3Source]:
    """An ``S3Source`` with its clients and credentials, for the app's lifetime."""
    warn_if_unverified(config, f"sources.{config.name}")
    session = new_session(config)
    async with s3_client(config, session) as client, open_session(config) as http:
        yield S3Source(config, client, Credentials(config, session), http, clock)


class S3Source:
    """Object reads from one configured source; the client is owned by the app's cleanup_ctx."""

    def __init__(self, config: SourceConfig, client: Any, credentials: Credentials,
                 session: aiohttp.ClientSession, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock  # signing time of the GETs' presigned URLs
        self.client = client  # aiobotocore: HEAD and LIST
        self.session = session  # aiohttp: body GETs (storage/presigned_get.py)
        self.credentials = credentials
        self.observe: StorageObserver = _ignore
        self.location = locate(config.endpoint_url, config.region, config.bucket, config.addressing_style)
        self.pools = {name: SlotPool(config.name, name, config.max_connections, config.pool_timeout)
                      for name in (STREAMS, READS, CALLS)}

    @property
    def streams(self) -> SlotPool:
        return self.pools[STREAMS]

    def observe_exhaustion(self, observer: ExhaustionObserver) -> None:
        for pool in self.pools.values():
            pool.observe = observer

    def presign(self, key: str, signed_at: int, expires_in: int, response_headers: dict[str, str],
                creds: PresignCredentials) -> str:
        """A presigned GET URL for ``key`` (inside the prefix), signed at ``signed_at``."""
        return presign_get(self.location, self.config.bucket, object_key(self.config.prefix, key), creds,
                           signed_at=datetime.fromtimestamp(signed_at, UTC), expires_in=expires_in,
                           response_headers=response_headers)

    def serving(self, config: SourceConfig) -> S3Source:
        """This source (its clients, credentials, pools) with ``config``'s serving settings
        (``cache_control``, ``delivery``, ``fallback``): a reload's. The connection settings must be this
        source's own (``config.restart`` keeps them so)."""
        if config == self.config:
            return self
        view = copy.copy(self)
        view.config = config
        return view

    def __repr__(self) -> str:
        return f"S3Source(name={self.config.name!r})"

    @property
    def deadline(self) -> float:
        """The most a call may take until S3's response headers, retries included."""
        return self.config.connect_timeout + self.config.read_timeout

    @contextlib.contextmanager
    def _observed(self, operation: str) -> Iterator[None]:
        """Time the block and report it, with the public code of the ProxyError it raised."""
        started, code = time.perf_counter(), None
        try:
            yield
        except ProxyError as exc:
            code = exc.code
            raise
        finally:
            self.observe(operation, time.perf_counter() - started, code)

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        slot = await take(self.pools[CALLS])
        try:
            with self._observed(operation):
                try:
                    async with asyncio.timeout(self.deadline):
                        return await call()
                except (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                    raise translate(self.config, exc, operation) from None
        finally:
            slot.release()

    async def head(self, key: str, pre: Preconditions = NO_PRECONDITIONS) -> ObjectMeta | NotModified:
        """The object's headers (a presigned HEAD, like the body GETs), or S3's 304."""
        slot = await take(self.pools[CALLS])
        try:
            with self._observed("head"):
                response = await self._open(key, validator_headers(pre), "HEAD")
                response.release()  # a HEAD answer has no body, an error's neither
                if response.status == 200:
                    return meta_from_headers(response)
                if response.status == 304:
                    return not_modified_from_headers(response.headers)
                raise translate_status(self.config, response.status, "", "head")
        finally:
            slot.release()

    async def get(
        self, key: str, byte_range: ByteRange | None = None, pre: Preconditions = NO_PRECONDITIONS,
        *, stream: bool = False,
    ) -> tuple[ObjectMeta, ObjectBody] | NotModified:
        """Open the object (or one range of it); the caller must ``close()`` the body.

        S3 evaluates the validators and the range itself, so a 304 or a 206 reads no bytes
        that are then thrown away. ``stream``: the body goes to a client at the client's pace
        (the streams pool, and it may detach while the client stalls); else it is read at once
        (the reads pool)."""
        slot = await take(self.pools[STREAMS if stream else READS])
        with self._observed("get"), slot.released_on_failure():
            result = await self._get(key, byte_range, pre, slot, stream)
        if isinstance(result, NotModified):
            slot.release()
        return result

    async def _get(
        self, key: str, byte_range: ByteRange | None, pre: Preconditions, slot: Slot, stream: bool,
    ) -> tuple[ObjectMeta, ObjectBody] | NotModified:
        headers = validator_headers(pre)
        if byte_range is not None:
            headers["Range"] = byte_range.header()
            if pre.if_range_etag:
                headers.setdefault("If-Match", pre.if_range_etag)
            elif pre.if_range_date:
                headers.setdefault("If-Unmodified-Since", format_http_date(pre.if_range_date))
        response = await self._open(key, headers)
        status = response.status
        if status in (200, 206):
            meta = meta_from_headers(response)
            resume = self._resume_from(meta) if stream else None
            return meta, ObjectBody(response, slot, self.config,
                                    (resume, partial(self._reopen, key)) if resume is not None else None)
        if status == 304:
            response.release()
            return not_modified_from_headers(response.headers)
        code = await error_code(response)
        if status == 412 and byte_range is not None and (pre.if_range_etag or pre.if_range_date):
            # If-Range did not match: RFC 9110 13.1.5 says send the whole, current object.
            whole = replace(pre, if_range_etag=None, if_range_date=None)
            return await self._get(key, None, whole, slot, stream)
        if status == 416 or code == "InvalidRange":
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            size = total if total.isdigit() else await self._size(key)
            raise RangeNotSatisfiable("range outside object", headers={"Content-Range": f"bytes */{size}"})
        raise translate_status(self.config, status, code, "get")

    async def _open(self, key: str, headers: dict[str, str],
                    method: Literal["GET", "HEAD"] = "GET") -> aiohttp.ClientResponse:
        try:
            credentials, _ = await self.credentials.current()
            async with asyncio.timeout(self.deadline):
                return await fetch(self.session, self.location, self.config.bucket,
                                   object_key(self.config.prefix, key), credentials, headers,
                                   self.config.max_attempts, self.clock(), method)
        except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise translate(self.config, exc, method.lower()) from None

    @staticmethod
    def _resume_from(meta: ObjectMeta) -> ResumeFrom | None:
        """Where the body lies in its object, if it can be reopened there (a strong ETag)."""
        if not meta.etag or meta.etag.startswith("W/"):
            return None
        if meta.content_range is None:
            return ResumeFrom(meta.etag, 0, None)
        span = _CONTENT_RANGE.match(meta.content_range)
        return ResumeFrom(meta.etag, int(span.group(1)), int(span.group(2))) if span else None

    async def _reopen(self, key: str, etag: str, offset: int,
                      last: int | None) -> tuple[aiohttp.ClientResponse, Slot]:
        """A detached stream picks up at ``offset``: the same object version, or a failure."""
        slot = await take(self.streams)
        with self._observed("resume"), slot.released_on_failure():
            headers = {"Range": f"bytes={offset}-{'' if last is None else last}", "If-Match": etag}
            response = await self._open(key, headers)
            span = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if response.status == 206 and span and int(span.group(1)) == offset:
                return response, slot
            status, reason = response.status, await error_code(response)
            if status == 412:
                raise StorageError(f"source={self.config.name}: the object changed while it streamed")
            raise translate_status(self.config, status, reason, "resume")

    async def worker_read(self, key: str, max_bytes: int) -> SourceRead:
        """What an image worker needs to GET ``key`` itself (``storage/worker_read.py``): a URL
        presigned for this job only, and this source's timeouts, retries and TLS trust."""
        try:
            credentials, _ = await self.credentials.current()
        except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise translate(self.config, exc, "get") from None
        config = self.config
        url = self.presign(key, int(self.clock()), URL_LIFETIME, {}, credentials)
        return SourceRead(url, config.name, max_bytes, config.connect_timeout, config.read_timeout,
                          config.max_attempts, config.ca_bundle, config.verify_tls)

    def worker_read_done(self, seconds: float) -> None:
        self.observe("get", seconds, None)

    def worker_read_failed(self, failed: SourceReadFailed) -> ProxyError:
        """The error (and log line) a GET of this process's own would have given."""
        error = translate_read(self.config, failed)
        self.observe("get", failed.seconds, error.code)
        return error

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
