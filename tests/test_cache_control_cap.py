"""protocol/cachecontrol.py: what a durable URL's answers may say about caching."""

from __future__ import annotations

import pytest

from imgproxy.protocol.cachecontrol import cap_cache_control


@pytest.mark.parametrize(("value", "cap", "expected"), [
    ("public, max-age=31536000, immutable", 3600, "private, max-age=3600"),
    ("private, max-age=60", 3600, "private, max-age=60"),
    (None, 3600, "private, max-age=3600"),
    ("", 600, "private, max-age=600"),
    ("public, s-maxage=86400, max-age=100", 3600, "private, max-age=100"),
    ("no-cache", 60, "private, max-age=60, no-cache"),
    ("max-age=abc", 60, "private, max-age=0"),
    ('max-age="120"', 600, "private, max-age=120"),
    ("PUBLIC, Max-Age=9999, Immutable", 30, "private, max-age=30"),
    ("private, max-age=3600", 0, "private, max-age=0"),
])
def test_the_cap(value: str | None, cap: float, expected: str) -> None:
    assert cap_cache_control(value, cap) == expected
