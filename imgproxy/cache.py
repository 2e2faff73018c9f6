"""Bounded in-memory caches (cachetools) and request coalescing.

- ``VariantCache``: rendered variants, LRU, bounded by total bytes.
- ``MetadataCache``: what S3 last said about an object (ETag, size, type), TTL-bounded, so a
  variant's ETag can be known (and a 304 sent) without touching S3.
- ``Coalescer``: concurrent identical work runs once; every waiter gets the one result.

cachetools is not thread-safe: all of these are touched only on the event loop thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from cachetools import LRUCache, TTLCache

ENTRY_OVERHEAD: Final = 256  # bytes charged per entry besides the body (key, headers, object)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Variant:
    body: bytes
    media_type: str
    etag: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class SourceMeta:
    etag: str | None
    content_length: int
    content_type: str | None


class VariantCache:
    """LRU of rendered variants, bounded by the sum of their sizes. ``max_bytes`` 0 disables."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lru: LRUCache[Hashable, Variant] = LRUCache(
            maxsize=max(1, max_bytes), getsizeof=lambda v: len(v.body) + ENTRY_OVERHEAD)
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Variant | None:
        variant = self._lru.get(key) if self.max_bytes else None
        if variant is None:
            self.misses += 1
        else:
            self.hits += 1
        return variant

    def put(self, key: Hashable, variant: Variant) -> None:
        if self.max_bytes and len(variant.body) + ENTRY_OVERHEAD <= self.max_bytes:
            self._lru[key] = variant

    @property
    def current_bytes(self) -> int:
        return int(self._lru.currsize) if self.max_bytes else 0

    def __len__(self) -> int:
        return len(self._lru)


class MetadataCache:
    """(source, key) -> SourceMeta for ``ttl`` seconds, at most ``entries`` entries."""

    def __init__(self, entries: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = ttl > 0
        self._ttl: TTLCache[tuple[str, str], SourceMeta] = TTLCache(
            maxsize=entries, ttl=max(ttl, 0.001), timer=clock)

    def get(self, source: str, key: str) -> SourceMeta | None:
        return self._ttl.get((source, key)) if self.enabled else None

    def put(self, source: str, key: str, meta: SourceMeta) -> None:
        if self.enabled:
            self._ttl[(source, key)] = meta

    def forget(self, source: str, key: str) -> None:
        self._ttl.pop((source, key), None)


class HotCounter:
    """Requests per key within a window, in a bounded TTL cache: memory stays bounded whatever
    the key space (the least recently counted keys are dropped first)."""

    def __init__(self, entries: int, max_window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counts: TTLCache[Hashable, tuple[float, int]] = TTLCache(
            maxsize=entries, ttl=max(max_window, 0.001), timer=clock)

    def hit(self, key: Hashable, window: float) -> int:
        """Count one request for ``key``; return how many fell in the current window."""
        now = self._clock()
        started, count = self._counts.get(key, (now, 0))
        if now - started >= window:
            started, count = now, 0
        self._counts[key] = (started, count + 1)
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
