"""cache.VariantCache: rendered variants, least recently used first out, bounded by the bytes
they cost: the body, the key and ``ENTRY_OVERHEAD`` per entry. Costs are computed here from
those parts, not with the module's own arithmetic."""

from __future__ import annotations

import random

from imgproxy.cache import ENTRY_OVERHEAD, Variant, VariantCache, VariantKey

Key = VariantKey


def variant(size: int) -> Variant:
    return Variant(b"v" * size, "image/jpeg", '"v1-0"', 100, 75)


def key(name: str, params: str = "w=100", etag: str = '"etag"') -> Key:
    return VariantKey("photos", name, etag, params, "jpeg")


def cost(cache_key: Key, size: int) -> int:
    """What an entry is charged: its body, every character of its key, and the overhead."""
    parts = (cache_key.source, cache_key.key, cache_key.source_etag or "", cache_key.canonical,
             cache_key.target)
    return size + sum(len(part) for part in parts) + ENTRY_OVERHEAD


def present(cache: VariantCache, keys: list[Key]) -> list[Key]:
    return [k for k in keys if cache.get(k) is not None]


def test_an_entry_is_charged_its_body_its_key_and_the_overhead() -> None:
    cache = VariantCache(max_bytes=1_000_000)
    cache.put(key("a.jpg"), variant(500))
    assert cache.current_bytes == cost(key("a.jpg"), 500)
    cache.put(key("b.jpg", "w=100,h=200,fit=cover"), variant(700))
    assert cache.current_bytes == cost(key("a.jpg"), 500) + cost(key("b.jpg", "w=100,h=200,fit=cover"), 700)


def test_whatever_is_put_the_total_never_exceeds_the_bound() -> None:
    rng = random.Random(20261201)
    bound = 40_000
    cache = VariantCache(max_bytes=bound)
    sizes: dict[Key, int] = {}
    for i in range(400):
        name = f"employees/{'x' * rng.randint(0, 1000)}{i}.jpg"  # object keys run to 1 KiB
        k, size = key(name), rng.randint(0, 6000)
        cache.put(k, variant(size))
        sizes[k] = size
        kept = present(cache, list(sizes))
        assert cache.current_bytes <= bound
        assert cache.current_bytes == sum(cost(k, sizes[k]) for k in kept)
        assert len(cache) == len(kept)
    assert len(cache) > 5  # it did cache, it is not refusing everything


def test_the_least_recently_used_entry_is_evicted_first() -> None:
    a, b, c, d = (key(f"{name}.jpg") for name in "abcd")
    cache = VariantCache(max_bytes=3 * cost(a, 1000))  # room for exactly three
    for k in (a, b, c):
        cache.put(k, variant(1000))
    assert cache.get(a) is not None  # a is now the most recently used
    cache.put(d, variant(1000))
    assert present(cache, [a, b, c, d]) == [a, c, d]


def test_a_big_entry_evicts_as_many_as_it_needs() -> None:
    small = [key(f"{i}.jpg") for i in range(4)]
    cache = VariantCache(max_bytes=4 * cost(small[0], 1000))
    for k in small:
        cache.put(k, variant(1000))
    big = key("big.jpg")
    cache.put(big, variant(2 * cost(small[0], 1000) + 500))  # needs three of the four places
    assert present(cache, [*small, big]) == [small[3], big]


def test_an_entry_that_fits_exactly_is_cached() -> None:
    k = key("a.jpg")
    cache = VariantCache(max_bytes=cost(k, 1000))
    cache.put(k, variant(1000))
    assert cache.get(k) is not None
    assert cache.current_bytes == cache.max_bytes


def test_an_entry_larger_than_the_bound_is_not_cached_and_evicts_nothing() -> None:
    kept, huge = key("kept.jpg"), key("huge.jpg")
    cache = VariantCache(max_bytes=10_000)
    cache.put(kept, variant(1000))
    before = cache.current_bytes
    cache.put(huge, variant(10_000))
    assert present(cache, [kept, huge]) == [kept]
    assert cache.current_bytes == before


def test_a_long_key_alone_can_make_an_entry_too_big() -> None:
    short, long = key("a.jpg"), key("a" * 1000 + ".jpg")
    cache = VariantCache(max_bytes=cost(short, 1000))
    cache.put(long, variant(1000))  # the same body: only the key is longer
    assert len(cache) == 0
    cache.put(short, variant(1000))
    assert len(cache) == 1


def test_putting_a_key_again_replaces_its_entry_and_its_charge() -> None:
    k = key("a.jpg")
    cache = VariantCache(max_bytes=100_000)
    cache.put(k, variant(5000))
    cache.put(k, variant(100))
    assert len(cache) == 1
    assert cache.current_bytes == cost(k, 100)
    found = cache.get(k)
    assert found is not None
    assert len(found.body) == 100


def test_hits_and_misses_are_counted() -> None:
    cache = VariantCache(max_bytes=100_000)
    cache.put(key("a.jpg"), variant(10))
    cache.get(key("a.jpg"))
    cache.get(key("a.jpg"))
    cache.get(key("b.jpg"))
    assert (cache.hits, cache.misses) == (2, 1)


def test_zero_bytes_disables_the_cache() -> None:
    cache = VariantCache(max_bytes=0)
    cache.put(key("a.jpg"), variant(0))
    assert cache.get(key("a.jpg")) is None
    assert (len(cache), cache.current_bytes, cache.misses) == (0, 0, 1)


def test_a_variant_key_is_charged_for_its_object_key_and_parameters() -> None:
    name = VariantKey("photos", "employees/" + "x" * 1000, '"etag"', "w=100,h=0", "jpeg")
    cache = VariantCache(max_bytes=1_000_000)
    cache.put(name, variant(100))
    assert cache.current_bytes >= 100 + len(name.key) + len(name.canonical) + ENTRY_OVERHEAD


def test_holds_any_knows_a_variant_under_any_source_etag_until_its_last_is_evicted() -> None:
    cache = VariantCache(max_bytes=3 * cost(key("a.jpg"), 1000))
    family = VariantCache.family(key("a.jpg"))
    assert not cache.holds_any(family)
    cache.put(key("a.jpg", etag='"old"'), variant(1000))
    cache.put(key("a.jpg", etag='"new"'), variant(1000))
    cache.put(key("a.jpg", etag='"new"'), variant(1000))  # again: still two entries
    assert cache.holds_any(family)
    assert not cache.holds_any(VariantCache.family(key("a.jpg", params="w=200")))
    cache.put(key("b.jpg"), variant(1000))
    cache.put(key("c.jpg"), variant(1000))  # evicts a.jpg's "old"
    assert cache.holds_any(family)
    cache.put(key("d.jpg"), variant(1000))  # and then its "new"
    assert cache.get(key("a.jpg", etag='"new"')) is None
    assert not cache.holds_any(family)
