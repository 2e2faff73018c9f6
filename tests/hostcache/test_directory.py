"""hostcache.directory: the cache directory is the service user's alone, and the start-up sweep
leaves only whole entries within the byte bound."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from support import dir_of_another_user

from imgproxy.cache import PIPELINE_VERSION, Variant, VariantKey
from imgproxy.hostcache import entries
from imgproxy.hostcache.directory import CacheDir, open_dir, prepare, sweep
from imgproxy.hostcache.table import HostTable
from imgproxy.startup import StartupError


def write_entry(where: CacheDir, name: str, size: int = 1000, mtime: float | None = None) -> Path:
    key = VariantKey("photos", name, '"e"', "w=1", "jpeg")
    path = where.variants / key.store_name
    path.write_bytes(entries.encode(key, Variant(b"x" * size, "image/jpeg", key.etag, 1, 1)))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_missing_directory_is_created_for_this_user_only(tmp_path: Path) -> None:
    where = open_dir(tmp_path / "a" / "cache")
    assert mode(where.root) == mode(where.variants) == mode(where.locks) == 0o700


def test_a_directory_others_can_read_is_repaired_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    with caplog.at_level(logging.WARNING, "imgproxy.hostcache"):
        open_dir(root)
    assert mode(root) == 0o700
    assert f"cache.dir {root} had mode 755 (readable by others); changed to 700" in caplog.text


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(StartupError, match="not a directory"):
        open_dir(tmp_path / "link")


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    root = dir_of_another_user(tmp_path)
    with pytest.raises(StartupError, match="owned by uid 65534, not this user"):
        open_dir(root)


def test_the_sweep_removes_partial_temporary_and_foreign_files_and_locks(tmp_path: Path) -> None:
    where = open_dir(tmp_path / "cache")
    whole = write_entry(where, "whole.png")
    truncated = write_entry(where, "cut.png")
    truncated.write_bytes(truncated.read_bytes()[:-1])
    temp = where.variants / f"{whole.name}.123.abcd.tmp"
    temp.write_bytes(b"half")
    foreign = where.variants / "notes.txt"
    foreign.write_bytes(b"hello")
    lock = where.locks / "abc"
    lock.write_bytes(b"")
    kept, _ = sweep(where, 10**9)
    assert sorted(p.name for p in where.variants.iterdir()) == [whole.name]
    assert list(where.locks.iterdir()) == []
    assert kept == whole.stat().st_size


def test_the_sweep_keeps_the_newest_entries_within_the_bound(tmp_path: Path) -> None:
    where = open_dir(tmp_path / "cache")
    paths = [write_entry(where, f"{i}.png", 1000, mtime=1_000_000 + i) for i in range(10)]
    size = paths[0].stat().st_size
    kept, _ = sweep(where, 3 * size + 10)
    assert sorted(p.name for p in where.variants.iterdir()) == sorted(p.name for p in paths[-3:])
    assert kept == 3 * size


def test_prepare_starts_a_fresh_table_holding_the_bytes_kept(tmp_path: Path) -> None:
    where = open_dir(tmp_path / "cache")
    path = write_entry(where, "a.png")
    where.table.write_bytes(b"not a database")
    prepare(where.root, 10**9).release()
    table = HostTable(where.table)
    try:
        assert table.variant_bytes() == path.stat().st_size
    finally:
        table.close()
    assert mode(where.table) == 0o600


def test_a_directory_another_instance_holds_is_refused_until_it_lets_go(tmp_path: Path) -> None:
    held = prepare(tmp_path / "cache", 10**9)
    with pytest.raises(StartupError, match="in use by another imgproxy serve"):
        prepare(tmp_path / "cache", 10**9)
    held.release()
    prepare(tmp_path / "cache", 10**9).release()


def test_the_sweep_removes_entries_of_another_pipeline_version(tmp_path: Path) -> None:
    where = open_dir(tmp_path / "cache")
    path = write_entry(where, "old.png")
    older = str(int(PIPELINE_VERSION) - 1)
    path.write_bytes(path.read_bytes().replace(f'"key":["{PIPELINE_VERSION}",'.encode(),
                                               f'"key":["{older}",'.encode(), 1))
    assert sweep(where, 10**9) == (0, set())
    assert not path.exists()


def test_prepare_remembers_which_families_the_kept_entries_are_of(tmp_path: Path) -> None:
    where = open_dir(tmp_path / "cache")
    write_entry(where, "a.png")
    prepare(where.root, 10**9).release()
    table = HostTable(where.table)
    try:
        assert table.has_family(entries.family_id(VariantKey("photos", "a.png", None, "w=1", "jpeg")))
        assert not table.has_family(entries.family_id(VariantKey("photos", "b.png", None, "w=1", "jpeg")))
    finally:
        table.close()
