"""Bounds on what one source's S3 connections are used for, so one use cannot starve another.

Each source has three: ``streams`` (bodies of originals streamed to clients, held as long as the
client takes), ``reads`` (transform sources and small ranged reads, held for one download), and
``calls`` (HEAD and LIST through botocore). Each holds ``max_connections`` slots; a request that
waits longer than ``pool_timeout`` for one is refused as an overload (503 ``overloaded`` with
``Retry-After``), never left to run into the storage timeout as if S3 were slow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Final

from imgproxy.errors import StorageBusy

STREAMS: Final = "streams"
READS: Final = "reads"
CALLS: Final = "calls"
# (source, pool) of a refused wait: the app's metrics.
ExhaustionObserver = Callable[[str, str], None]


class SlotPool:
    """``size`` slots, taken before a connection is used and given back when it is free again."""

    def __init__(self, source: str, name: str, size: int, timeout: float) -> None:
        self.source = source
        self.name = name
        self.size = size
        self.timeout = timeout
        self.observe: ExhaustionObserver = lambda source, pool: None
        self._free = asyncio.Semaphore(size)
        self.in_use = 0
        self.waiting = 0

    def __repr__(self) -> str:
        return f"SlotPool({self.source}/{self.name}: {self.in_use}/{self.size})"

    @property
    def is_pressed(self) -> bool:
        """At least half the slots are taken: stalled streams should let theirs go."""
        return self.in_use * 2 >= self.size

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            async with asyncio.timeout(self.timeout):
                await self._free.acquire()
        except TimeoutError:
            self.observe(self.source, self.name)
            raise StorageBusy(f"source={self.source} pool={self.name}: all {self.size} connections "
                              f"busy for {self.timeout:g}s") from None
        finally:
            self.waiting -= 1
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        self._free.release()


class Slot:
    """One taken slot, given back exactly once however many times ``release`` is called."""

    def __init__(self, pool: SlotPool) -> None:
        self.pool = pool
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.pool.release()

    @contextlib.contextmanager
    def released_on_failure(self) -> Iterator[None]:
        """The block passes the slot on (to a body) if it succeeds, and gives it back if not."""
        try:
            yield
        except BaseException:
            self.release()
            raise


async def take(pool: SlotPool) -> Slot:
    await pool.acquire()
    return Slot(pool)
