"""Building ``[limits]``: rate strings (``"600/min"``) per budget and dimension."""

from __future__ import annotations

import re
from typing import Final

from imgproxy.config.model import BudgetLimits, LimitsConfig, Rate
from imgproxy.config.reader import Table
from imgproxy.config.values import ConfigError

_RATE: Final = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|sec|m|min|h|hour|d|day)\s*$")
_PERIODS: Final = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0,
                   "d": 86400.0, "day": 86400.0}
MAX_COUNT: Final = 1_000_000_000
MAX_PER_SECOND: Final = 100_000  # a finer spacing than 10 µs is below the clock's precision
MAX_PERIOD: Final = 7 * 86400.0
DIMENSIONS: Final = ("per_signature", "per_key", "per_token", "per_sub", "per_client")


def parse_rate(value: object, where: str) -> Rate | None:
    """``"600/min"``, ``"20/s"``, ``"10000/h"``, ``"5/10s"``; 0 or ``"0"``: unlimited (None)."""
    if value in (0, "0") and not isinstance(value, bool):
        return None
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"{where}: expected a rate such as \"600/min\", \"20/s\" or \"10000/h\" "
                          "(0: unlimited)")
    count = int(match.group(1))
    period = float(match.group(2) or 1) * _PERIODS[match.group(3)]
    if count == 0:
        return None
    if count > MAX_COUNT or not 0.001 <= period <= MAX_PERIOD:
        raise ConfigError(f"{where}: at most {MAX_COUNT} requests per period of 1ms to 7 days")
    if count / period > MAX_PER_SECOND:
        raise ConfigError(f"{where}: at most {MAX_PER_SECOND} requests per second")
    return Rate(count=count, period=period)


def read_budget(t: Table) -> BudgetLimits:
    rates = {name: parse_rate(t.raw(name), t.where(name)) if t.raw(name) is not None else None
             for name in DIMENSIONS}
    t.reject_unknown()
    return BudgetLimits(**rates)


def read_limits(t: Table) -> LimitsConfig:
    base = LimitsConfig()
    limits = LimitsConfig(
        originals=read_budget(t.table("originals")),
        transforms=read_budget(t.table("transforms")),
        entries=t.integer("entries", base.entries, 100, 10_000_000),
    )
    t.reject_unknown()
    return limits
