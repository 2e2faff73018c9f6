"""Bounded in-memory caches (cachetools) and request coalescing.

- ``VariantKey``: what names a variant in the caches, the shared store and its ETag.
- ``VariantCache``: rendered variants, LRU, bounded by total bytes (bodies, keys and a fixed
  overhead per entry).
- ``MetadataCache``: what S3 last said about an object (ETag, size, type), TTL-bounded, so a
  variant's ETag can be known (and a 304 sent) without touching S3.
- ``HotCounter``: requests per object in a window, for ``delivery.mode = "auto"``.
- ``Coalescer``: concurrent identical work runs once; every waiter gets the one result.

These are one process's; ``hostcache/`` has the same caches for every worker on a host (the
``*Caching`` protocols below are what both kinds offer).

Memory is bounded by size, not only by count, whatever keys clients ask for: the metadata cache
and the hot counters key objects by a 16-byte digest of (source, key) (object keys run to
1 KiB) and keep no value over ``MAX_META_CHARS``, so an entry costs a few hundred bytes at most.
cachetools is not thread-safe: all of these are touched only on the event loop thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Final, Generic, Protocol, TypeVar

from cachetools import LRUCache, TTLCache

ENTRY_OVERHEAD: Final = 256  # bytes charged per entry besides the body and the key
MAX_META_CHARS: Final = 256  # an ETag or Content-Type longer than this is not cached
T = TypeVar("T")


def object_id(source: str, key: str) -> bytes:
    """A fixed-size name for an object: what the caches key it by."""
    return hashlib.blake2b(f"{source}\0{key}".encode("utf-8", "surrogatepass"), digest_size=16).digest()


def key_size(key: Hashable) -> int:
    """Roughly what a cache key costs: the length of its parts (a tuple's items, or the fields of
    a slots dataclass such as ``VariantKey``); anything else counts 8 bytes."""
    if isinstance(key, tuple):
        parts: tuple[object, ...] = key
    elif hasattr(key, "__dataclass_fields__"):
        parts = tuple(getattr(key, name) for name in key.__dataclass_fields__)
    else:
        parts = (key,)
    return sum(len(part) if isinstance(part, str | bytes) else 8 for part in parts)


PIPELINE_VERSION: Final = "6"  # bump when rendering changes, so browsers and caches re-fetch


@dataclass(frozen=True, slots=True)
class VariantKey:
    """One variant: the source object (and the version of it, by ETag), the normalised
    parameters, and the output chosen for this request (``fmt=auto`` differs per Accept)."""

    source: str
    key: str
    source_etag: str | None
    canonical: str  # the parameters, normalised
    target: str  # the output format's name, or "source" / "legacy" when decided at encode time

    @property
    def etag(self) -> str:
        """A strong ETag known before anything is read or rendered (so a 304 costs nothing)."""
        digest = hashlib.sha256(f"{PIPELINE_VERSION}|{self.source_etag}|{self.canonical}|{self.target}"
                                .encode())
        return f'"v{PIPELINE_VERSION}-{digest.hexdigest()[:40]}"'

    @property
    def store_name(self) -> str:
        """The shared store's name for it: a digest (keys can be personal data), with the
        pipeline version, since replicas running different releases share the bucket."""
        parts = [PIPELINE_VERSION, self.source, self.key, str(self.source_etag), self.canonical, self.target]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class VariantHead:
    """What a HEAD answer needs of a variant: its type, ETag and size, not its bytes."""

    media_type: str
    etag: str
    length: int


@dataclass(frozen=True, slots=True)
class Variant:
    body: bytes
    media_type: str
    etag: str
    width: int
    height: int

    @property
    def head(self) -> VariantHead:
        return VariantHead(self.media_type, self.etag, len(self.body))


@dataclass(frozen=True, slots=True)
class SourceMeta:
    etag: str | None
    content_length: int
    content_type: str | None


class _VariantLRU(LRUCache[VariantKey, tuple[Variant, int]]):
    """The LRU that tells its owner what it evicts."""

    def __init__(self, maxsize: int, evicted: Callable[[VariantKey], None]) -> None:
        super().__init__(maxsize=maxsize, getsizeof=lambda entry: entry[1])
        self._evicted = evicted

    def popitem(self) -> tuple[VariantKey, tuple[Variant, int]]:
        key, entry = super().popitem()
        self._evicted(key)
        return key, entry


class VariantCache:
    """LRU of rendered variants, bounded by the sum of their sizes. ``max_bytes`` 0 disables.

    It also answers ``holds_any``: whether a variant of the same object, parameters and output
    is cached under *any* source ETag. When none is, a request whose source's ETag is not known
    needs no HEAD to look the variant up: there is nothing to find, and the render's own GET tells
    the ETag (``transform/variants.py``)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # Each entry is (variant, what it costs): the body, the key, and a fixed overhead.
        self._lru = _VariantLRU(max(1, max_bytes), self._forget)
        self._families: dict[VariantKey, int] = {}  # the key without its source ETag -> entries
        self.hits = 0
        self.misses = 0

    @staticmethod
    def family(key: VariantKey) -> VariantKey:
        return replace(key, source_etag=None)

    def get(self, key: VariantKey, *, counted: bool = True) -> Variant | None:
        """The variant, if cached; ``counted`` False: a second look, not a lookup to count."""
        entry = self._lru.get(key) if self.max_bytes else None
        if counted:
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
        return None if entry is None else entry[0]

    def put(self, key: VariantKey, variant: Variant) -> None:
        cost = len(variant.body) + key_size(key) + ENTRY_OVERHEAD
        if self.max_bytes and cost <= self.max_bytes:
            if key not in self._lru:
                family = self.family(key)
                self._families[family] = self._families.get(family, 0) + 1
            self._lru[key] = (variant, cost)

    def holds_any(self, family: VariantKey) -> bool:
        return family in self._families

    def _forget(self, key: VariantKey) -> None:
        family = self.family(key)
        left = self._families.get(family, 0) - 1
        if left > 0:
            self._families[family] = left
        else:
            self._families.pop(family, None)

    @property
    def current_bytes(self) -> int:
        return int(self._lru.currsize) if self.max_bytes else 0

    def __len__(self) -> int:
        return len(self._lru)


class VariantCaching(Protocol):
    """What the variant service needs of a variant cache: this process's or the host's."""

    hits: int
    misses: int

    def get(self, key: VariantKey, *, counted: bool = True) -> Variant | None: ...

    def put(self, key: VariantKey, variant: Variant) -> None: ...

    def holds_any(self, family: VariantKey) -> bool: ...

    @property
    def current_bytes(self) -> int: ...


class MetadataCaching(Protocol):
    """What S3 last said about objects: ``MetadataCache`` or the host's ``HostMetadata``."""

    def get(self, source: str, key: str) -> SourceMeta | None: ...

    def put(self, source: str, key: str, meta: SourceMeta) -> None: ...

    def forget(self, source: str, key: str) -> None: ...

    def __len__(self) -> int: ...


class HotCounting(Protocol):
    """Requests per object in a window: ``HotCounter`` or the host's ``HostHotCounter``."""

    def hit(self, source: str, key: str, window: float) -> int: ...

    def __len__(self) -> int: ...


class Flight(Protocol):
    """Held while a variant is fetched or rendered, so others wanting it wait for it instead."""

    def hold(self, digest: str) -> AbstractAsyncContextManager[None]: ...


class LocalFlight:
    """No lock: one process alone (its ``Coalescer`` already shares work within it)."""

    @asynccontextmanager
    async def hold(self, digest: str) -> AsyncIterator[None]:
        yield


class MetadataCache:
    """(source, key) -> SourceMeta for ``ttl`` seconds, at most ``entries`` entries."""

    def __init__(self, entries: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = ttl > 0
        self._ttl: TTLCache[bytes, SourceMeta] = TTLCache(maxsize=entries, ttl=max(ttl, 0.001), timer=clock)

    def get(self, source: str, key: str) -> SourceMeta | None:
        return self._ttl.get(object_id(source, key)) if self.enabled else None

    def put(self, source: str, key: str, meta: SourceMeta) -> None:
        if not self.enabled:
            return
        if len(meta.etag or "") > MAX_META_CHARS or len(meta.content_type or "") > MAX_META_CHARS:
            self._ttl.pop(object_id(source, key), None)  # odd values are asked for each time
            return
        self._ttl[object_id(source, key)] = meta

    def forget(self, source: str, key: str) -> None:
        self._ttl.pop(object_id(source, key), None)

    def __len__(self) -> int:
        return len(self._ttl)


class HotCounter:
    """Requests per key within a window, in a bounded TTL cache: memory stays bounded whatever
    the key space (the least recently counted keys are dropped first)."""

    def __init__(self, entries: int, max_window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counts: TTLCache[bytes, tuple[float, int]] = TTLCache(
            maxsize=entries, ttl=max(max_window, 0.001), timer=clock)

    def hit(self, source: str, key: str, window: float) -> int:
        """Count one request for the object; return how many fell in the current window."""
        key_id = object_id(source, key)
        now = self._clock()
        started, count = self._counts.get(key_id, (now, 0))
        if now - started >= window:
            started, count = now, 0
        self._counts[key_id] = (started, count + 1)
        return count + 1

    def __len__(self) -> int:
        return len(self._counts)


class Coalescer(Generic[T]):
    """Single flight: the first caller for a key runs the work; later callers await its result."""

    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Future[T]] = {}
        self.coalesced = 0

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The work's result, and whether this caller ran it (False: it waited on another)."""
        pending = self._inflight.get(key)
        if pending is not None:
            self.coalesced += 1
            try:
                return await asyncio.shield(pending), False
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and task is not None and not task.cancelling():
                    return await self.run(key, work)  # the leader was cancelled, not us
                raise
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await work()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(result)
            return result, True
        finally:
            del self._inflight[key]

    def __len__(self) -> int:
        return len(self._inflight)
