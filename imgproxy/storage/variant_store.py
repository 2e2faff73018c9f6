"""The shared variant store: rendered variants kept in an S3 bucket/prefix that replicas share.

It is an optimisation, never a dependency: a lookup that fails is a miss, a write that fails is
forgotten, and neither reaches the client. Each failure is counted (``observe``) and logged at
most once per ``LOG_EVERY`` seconds per kind, so a store that is down does not flood the log.
Writes run as background tasks (at most ``max_pending`` at once; more are dropped and counted),
so a response never waits for one.

Objects are named ``prefix + VariantKey.store_name`` (a sha256): the key (source, object key,
source ETag, normalised parameters, output format) may hold personal data and need not be a
valid S3 key.
The media type is the object's ``Content-Type``, its size the object's; the variant's ETag and
pixel size are user metadata. So a HEAD of the stored object (``head``) tells a HEAD request
everything it answers, without reading the variant's bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from imgproxy.cache import Variant, VariantHead, VariantKey
from imgproxy.config import SourceConfig
from imgproxy.storage.clients import s3_client
from imgproxy.storage.tls import tls_problem, warn_if_unverified

log = logging.getLogger("imgproxy.store")
LOG_EVERY: Final = 60.0  # seconds between two log lines about the same kind of failure
CLOSE_GRACE: Final = 5.0  # seconds pending writes get to finish at shutdown
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_FAILURES = (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError, OSError, KeyError, ValueError)
# (operation "get" | "head" | "put", result "hit" | "miss" | "stored" | "dropped" | "error"): the
# app's metrics.
StoreObserver = Callable[[str, str], None]


def object_key(prefix: str, name: VariantKey) -> str:
    """The S3 key for a variant: its digest (``VariantKey.store_name``), so nothing about the
    request shows in the bucket."""
    digest = name.store_name
    return f"{prefix}{digest[:2]}/{digest}"


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "") or "client_error")
    if isinstance(exc, (TimeoutError, ReadTimeoutError, ConnectTimeoutError)):
        return "timeout"
    if (problem := tls_problem(exc)) is not None:
        return f"TLS ({problem}; is cache.store.ca_bundle right?)"
    return exc.__class__.__name__


class StoredVariantTooLarge(ValueError):
    """A stored object over the store's size limit: never read into memory, rendered instead."""


class VariantStore:
    """get/put of variants in one bucket/prefix; the client is owned by ``open_store``."""

    def __init__(self, config: SourceConfig, client: Any, max_pending: int, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.client = client
        self.max_pending = max_pending
        self.max_bytes = max_bytes  # a stored body larger than this is not read (a failure)
        self.observe: StoreObserver = _ignore
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()
        self._logged: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"VariantStore(bucket={self.config.bucket!r}, prefix={self.config.prefix!r})"

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def deadline(self) -> float:
        return self.config.connect_timeout + self.config.read_timeout

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.observe(operation, "error")
        self._log(operation, failure_kind(exc))

    def _log(self, operation: str, kind: str) -> None:
        now, last = self._clock(), self._logged.get(f"{operation}:{kind}")
        if last is None or now - last >= LOG_EVERY:
            self._logged[f"{operation}:{kind}"] = now
            log.warning("variant store %s failed (bucket=%s, error=%s); rendering instead, "
                        "next such line in %gs at the earliest", operation, self.config.bucket, kind,
                        LOG_EVERY)

    def _refused(self, operation: str, exc: ClientError) -> None:
        """Count an error answer: "not stored" is a miss; anything else a failure (and logged)."""
        if failure_kind(exc) in _NOT_FOUND or exc.response.get(
                "ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            self.observe(operation, "miss")
        else:
            self._failed(operation, exc)

    async def head(self, name: VariantKey) -> VariantHead | None:
        """What the stored variant is (type, ETag, size) from a HEAD of its object, or None: not
        stored, over the size limit (``get`` would refuse it too), or the store failed."""
        request = {"Bucket": self.config.bucket, "Key": object_key(self.config.prefix, name)}
        try:
            async with asyncio.timeout(self.deadline):
                response = await self.client.head_object(**request)
            length = int(response["ContentLength"])
            if length > self.max_bytes:
                raise StoredVariantTooLarge(f"{length} bytes")
            head = VariantHead(media_type=response["ContentType"], etag=response["Metadata"]["etag"],
                               length=length)
        except ClientError as exc:
            self._refused("head", exc)
            return None
        except _FAILURES as exc:
            self._failed("head", exc)
            return None
        self.observe("head", "hit")
        return head

    async def get(self, name: VariantKey) -> Variant | None:
        """The stored variant, or None: not stored, or the store failed (counted and logged)."""
        request = {"Bucket": self.config.bucket, "Key": object_key(self.config.prefix, name)}
        try:
            async with asyncio.timeout(self.deadline):
                response = await self.client.get_object(**request)
                async with response["Body"] as stream:
                    if response.get("ContentLength", 0) > self.max_bytes:
                        raise StoredVariantTooLarge(f"{response['ContentLength']} bytes")
                    body: bytes = await stream.read(self.max_bytes + 1)
                    if len(body) > self.max_bytes:
                        raise StoredVariantTooLarge(f"more than {self.max_bytes} bytes")
            meta = response.get("Metadata", {})
            variant = Variant(body=body, media_type=response["ContentType"], etag=meta["etag"],
                              width=int(meta["width"]), height=int(meta["height"]))
        except ClientError as exc:
            self._refused("get", exc)
            return None
        except _FAILURES as exc:
            self._failed("get", exc)
            return None
        self.observe("get", "hit")
        return variant

    def put(self, name: VariantKey, variant: Variant) -> None:
        """Write the variant in the background; beyond ``max_pending`` writes, drop it."""
        if len(self._pending) >= self.max_pending:
            self.observe("put", "dropped")
            self._log("put", "too_many_pending_writes")
            return
        task = asyncio.get_running_loop().create_task(self._put(name, variant))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _put(self, name: VariantKey, variant: Variant) -> None:
        request = {
            "Bucket": self.config.bucket, "Key": object_key(self.config.prefix, name),
            "Body": variant.body, "ContentType": variant.media_type,
            "Metadata": {"etag": variant.etag, "width": str(variant.width), "height": str(variant.height)},
        }
        try:
            async with asyncio.timeout(self.deadline):
                await self.client.put_object(**request)
        except _FAILURES as exc:
            self._failed("put", exc)
        else:
            self.observe("put", "stored")

    async def drain(self, grace: float = CLOSE_GRACE) -> None:
        """Let pending writes finish (at most ``grace`` seconds), then cancel the rest."""
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
            log.warning("variant store: %d writes cancelled at shutdown", len(late))


@asynccontextmanager
async def open_store(config: SourceConfig, max_pending: int,
                     max_bytes: int) -> AsyncIterator[VariantStore]:
    """A ``VariantStore`` and its client for the app's lifetime; pending writes drain at exit."""
    warn_if_unverified(config, "cache.store")
    async with s3_client(config) as client:
        store = VariantStore(config, client, max_pending, max_bytes)
        try:
            yield store
        finally:
            await store.drain()


def _ignore(operation: str, result: str) -> None:
    pass
