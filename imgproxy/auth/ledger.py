"""Which single-use grant links were opened: ``first_use`` says yes once per nonce, until the link
would have expired anyway. This process's ledger; ``hostcache.ledger`` is the host's (every
serving worker's), used whenever there is a host cache directory (always with several workers).

Bounded: at most ``entries`` nonces are remembered. A full ledger refuses new links (503, try
again) rather than forgetting a nonce early, which would let a link be opened twice.
"""

from __future__ import annotations

import heapq
from typing import Final, Protocol

from imgproxy.errors import LedgerFull

DEFAULT_ENTRIES: Final = 100_000


class Ledger(Protocol):
    def first_use(self, nonce: str, until: float, now: float) -> bool: ...


class LocalLedger:
    def __init__(self, entries: int = DEFAULT_ENTRIES) -> None:
        self._entries = entries
        self._until: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    def first_use(self, nonce: str, until: float, now: float) -> bool:
        while self._expiry and self._expiry[0][0] <= now:
            _, old = heapq.heappop(self._expiry)
            if self._until.get(old, now + 1) <= now:
                del self._until[old]
        if nonce in self._until:
            return False
        if len(self._until) >= self._entries:
            raise LedgerFull("grant link ledger full")
        self._until[nonce] = until
        heapq.heappush(self._expiry, (until, nonce))
        return True

    def __len__(self) -> int:
        return len(self._until)
