"""cache.py: the caches' memory is bounded by size whatever keys clients ask for (issue 10,
point 4: "the same principle for every other buffer a client can make the server fill")."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest

from imgproxy.cache import (
    ENTRY_OVERHEAD,
    HotCounter,
    MetadataCache,
    SourceMeta,
    Variant,
    VariantCache,
    VariantKey,
)

LONG_KEY = "employees/" + "x" * 1000  # object keys run to 1 KiB


def bytes_per_entry(fill: Callable[[int], object], entries: int) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(entries):
            fill(i)
        return (tracemalloc.get_traced_memory()[0] - before) / entries
    finally:
        tracemalloc.stop()


def test_a_metadata_entry_costs_the_same_whatever_the_key_length() -> None:
    cache = MetadataCache(entries=100_000, ttl=60)
    meta = SourceMeta('"0123456789abcdef0123456789abcdef"', 12345, "image/jpeg")
    cost = bytes_per_entry(lambda i: cache.put("photos", f"{LONG_KEY}{i}", meta), 5000)
    assert cost < 400  # not the key's 1 KiB
    assert cache.get("photos", f"{LONG_KEY}7") == meta
    assert cache.get("photos", f"{LONG_KEY}x") is None


def test_a_hot_counter_entry_costs_the_same_whatever_the_key_length() -> None:
    hot = HotCounter(entries=100_000, max_window=60)
    cost = bytes_per_entry(lambda i: hot.hit("photos", f"{LONG_KEY}{i}", 60), 5000)
    assert cost < 400
    assert hot.hit("photos", f"{LONG_KEY}7", 60) == 2


def test_hot_counters_are_bounded_by_their_entries() -> None:
    hot = HotCounter(entries=100, max_window=60)
    for i in range(1000):
        hot.hit("photos", f"k{i}", 60)
    assert len(hot) == 100


@pytest.mark.parametrize("meta", [SourceMeta('"' + "e" * 300 + '"', 1, "image/jpeg"),
                                  SourceMeta('"e"', 1, "image/" + "j" * 300)])
def test_an_oversized_etag_or_type_is_not_cached(meta: SourceMeta) -> None:
    cache = MetadataCache(entries=10, ttl=60)
    cache.put("photos", "a.jpg", SourceMeta('"small"', 1, "image/jpeg"))
    cache.put("photos", "a.jpg", meta)
    assert cache.get("photos", "a.jpg") is None  # and not the stale small one either


def test_the_variant_cache_counts_keys_against_its_bytes() -> None:
    body = b"v" * 1000
    cache = VariantCache(max_bytes=100 * (len(body) + ENTRY_OVERHEAD))
    for i in range(100):
        cache.put(VariantKey("photos", f"{LONG_KEY}{i}", '"etag"', "w=100", "jpeg"),
                  Variant(body, "image/jpeg", '"v"', 100, 100))
    # With 1 KiB keys counted, fewer than half of the hundred fit.
    assert len(cache) < 55
    assert cache.current_bytes <= cache.max_bytes
