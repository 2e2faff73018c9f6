"""``HostTable``: the host's small shared values in one SQLite file: object metadata, hot
counters, the variant cache's running byte total and families, the rate limits' buckets
(``limits.py``) and the opened grant links (``ledger.py``).

SQLite (stdlib) in WAL mode: readers never wait for the one writer, a crash mid-write leaves
the last committed state, and no format of ours has to be made crash-safe. ``synchronous=OFF``:
the table is a cache (a power cut may lose the last writes; it is swept at start-up anyway).
Each serving process opens its own connection after the fork, used on its loop thread only.
Times are ``time.monotonic()``, one clock for every process on the host.

A failing statement (a corrupt file, a lock held past ``BUSY_MS``) is logged and treated as a
miss: the answer is then what it would be with an empty cache, never an error to a client.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from imgproxy.cache import MAX_META_CHARS, SourceMeta, object_id

log = logging.getLogger("imgproxy.hostcache")
BUSY_MS: Final = 200  # the longest a statement waits for another process's write
PRUNE_EVERY: Final = 512  # writes between two prunes of expired and excess rows
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (id BLOB PRIMARY KEY, etag TEXT, length INTEGER NOT NULL,
                                 type TEXT, stored REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS meta_stored ON meta (stored);
CREATE TABLE IF NOT EXISTS hot (id BLOB PRIMARY KEY, started REAL NOT NULL,
                                count INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hot_started ON hot (started);
CREATE TABLE IF NOT EXISTS families (id BLOB PRIMARY KEY, stored REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS families_stored ON families (stored);
CREATE TABLE IF NOT EXISTS buckets (id BLOB PRIMARY KEY, tat REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS buckets_tat ON buckets (tat);
CREATE TABLE IF NOT EXISTS links (id BLOB PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS links_until ON links (until);
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES ('variant_bytes', 0);
"""


class HostTable:
    """One process's connection to the host's table."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_MS / 1000,
                                   check_same_thread=True)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(SCHEMA)
        path.chmod(0o600)
        self._failures = 0

    def close(self) -> None:
        self._db.close()

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]] | None:
        """The statement's rows, or None if it failed (logged; the caller treats it as a miss)."""
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            self._failures += 1
            if self._failures & (self._failures - 1) == 0:  # the 1st, 2nd, 4th, 8th, ... time
                log.warning("host cache table %s: %s (%d failures so far)", self.path, exc, self._failures)
            return None

    def add_variant_bytes(self, delta: int) -> int | None:
        rows = self.query("UPDATE totals SET value = max(0, value + ?) WHERE name = 'variant_bytes' "
                          "RETURNING value", (delta,))
        return int(rows[0][0]) if rows else None  # type: ignore[call-overload]

    def set_variant_bytes(self, value: int) -> None:
        self.query("UPDATE totals SET value = ? WHERE name = 'variant_bytes'", (value,))

    def note_family(self, family: bytes, now: float) -> None:
        """A variant of ``family`` (its key without the source ETag) was cached."""
        self.query("INSERT OR REPLACE INTO families VALUES (?, ?)", (family, now))

    def has_family(self, family: bytes) -> bool:
        """Whether one was (rows are not removed when entries are evicted: a stale yes costs a
        HEAD, as if the table did not exist; never a wrong answer)."""
        rows = self.query("SELECT 1 FROM families WHERE id = ?", (family,))
        return bool(rows) if rows is not None else True

    def variant_bytes(self) -> int:
        rows = self.query("SELECT value FROM totals WHERE name = 'variant_bytes'")
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]


class Pruned:
    """Rows of one table kept within ``entries`` and younger than ``max_age`` (checked every
    ``PRUNE_EVERY`` writes of this process, so the bound is approximate by that much per worker)."""

    def __init__(self, table: HostTable, name: str, column: str, entries: int, max_age: float) -> None:
        self._table, self._name, self._column = table, name, column
        self._entries, self._max_age = entries, max_age
        self._writes = 0

    def wrote(self, now: float) -> None:
        self._writes += 1
        if self._writes % PRUNE_EVERY:
            return
        t, c = self._name, self._column
        self._table.query(f"DELETE FROM {t} WHERE {c} < ?", (now - self._max_age,))  # noqa: S608
        self._table.query(f"DELETE FROM {t} WHERE id IN (SELECT id FROM {t} ORDER BY {c} DESC "  # noqa: S608
                          "LIMIT -1 OFFSET ?)", (self._entries,))

    def count(self) -> int:
        rows = self._table.query(f"SELECT count(*) FROM {self._name}")  # noqa: S608
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]


class HostMetadata:
    """``cache.MetadataCache`` for the whole host: (source, key) -> SourceMeta for ``ttl`` seconds."""

    def __init__(self, table: HostTable, entries: int, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = ttl > 0
        self._table, self._ttl, self._clock = table, ttl, clock
        self._rows = Pruned(table, "meta", "stored", entries, ttl)

    def get(self, source: str, key: str) -> SourceMeta | None:
        if not self.enabled:
            return None
        rows = self._table.query("SELECT etag, length, type FROM meta WHERE id = ? AND stored > ?",
                                 (object_id(source, key), self._clock() - self._ttl))
        if not rows:
            return None
        etag, length, content_type = rows[0]
        assert isinstance(length, int)
        return SourceMeta(etag if isinstance(etag, str) else None, length,
                          content_type if isinstance(content_type, str) else None)

    def put(self, source: str, key: str, meta: SourceMeta) -> None:
        if not self.enabled:
            return
        if len(meta.etag or "") > MAX_META_CHARS or len(meta.content_type or "") > MAX_META_CHARS:
            self.forget(source, key)  # odd values are asked for each time
            return
        now = self._clock()
        self._table.query("INSERT OR REPLACE INTO meta VALUES (?, ?, ?, ?, ?)",
                          (object_id(source, key), meta.etag, meta.content_length, meta.content_type, now))
        self._rows.wrote(now)

    def forget(self, source: str, key: str) -> None:
        self._table.query("DELETE FROM meta WHERE id = ?", (object_id(source, key),))

    def __len__(self) -> int:
        return self._rows.count()


class HostHotCounter:
    """``cache.HotCounter`` for the whole host: requests per object in a fixed window, counted by
    every worker in one row (one statement per request)."""

    def __init__(self, table: HostTable, entries: int, max_window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._table, self._clock = table, clock
        self._rows = Pruned(table, "hot", "started", entries, max_window)

    def hit(self, source: str, key: str, window: float) -> int:
        """Count one request for the object; return how many fell in the current window."""
        now = self._clock()
        rows = self._table.query(
            "INSERT INTO hot VALUES (?1, ?2, 1) ON CONFLICT (id) DO UPDATE SET "
            "count = CASE WHEN ?2 - started >= ?3 THEN 1 ELSE count + 1 END, "
            "started = CASE WHEN ?2 - started >= ?3 THEN ?2 ELSE started END RETURNING count",
            (object_id(source, key), now, window))
        self._rows.wrote(now)
        return int(rows[0][0]) if rows else 1  # type: ignore[call-overload]

    def __len__(self) -> int:
        return self._rows.count()
