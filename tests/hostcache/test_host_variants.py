"""hostcache.variants: entries on disk, verified on read, bounded by bytes across writers."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgproxy.cache import Variant, VariantKey
from imgproxy.hostcache import entries
from imgproxy.hostcache.directory import CacheDir, prepare
from imgproxy.hostcache.table import HostTable
from imgproxy.hostcache.variants import HostVariantCache


def key(name: str) -> VariantKey:
    return VariantKey("photos", name, '"e"', "w=100", "jpeg")


def variant(name: str, size: int = 2000) -> Variant:
    return Variant(os.urandom(size), "image/jpeg", key(name).etag, 100, 75)


@pytest.fixture
def where(tmp_path: Path) -> Iterator[CacheDir]:
    held = prepare(tmp_path / "cache", 10**9)
    yield held.where
    held.release()


@pytest.fixture
def table(where: CacheDir) -> Iterator[HostTable]:
    table = HostTable(where.table)
    yield table
    table.close()


def dir_bytes(where: CacheDir) -> int:
    return sum(p.stat().st_size for p in where.variants.iterdir())


def test_a_put_variant_is_a_hit_for_another_process_s_cache(where: CacheDir, table: HostTable) -> None:
    writer = HostVariantCache(where, table, 10**6)
    other_table = HostTable(where.table)
    try:
        reader = HostVariantCache(where, other_table, 10**6)
        stored = variant("a.png")
        writer.put(key("a.png"), stored)
        assert reader.get(key("a.png")) == stored
        assert reader.get(key("b.png")) is None
        assert (reader.hits, reader.misses) == (1, 1)
    finally:
        other_table.close()


def test_entries_are_files_only_this_user_can_read_named_by_a_digest(where: CacheDir,
                                                                     table: HostTable) -> None:
    cache = HostVariantCache(where, table, 10**6)
    cache.put(key("../../etc/passwd"), variant("../../etc/passwd"))
    (path,) = where.variants.iterdir()
    assert path.name == key("../../etc/passwd").store_name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("damage", ["truncate", "flip", "other_key", "garbage"])
def test_a_damaged_entry_is_a_miss_and_is_removed(where: CacheDir, table: HostTable, damage: str) -> None:
    cache = HostVariantCache(where, table, 10**6)
    cache.put(key("a.png"), variant("a.png"))
    path = Path(cache.path(key("a.png")))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "flip":
        data[-1] ^= 0xFF
    elif damage == "other_key":
        data = bytearray(entries.encode(key("b.png"), variant("b.png")))
    else:
        data = bytearray(b"\x80\x04pickle")
    path.write_bytes(bytes(data))
    assert cache.get(key("a.png")) is None
    assert not path.exists()


def test_a_symlink_in_place_of_an_entry_is_not_followed(where: CacheDir, table: HostTable,
                                                        tmp_path: Path) -> None:
    cache = HostVariantCache(where, table, 10**6)
    secret = tmp_path / "secret"
    secret.write_bytes(entries.encode(key("a.png"), variant("a.png")))
    Path(cache.path(key("a.png"))).symlink_to(secret)
    assert cache.get(key("a.png")) is None
    assert secret.exists()
    assert not Path(cache.path(key("a.png"))).is_symlink()


def test_the_byte_bound_holds_after_many_puts(where: CacheDir, table: HostTable) -> None:
    bound = 100_000
    cache = HostVariantCache(where, table, bound)
    for i in range(200):
        cache.put(key(f"{i}.png"), variant(f"{i}.png", 3000))
        assert dir_bytes(where) <= bound
    assert cache.evictions > 0
    assert cache.get(key("199.png")) is not None  # the newest stay
    assert cache.get(key("0.png")) is None


def test_recently_read_entries_are_evicted_last(where: CacheDir, table: HostTable) -> None:
    bound = 50_000
    cache = HostVariantCache(where, table, bound)
    for i in range(10):
        cache.put(key(f"{i}.png"), variant(f"{i}.png", 3000))
        os.utime(cache.path(key(f"{i}.png")), (1_000_000 + i, 1_000_000 + i))
    assert cache.get(key("0.png")) is not None  # touched now: the most recent
    for i in range(10, 20):
        cache.put(key(f"{i}.png"), variant(f"{i}.png", 3000))
    assert cache.get(key("0.png")) is not None
    assert cache.get(key("1.png")) is None


def test_the_running_total_is_the_directory_s_size(where: CacheDir, table: HostTable) -> None:
    cache = HostVariantCache(where, table, 10**6)
    for i in range(5):
        cache.put(key(f"{i}.png"), variant(f"{i}.png"))
    cache.put(key("0.png"), variant("0.png", 500))  # replaced: counted once
    assert table.variant_bytes() == dir_bytes(where)


def test_an_entry_over_an_eighth_of_the_bound_is_not_kept(where: CacheDir, table: HostTable) -> None:
    cache = HostVariantCache(where, table, 16_000)
    cache.put(key("big.png"), variant("big.png", 2500))
    assert cache.get(key("big.png")) is None


def test_a_zero_bound_disables_it(where: CacheDir, table: HostTable) -> None:
    cache = HostVariantCache(where, table, 0)
    cache.put(key("a.png"), variant("a.png"))
    assert cache.get(key("a.png")) is None
    assert list(where.variants.iterdir()) == []


def test_any_worker_knows_a_family_is_cached_whatever_its_source_etag(where: CacheDir,
                                                                      table: HostTable) -> None:
    other_table = HostTable(where.table)
    try:
        writer, reader = HostVariantCache(where, table, 10**6), HostVariantCache(where, other_table, 10**6)
        family = dataclasses.replace(key("a.png"), source_etag=None)
        assert not reader.holds_any(family)
        writer.put(key("a.png"), variant("a.png"))
        assert reader.holds_any(family)
        assert not reader.holds_any(dataclasses.replace(family, canonical="w=200"))
    finally:
        other_table.close()


class WatchedCache(HostVariantCache):
    """Records which thread each eviction ran on."""

    threads: list[int]

    def evict(self) -> tuple[int, int] | None:
        self.threads.append(threading.get_ident())
        return super().evict()


async def test_under_a_running_loop_eviction_runs_in_a_thread(where: CacheDir, table: HostTable) -> None:
    bound = 50_000
    cache = WatchedCache(where, table, bound)
    cache.threads = []
    for i in range(40):
        cache.put(key(f"{i}.png"), variant(f"{i}.png", 3000))
    deadline = time.monotonic() + 5
    while dir_bytes(where) > bound or table.variant_bytes() != dir_bytes(where):
        assert time.monotonic() < deadline, "eviction did not finish"
        await asyncio.sleep(0.01)
    assert cache.threads
    assert threading.get_ident() not in cache.threads
    assert cache.evictions > 0
