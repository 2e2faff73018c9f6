"""``HostBuckets``: the rate limits' buckets for the whole host, one row each in the host table.

Every serving worker charges the same rows, so a limit holds per host, whichever worker the
kernel gives a connection to. One charge is one short write transaction (``BEGIN IMMEDIATE``:
the read and the writes of its few rows cannot interleave with another worker's); a refusal
writes nothing. A row whose TAT has passed is a full bucket: those are pruned, and beyond
``entries`` the fullest rows go, so the file stays small whatever ids clients bring.

Times are the app's clock (Unix time), the same in every process on the host (``gcra`` says what
a step back costs). A failing statement (a lock held past ``BUSY_MS``, a corrupt file) is logged
by the table and the request is let through, as the other host caches treat one as a miss:
limits are a brake on abuse, not a reason to refuse everyone. The table is swept when
``imgproxy serve`` starts: a restart starts every bucket full (a worker's restart does not).
"""

from __future__ import annotations

from collections.abc import Sequence

from imgproxy.hostcache.table import HostTable, Pruned
from imgproxy.limits.buckets import Bucket
from imgproxy.limits.gcra import ALLOWED, Verdict, decide


class HostBuckets:
    """``limits.limiter.BucketStore`` for the whole host."""

    def __init__(self, table: HostTable, entries: int) -> None:
        self._table = table  # its schema holds the buckets table (table.SCHEMA)
        self._rows = Pruned(table, "buckets", "tat", entries, 0.0)

    def charge(self, buckets: Sequence[Bucket], now: float) -> Verdict:
        if self._table.query("BEGIN IMMEDIATE") is None:
            return ALLOWED
        try:
            verdict = self._decide(buckets, now)
        except BaseException:
            self._table.query("ROLLBACK")
            raise
        if verdict is None or self._table.query("COMMIT") is None:
            self._table.query("ROLLBACK")
            return ALLOWED
        if verdict.allowed:
            self._rows.wrote(now)
        return verdict

    def _decide(self, buckets: Sequence[Bucket], now: float) -> Verdict | None:
        """Read the buckets' rows, decide, and write the new TATs if allowed (inside the
        transaction); None if a statement failed."""
        ids = tuple(bucket.id for bucket in buckets)
        marks = ", ".join("?" * len(ids))
        rows = self._table.query(f"SELECT id, tat FROM buckets WHERE id IN ({marks})", ids)  # noqa: S608
        if rows is None:
            return None
        stored = {row[0]: row[1] for row in rows}
        tats = [tat if isinstance(tat := stored.get(i), float) else None for i in ids]
        verdict = decide([bucket.rate for bucket in buckets], tats, now)
        if verdict.tats:
            pairs = ", ".join(["(?, ?)"] * len(ids))
            values = tuple(v for pair in zip(ids, verdict.tats, strict=True) for v in pair)
            if self._table.query(f"INSERT OR REPLACE INTO buckets VALUES {pairs}", values) is None:  # noqa: S608
                return None
        return verdict

    def __len__(self) -> int:
        return self._rows.count()
