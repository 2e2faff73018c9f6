"""hostcache.table: metadata and hot counts that every process on the host sees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_gate import ManualClock

from imgproxy.cache import SourceMeta
from imgproxy.hostcache.table import PRUNE_EVERY, HostHotCounter, HostMetadata, HostTable

META = SourceMeta('"etag"', 1234, "image/png")


@pytest.fixture
def tables(tmp_path: Path) -> Iterator[tuple[HostTable, HostTable]]:
    """Two connections to one table: two workers."""
    first, second = HostTable(tmp_path / "t.sqlite"), HostTable(tmp_path / "t.sqlite")
    yield first, second
    first.close()
    second.close()


def test_metadata_put_by_one_worker_is_known_to_another(tables: tuple[HostTable, HostTable]) -> None:
    one, two = (HostMetadata(t, 100, 30) for t in tables)
    one.put("photos", "a.png", META)
    assert two.get("photos", "a.png") == META
    assert two.get("archive", "a.png") is None
    two.forget("photos", "a.png")
    assert one.get("photos", "a.png") is None


def test_metadata_expires_after_its_ttl(tables: tuple[HostTable, HostTable]) -> None:
    clock = ManualClock(1000.0)
    cache = HostMetadata(tables[0], 100, 30, clock=clock)
    cache.put("photos", "a.png", SourceMeta(None, 5, None))
    clock.advance(29)
    assert cache.get("photos", "a.png") == SourceMeta(None, 5, None)
    clock.advance(2)
    assert cache.get("photos", "a.png") is None


def test_odd_metadata_is_not_kept(tables: tuple[HostTable, HostTable]) -> None:
    cache = HostMetadata(tables[0], 100, 30)
    cache.put("photos", "a.png", META)
    cache.put("photos", "a.png", SourceMeta('"' + "e" * 300 + '"', 1, None))
    assert cache.get("photos", "a.png") is None


def test_hot_counts_add_up_over_workers(tables: tuple[HostTable, HostTable]) -> None:
    clock = ManualClock(1000.0)
    one, two = (HostHotCounter(t, 100, 60, clock=clock) for t in tables)
    assert [one.hit("photos", "a", 60), two.hit("photos", "a", 60), one.hit("photos", "a", 60)] == [1, 2, 3]
    assert two.hit("photos", "b", 60) == 1


def test_a_hot_window_is_fixed_from_its_first_request(tables: tuple[HostTable, HostTable]) -> None:
    clock = ManualClock(1000.0)
    hot = HostHotCounter(tables[0], 100, 60, clock=clock)
    hot.hit("photos", "a", 10)
    clock.advance(9)
    assert hot.hit("photos", "a", 10) == 2
    clock.advance(1)
    assert hot.hit("photos", "a", 10) == 1


def test_rows_stay_within_their_bound(tables: tuple[HostTable, HostTable]) -> None:
    clock = ManualClock(1000.0)
    hot = HostHotCounter(tables[0], 50, 60, clock=clock)
    for i in range(PRUNE_EVERY * 2):
        clock.advance(0.001)
        hot.hit("photos", f"k{i}", 60)
    assert len(hot) <= 50 + PRUNE_EVERY
    assert hot.hit("photos", f"k{PRUNE_EVERY * 2 - 1}", 60) == 2  # the newest kept


def test_a_broken_table_is_a_miss_not_an_error(tmp_path: Path) -> None:
    table = HostTable(tmp_path / "t.sqlite")
    cache, hot = HostMetadata(table, 10, 30), HostHotCounter(table, 10, 60)
    table.close()
    assert cache.get("photos", "a") is None
    cache.put("photos", "a", META)
    assert hot.hit("photos", "a", 60) == 1
