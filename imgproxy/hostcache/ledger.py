"""``HostLedger``: the opened single-use grant links of the whole host, one row per nonce in the
host table, so a link opens once whichever worker the kernel hands its connection to.

One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` is the check and the record at once: two
workers opening the same link race inside SQLite, and one of them gets no row back. A failing
statement is *not* a miss here, unlike the host's caches: the link is refused (503, try again),
since letting it through could open it twice. Rows are kept until the link would have expired;
past ``entries`` new links are refused rather than old rows dropped early.
"""

from __future__ import annotations

import hashlib

from imgproxy.errors import LedgerFull
from imgproxy.hostcache.table import HostTable


class HostLedger:
    """``auth.ledger.Ledger`` for the whole host."""

    def __init__(self, table: HostTable, entries: int) -> None:
        self._table = table  # its schema holds the links table (table.SCHEMA)
        self._entries = entries

    def first_use(self, nonce: str, until: float, now: float) -> bool:
        self._table.query("DELETE FROM links WHERE until <= ?", (now,))
        if len(self) >= self._entries:
            raise LedgerFull("grant link ledger full")
        rows = self._table.query("INSERT INTO links VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING 1",
                                 (hashlib.sha256(nonce.encode()).digest()[:16], until))
        if rows is None:
            raise LedgerFull("grant link ledger unavailable")
        return bool(rows)

    def __len__(self) -> int:
        rows = self._table.query("SELECT count(*) FROM links")
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]
