"""``Limiter``: a request charged to its budget's buckets, or refused with ``RateLimited``.

The buckets live in a ``BucketStore``: the host's (``hostcache.limits.HostBuckets``, shared by
every serving worker through ``cache.dir``) or this process's (``LocalBuckets``).
``build_limiter`` chooses; it is what start-up calls, and what a config reload can call again
with the new config and the same table (the buckets carry over on the table).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from cachetools import LRUCache

from imgproxy.auth.principal import Principal
from imgproxy.config import BudgetLimits, Config, LimitsConfig
from imgproxy.errors import RateLimited
from imgproxy.hostcache.limits import HostBuckets
from imgproxy.hostcache.table import HostTable
from imgproxy.limits.buckets import Bucket, Budget, Dimension, buckets_for
from imgproxy.limits.gcra import Verdict, decide

WHO: Final = {
    Dimension.SIGNATURE: "this signed URL",
    Dimension.KEY: "URLs signed with this key",
    Dimension.TOKEN: "this token",
    Dimension.SUB: "this viewer (sub)",
    Dimension.CLIENT: "this client address",
}
WHAT: Final = {Budget.ORIGINALS: "image requests", Budget.TRANSFORMS: "image renders"}


class BucketStore(Protocol):
    """Where buckets' TATs are kept: one ``charge`` decides and records, atomically."""

    def charge(self, buckets: Sequence[Bucket], now: float) -> Verdict: ...

    def __len__(self) -> int: ...


class LocalBuckets:
    """This process's buckets, at most ``entries`` (the least recently charged are forgotten:
    a forgotten bucket is a full one, so the bound can only make a limit more lenient)."""

    def __init__(self, entries: int) -> None:
        self._tats: LRUCache[bytes, float] = LRUCache(maxsize=entries)

    def charge(self, buckets: Sequence[Bucket], now: float) -> Verdict:
        verdict = decide([b.rate for b in buckets], [self._tats.get(b.id) for b in buckets], now)
        for bucket, tat in zip(buckets, verdict.tats, strict=False):
            self._tats[bucket.id] = tat
        return verdict

    def __len__(self) -> int:
        return len(self._tats)


class Limiter:
    """``[limits]`` applied: ``charge`` returns, or raises ``RateLimited`` (429, Retry-After)."""

    def __init__(self, limits: LimitsConfig, store: BucketStore) -> None:
        self.store = store
        self._use(limits)

    def _use(self, limits: LimitsConfig) -> None:
        self.limits = limits
        configured = {Budget.ORIGINALS: limits.originals, Budget.TRANSFORMS: limits.transforms}
        # A budget that sets no rate is skipped whole: it costs a request nothing.
        self._budgets = {budget: rates for budget, rates in configured.items() if rates != BudgetLimits()}

    def charge(self, budget: Budget, principal: Principal, client: str, now: float,
               limits: LimitsConfig | None = None) -> None:
        """One request (originals) or one render (transforms) by ``principal`` from ``client``.
        ``limits``: the rates of the config the request is served with (a reload changes them;
        the buckets, and what they have counted, stay)."""
        if limits is not None and limits is not self.limits:
            self._use(limits)
        rates = self._budgets.get(budget)
        if rates is None:
            return
        buckets = buckets_for(budget, rates, principal, client)
        if not buckets:
            return
        verdict = self.store.charge(buckets, now)
        if verdict.refused is None:
            return
        over = buckets[verdict.refused]
        seconds = verdict.retry_seconds
        raise RateLimited(
            f"{budget} per_{over.dimension} {over.rate} spent by {principal.kind}:{principal.name}",
            budget=budget.value, dimension=over.dimension.value, retry_after=seconds,
            public_message=f"Too many {WHAT[budget]} for {WHO[over.dimension]}; retry in {seconds} s.")


def build_limiter(config: Config, table: HostTable | None) -> Limiter:
    """The limiter for ``config.limits``: on the host's ``table`` (``cache.dir``), shared by
    every serving worker, or without one in this process's memory."""
    limits = config.limits
    store: BucketStore = LocalBuckets(limits.entries) if table is None else HostBuckets(table, limits.entries)
    return Limiter(limits, store)
