"""hostcache.limits: the rate limits' buckets, shared by every process on the host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imgproxy.config import Rate
from imgproxy.hostcache.limits import HostBuckets
from imgproxy.hostcache.table import PRUNE_EVERY, HostTable
from imgproxy.limits.buckets import Bucket, Budget, Dimension, bucket_id

NOW = 1_800_000_000.0
THREE_PER_MIN = Rate(3, 60.0)


def bucket(value: str, rate: Rate = THREE_PER_MIN, dimension: Dimension = Dimension.KEY) -> Bucket:
    return Bucket(dimension, rate, bucket_id(Budget.ORIGINALS, dimension, value))


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[HostBuckets, HostBuckets]]:
    """Two connections to one table: two workers."""
    first, second = HostTable(tmp_path / "t.sqlite"), HostTable(tmp_path / "t.sqlite")
    yield HostBuckets(first, 1000), HostBuckets(second, 1000)
    first.close()
    second.close()


def test_one_bucket_is_spent_by_every_worker_together(stores: tuple[HostBuckets, HostBuckets]) -> None:
    one, two = stores
    key = [bucket("k1")]
    allowed = [store.charge(key, NOW).allowed for store in (one, two, one, two, one)]
    assert allowed == [True, True, True, False, False]
    assert two.charge([bucket("k2")], NOW).allowed  # another key: its own bucket


def test_a_refused_charge_spends_none_of_the_buckets(stores: tuple[HostBuckets, HostBuckets]) -> None:
    one, two = stores
    looping = bucket("sig-a", Rate(1, 60.0), Dimension.SIGNATURE)
    key = bucket("k1", Rate(3, 60.0))
    assert one.charge([looping, key], NOW).allowed
    refusals = [two.charge([looping, key], NOW) for _ in range(10)]
    assert {(r.refused, r.retry_seconds) for r in refusals} == {(0, 60)}
    other = bucket("sig-b", Rate(1, 60.0), Dimension.SIGNATURE)
    assert one.charge([other, key], NOW).allowed  # the key kept 2 of its 3
    third = bucket("sig-c", Rate(1, 60.0), Dimension.SIGNATURE)
    assert one.charge([third, key], NOW).allowed
    assert one.charge([bucket("sig-d", Rate(1, 60.0), Dimension.SIGNATURE), key], NOW).refused == 1


def test_a_bucket_refills_with_time(stores: tuple[HostBuckets, HostBuckets]) -> None:
    one, two = stores
    key = [bucket("k1")]
    for _ in range(3):
        assert one.charge(key, NOW).allowed
    assert not two.charge(key, NOW + 19).allowed
    assert two.charge(key, NOW + 20).allowed  # 60 s / 3: one back every 20 s
    assert not one.charge(key, NOW + 20).allowed


def test_rows_stay_within_their_bound_and_full_buckets_are_forgotten(tmp_path: Path) -> None:
    table = HostTable(tmp_path / "t.sqlite")
    store = HostBuckets(table, 50)
    for i in range(PRUNE_EVERY * 2):
        assert store.charge([bucket(f"client-{i}")], NOW + i * 0.001).allowed
    assert len(store) <= 50 + PRUNE_EVERY
    for i in range(PRUNE_EVERY):  # an hour later every bucket is full again: pruned
        store.charge([bucket(f"later-{i}", Rate(1, 1.0))], NOW + 3600 + i * 0.001)
    assert len(store) <= PRUNE_EVERY
    table.close()


def test_a_broken_table_lets_requests_through(tmp_path: Path) -> None:
    table = HostTable(tmp_path / "t.sqlite")
    store = HostBuckets(table, 10)
    key = [bucket("k1", Rate(1, 60.0))]
    assert store.charge(key, NOW).allowed
    assert not store.charge(key, NOW).allowed
    table.close()
    assert store.charge(key, NOW).allowed


def test_a_charge_finding_the_table_locked_past_busy_ms_is_let_through_unrecorded(tmp_path: Path) -> None:
    """A charge takes the write lock (BEGIN IMMEDIATE) before it reads, so it never decides on a
    row another worker is changing; a lock held too long fails open, as the caches miss."""
    holder, other = HostTable(tmp_path / "t.sqlite"), HostTable(tmp_path / "t.sqlite")
    store = HostBuckets(other, 10)
    assert holder.query("BEGIN IMMEDIATE") is not None
    assert store.charge([bucket("k1", Rate(1, 60.0))], NOW).allowed  # locked: let through, unrecorded
    holder.query("COMMIT")
    assert store.charge([bucket("k1", Rate(1, 60.0))], NOW).allowed
    assert not store.charge([bucket("k1", Rate(1, 60.0))], NOW).allowed
    holder.close()
    other.close()
