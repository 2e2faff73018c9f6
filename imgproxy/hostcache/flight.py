"""``HostFlight``: one render of a variant on the whole host, whichever worker was asked.

A worker about to fetch or render a variant takes an exclusive ``flock`` on a lock file first;
another worker wanting the same variant waits for that lock, then finds the variant in the host
cache. The kernel drops a lock when its holder exits, so a worker that crashed mid-render
leaves nothing stale behind. The wait polls (``LOCK_NB``, backing off from 2 to 50 ms): no
thread, and the event loop keeps serving. It happens before the transform pool's admission, so
a waiter holds no slot; and it is bounded: after ``wait_limit`` (the transform timeout) the
waiter renders by itself.

Lock files are striped (``STRIPES`` of them, named by the first hex digits of the variant's
digest) rather than one per variant: removing a lock file safely while others may open it is
not possible with ``flock``, and a fixed set needs no removal. Two variants sharing a stripe
only wait for each other.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

log = logging.getLogger("imgproxy.hostcache")
STRIPE_DIGITS: Final = 3
STRIPES: Final = 16**STRIPE_DIGITS  # 4096 lock files at most
FIRST_POLL: Final = 0.002
LAST_POLL: Final = 0.05


class HostFlight:
    """Exclusive locks by variant digest, shared by the host's workers."""

    def __init__(self, locks: Path, wait_limit: float) -> None:
        self._locks = locks
        self.wait_limit = wait_limit
        self.waited = 0  # times this process waited for another's render
        self.timed_out = 0  # times it gave up waiting and went ahead

    @asynccontextmanager
    async def hold(self, digest: str) -> AsyncIterator[None]:
        """Held for the block: the lock of ``digest``'s stripe, or after ``wait_limit`` nothing."""
        name = digest[:STRIPE_DIGITS]
        if len(name) != STRIPE_DIGITS or not all(c in "0123456789abcdef" for c in name):
            raise ValueError("a lock is named by a hex digest")
        fd = os.open(self._locks / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            locked = await self._lock(fd)
            try:
                yield
            finally:
                if locked:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    async def _lock(self, fd: int) -> bool:
        if _try_lock(fd):
            return True
        self.waited += 1
        deadline, delay = time.monotonic() + self.wait_limit, FIRST_POLL
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, LAST_POLL)
            if _try_lock(fd):
                return True
        self.timed_out += 1
        log.warning("waited %.1fs for another worker's render; rendering here", self.wait_limit)
        return False


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
