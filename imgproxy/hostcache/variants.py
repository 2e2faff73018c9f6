"""``HostVariantCache``: rendered variants as files shared by the host's workers, bounded by bytes.

A read opens ``variants/<digest>`` (never following a symlink), reads it whole and decodes it
(``entries.decode``: key, length and checksum verified); a bad entry is removed and is a miss.
A hit touches the file's mtime, which is what eviction orders by (least recently used first).
A write goes to a temporary name in the same directory, then ``os.replace``: a reader sees
the old file, the new one, or none, never half of one.

The bound: the host's total lives in the shared table (``add_variant_bytes`` per write); the
writer that takes it past ``max_bytes`` scans the directory in a thread (the truth, which also
corrects any drift in the total) and removes the least recently used entries until the rest
fit ``LOW_WATER`` of the bound, so scans are rare. One process scans at a time (``evict.lock``);
while one does, the directory may hold a little more than the bound.
Reads are synchronous on the loop thread: an entry is a thumbnail read from the page cache or
tmpfs (bench/README.md has the cost), and it must be read anyway to check its checksum.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import os
import secrets
import stat
import time
from typing import Final

from imgproxy.cache import Variant, VariantKey
from imgproxy.hostcache import entries
from imgproxy.hostcache.directory import ENTRY_NAME, TEMP_SUFFIX, CacheDir
from imgproxy.hostcache.table import HostTable, Pruned

log = logging.getLogger("imgproxy.hostcache")
LOW_WATER: Final = 0.9  # eviction leaves this fraction of the bound in use
STALE_TEMP_SECONDS: Final = 60.0  # a temporary file this old is a crashed write's
TOTAL_REFRESH_SECONDS: Final = 1.0  # how stale ``current_bytes`` (the metric) may be
MAX_ENTRY_FRACTION: Final = 8  # an entry over bound / 8 is not kept (it would evict many)
MAX_FAMILIES: Final = 1_000_000  # rows of the families table (about 50 B each)


class HostVariantCache:
    """The host's variants in ``where.variants``, at most ``max_bytes`` in all (0 disables)."""

    def __init__(self, where: CacheDir, table: HostTable, max_bytes: int) -> None:
        self.where = where
        self.max_bytes = max_bytes
        self._table = table
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._total = (0, -TOTAL_REFRESH_SECONDS)  # (bytes, when read)
        self._families = Pruned(table, "families", "stored", MAX_FAMILIES, math.inf)
        self._evicting: asyncio.Future[tuple[int, int] | None] | None = None
        self._written_meanwhile = 0  # bytes this process wrote while its eviction ran

    def path(self, key: VariantKey) -> str:
        name = key.store_name
        assert ENTRY_NAME.fullmatch(name)  # a digest: nothing of the request's becomes a path
        return os.path.join(self.where.variants, name)

    def get(self, key: VariantKey, *, counted: bool = True) -> Variant | None:
        variant = self._read(key) if self.max_bytes else None
        if counted:
            if variant is None:
                self.misses += 1
            else:
                self.hits += 1
        return variant

    def _read(self, key: VariantKey) -> Variant | None:
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:  # a symlink planted there (ELOOP), a permission problem
            log.warning("host cache entry %s unreadable (%s); removing it", path, os.strerror(exc.errno or 0))
            self._discard(path)
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_bytes:
                variant = None
            else:
                data = os.read(fd, info.st_size + 1)
                variant = entries.decode(data, key)
            if variant is not None:
                os.utime(fd)  # recently used: evicted last
        finally:
            os.close(fd)
        if variant is None:
            log.warning("host cache entry %s is corrupt or not this key's; removing it", path)
            self._discard(path)
        return variant

    def put(self, key: VariantKey, variant: Variant) -> None:
        if not self.max_bytes:
            return
        data = entries.encode(key, variant)
        if len(data) > self.max_bytes // MAX_ENTRY_FRACTION:
            return
        path = self.path(key)
        temp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            try:
                replaced = os.stat(path, follow_symlinks=False).st_size
            except FileNotFoundError:
                replaced = 0
            os.replace(temp, path)
        except OSError as exc:  # ENOSPC on a small tmpfs, say: not cached, not an error
            log.warning("host cache: cannot write an entry (%s)", os.strerror(exc.errno or 0))
            self._discard(temp)
            return
        now = time.monotonic()
        self._table.note_family(entries.family_id(key), now)
        self._families.wrote(now)
        total = self._table.add_variant_bytes(len(data) - replaced)
        if self._evicting is not None:
            self._written_meanwhile += len(data) - replaced  # the scan may not have seen it
        elif total is not None and total > self.max_bytes:
            self.start_eviction()

    def start_eviction(self) -> None:
        """``evict`` in a thread (a scan of 17,000 entries took 115 ms: not on the event loop),
        one at a time in this process; without a running loop (tools, tests), here and now."""
        if self._evicting is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._evicted(self.evict())
            return
        self._evicting = loop.run_in_executor(None, self.evict)
        self._evicting.add_done_callback(self._eviction_done)

    def _eviction_done(self, future: asyncio.Future[tuple[int, int] | None]) -> None:
        self._evicting = None
        if future.cancelled():
            return
        if (failure := future.exception()) is not None:
            log.warning("host cache: eviction failed (%s)", failure.__class__.__name__)
            return
        self._evicted(future.result())

    def _evicted(self, outcome: tuple[int, int] | None) -> None:
        """On the loop thread (the table's connection is this thread's): the total corrected."""
        written, self._written_meanwhile = self._written_meanwhile, 0
        if outcome is not None:
            total, removed = outcome
            self.evictions += removed
            self._table.set_variant_bytes(total + written)
            if total + written > self.max_bytes:
                self.start_eviction()  # what was written during the scan took it over again

    def holds_any(self, family: VariantKey) -> bool:
        """Whether a variant of ``family`` (any source ETag) may be cached on the host."""
        return bool(self.max_bytes) and self._table.has_family(entries.family_id(family))

    def evict(self) -> tuple[int, int] | None:
        """Remove least recently used entries until the rest fit ``LOW_WATER`` of the bound; the
        bytes left and the entries removed (None: another process is evicting). Files only, no
        table: it may run in a thread."""
        fd = os.open(self.where.evict_lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another worker is evicting right now
            found: list[tuple[float, int, str]] = []
            now = time.time()
            with os.scandir(self.where.variants) as scan:
                for item in scan:
                    try:
                        info = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if ENTRY_NAME.fullmatch(item.name):
                        found.append((info.st_mtime, info.st_size, item.path))
                    elif item.name.endswith(TEMP_SUFFIX) and now - info.st_mtime > STALE_TEMP_SECONDS:
                        self._discard(item.path)
            found.sort()  # least recently used first
            total = sum(size for _, size, _ in found)
            target, removed = int(self.max_bytes * LOW_WATER), 0
            for _, size, path in found:
                if total <= target:
                    break
                self._discard(path)
                total -= size
                removed += 1
            return total, removed
        finally:
            os.close(fd)

    @staticmethod
    def _discard(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("host cache: cannot remove %s (%s)", path, os.strerror(exc.errno or 0))

    @property
    def current_bytes(self) -> int:
        """The host's total (read from the table at most once per ``TOTAL_REFRESH_SECONDS``)."""
        if not self.max_bytes:
            return 0
        value, read = self._total
        now = time.monotonic()
        if now - read >= TOTAL_REFRESH_SECONDS:
            value = self._table.variant_bytes()
            self._total = (value, now)
        return value

    def __len__(self) -> int:
        with os.scandir(self.where.variants) as scan:
            return sum(1 for item in scan if ENTRY_NAME.fullmatch(item.name))
