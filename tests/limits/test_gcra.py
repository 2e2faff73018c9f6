"""limits.gcra: one charge over several buckets, all or nothing, with a burst of one period."""

from __future__ import annotations

import pytest

from imgproxy.config import Rate
from imgproxy.limits.gcra import decide

NOW = 1_800_000_000.0  # Unix time, as the app's clock gives it (float precision ~2.4e-7 s)
FOUR_PER_MIN = Rate(4, 60.0)
ONE_PER_S = Rate(1, 1.0)


def run(rate: Rate, times: list[float]) -> list[bool]:
    """Whether each request at ``NOW + t`` is allowed, one bucket charged in turn."""
    tat: float | None = None
    allowed = []
    for t in times:
        verdict = decide([rate], [tat], NOW + t)
        allowed.append(verdict.allowed)
        if verdict.allowed:
            tat = verdict.tats[0]
    return allowed


@pytest.mark.parametrize(("rate", "times", "expected"), [
    (FOUR_PER_MIN, [0, 0, 0, 0, 0], [True] * 4 + [False]),  # the burst: one period's worth
    (FOUR_PER_MIN, [0, 0, 0, 0, 14.9, 15], [True] * 4 + [False, True]),  # one back every 15 s
    (FOUR_PER_MIN, [0, 0, 0, 0, 60, 60, 60, 60, 60], [True] * 8 + [False]),  # full after a period
    (ONE_PER_S, [0, 0.5, 1.0, 1.5, 2.0], [True, False, True, False, True]),
    (Rate(600, 60.0), [i * 1e-5 for i in range(601)], [True] * 600 + [False]),  # 0.006 s: no refill
])
def test_a_bucket_allows_its_burst_then_its_rate(rate: Rate, times: list[float],
                                                 expected: list[bool]) -> None:
    assert run(rate, times) == expected


def test_a_refusal_says_how_long_until_the_next_request_would_pass() -> None:
    verdict = decide([FOUR_PER_MIN], [NOW + 60], NOW)  # empty: the next one in 15 s
    assert (verdict.allowed, verdict.retry_after, verdict.retry_seconds) == (False, 15.0, 15)
    almost = decide([FOUR_PER_MIN], [NOW + 45.2], NOW)
    assert almost.retry_seconds == 1  # 0.2 s, in whole seconds at least 1


def test_a_refusal_by_any_bucket_charges_none_and_names_the_first() -> None:
    full, empty = None, NOW + 60
    verdict = decide([FOUR_PER_MIN, FOUR_PER_MIN, ONE_PER_S], [full, empty, NOW + 3], NOW)
    assert verdict.refused == 1
    assert verdict.tats == ()
    assert verdict.retry_after == 15.0  # the longest wait of the refusing buckets


def test_an_allowed_charge_moves_every_bucket_one_spacing_on() -> None:
    verdict = decide([FOUR_PER_MIN, ONE_PER_S], [None, NOW - 100], NOW)
    assert verdict.refused is None
    assert verdict.tats == (NOW + 15, NOW + 1)


def test_a_clock_stepping_back_locks_a_bucket_for_one_period_at_most() -> None:
    stored = NOW + 3600  # written by a clock an hour ahead
    verdict = decide([FOUR_PER_MIN], [stored], NOW)
    assert verdict.retry_seconds == 15
