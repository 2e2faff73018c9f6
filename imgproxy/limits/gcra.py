"""One charge over several buckets, all or nothing: GCRA (the generic cell rate algorithm).

Pure. A bucket is one number, its theoretical arrival time (TAT): when it would be full again if
nothing more came. A rate of ``count`` per ``period`` spaces requests ``period / count`` apart
and tolerates up to ``count`` at once, so a TAT never lies more than one ``period`` ahead of
now. A request is allowed when every bucket allows it; then, and only then, each TAT moves one
spacing on. A refused request charges nothing: a URL over its own limit, retried in a loop,
costs its key, token, viewer and client nothing more.

A missing TAT, or one in the past, is a full bucket: the stores forget such rows freely. A TAT
further ahead than one period can only come from the clock stepping back; it counts as one
period ahead, so a step back never locks a bucket for longer than a period.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from imgproxy.config.model import Rate

# Seconds of rounding forgiven: Unix times near 2e9 carry about 2.4e-7 s of float precision
# (config.limits allows at most 100,000 requests per second: a spacing of 1e-5 s or more).
SLACK: Final = 1e-6


@dataclass(frozen=True, slots=True)
class Verdict:
    """``refused``: the index of the first bucket over its limit (None: allowed); ``tats``: what
    to store when allowed; ``retry_after``: seconds until every bucket would allow it."""

    refused: int | None
    tats: tuple[float, ...] = ()
    retry_after: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.refused is None

    @property
    def retry_seconds(self) -> int:
        """``Retry-After``: whole seconds, at least 1."""
        return max(1, math.ceil(self.retry_after))


ALLOWED = Verdict(None)  # what a store answers when it cannot decide (it fails open)


def decide(rates: Sequence[Rate], tats: Sequence[float | None], now: float) -> Verdict:
    new_tats: list[float] = []
    refused: int | None = None
    wait = 0.0
    for index, (rate, stored) in enumerate(zip(rates, tats, strict=True)):
        spacing = rate.period / rate.count
        tat = now if stored is None else min(max(stored, now), now + rate.period)
        after = tat + spacing
        over = after - rate.period - now  # > 0: this bucket holds less than one request
        if over > SLACK:
            refused = index if refused is None else refused
            wait = max(wait, over)
        new_tats.append(after)
    if refused is not None:
        return Verdict(refused, retry_after=wait)
    return Verdict(None, tuple(new_tats))
