"""``[limits]``: rate strings per budget and dimension, read into ``LimitsConfig``."""

from __future__ import annotations

from typing import Any

import pytest

from imgproxy.config import BudgetLimits, ConfigError, LimitsConfig, Rate, parse_config, parse_rate

BASE: dict[str, Any] = {"auth": {"keys": {"k1": "k" * 32}},
                        "sources": {"photos": {"bucket": "private-photos"}}}


def limits(table: dict[str, Any]) -> LimitsConfig:
    return parse_config({**BASE, "limits": table}, environ={}).limits


@pytest.mark.parametrize(("text", "expected"), [
    ("600/min", Rate(600, 60.0)),
    ("20/s", Rate(20, 1.0)),
    ("10000/h", Rate(10000, 3600.0)),
    ("5/10s", Rate(5, 10.0)),
    (" 1 / day ", Rate(1, 86400.0)),
    ("0/min", None),
    ("0", None),
    (0, None),
])
def test_a_rate_is_a_count_per_period(text: object, expected: Rate | None) -> None:
    assert parse_rate(text, "limits.originals.per_key") == expected


@pytest.mark.parametrize(("text", "message"), [
    ("600", "expected a rate such as"),
    ("600/week", "expected a rate such as"),
    (600, "expected a rate such as"),
    (True, "expected a rate such as"),
    ("-1/s", "expected a rate such as"),
    ("1/0s", "at most 1000000000 requests per period of 1ms to 7 days"),
    ("1/8d", "at most 1000000000 requests per period of 1ms to 7 days"),
    ("200000/s", "at most 100000 requests per second"),
])
def test_a_wrong_rate_names_its_key(text: object, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^limits.originals.per_key: {message}"):
        limits({"originals": {"per_key": text}})


def test_limits_are_off_unless_configured() -> None:
    assert parse_config(BASE, environ={}).limits == LimitsConfig()
    assert LimitsConfig().originals == LimitsConfig().transforms == BudgetLimits()


def test_each_budget_has_its_own_rates() -> None:
    config = limits({"originals": {"per_signature": "600/min", "per_client": "20/s"},
                     "transforms": {"per_key": "10000/h", "per_sub": "60/min", "per_token": "1/s"},
                     "entries": 5000})
    assert config.originals == BudgetLimits(per_signature=Rate(600, 60.0), per_client=Rate(20, 1.0))
    assert config.transforms == BudgetLimits(per_key=Rate(10000, 3600.0), per_sub=Rate(60, 60.0),
                                             per_token=Rate(1, 1.0))
    assert config.entries == 5000


@pytest.mark.parametrize(("table", "path"), [
    ({"originals": {"per_url": "1/s"}}, "limits.originals.per_url"),
    ({"renders": {}}, "limits.renders"),
    ({"burst": 5}, "limits.burst"),
])
def test_an_unknown_key_is_refused(table: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError, match=f"^{path}: unknown key"):
        limits(table)
