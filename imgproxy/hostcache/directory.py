"""The host cache's directory: who may read it, and the start-up sweep.

Layout: ``variants/`` (one file per entry, named by ``VariantKey.store_name``, a hex digest:
nothing a client sends becomes a path), ``locks/`` (the render locks, see ``flight.py``),
``table.sqlite`` (metadata and hot counters, see ``table.py``), ``evict.lock`` and
``instance.lock`` (held by the one ``imgproxy serve`` using the directory: ``Claim``).

The directory is the service user's alone (mode 0700, files 0600): it holds rendered private
images. One owned by another user, or a symlink, is refused (``StartupError``); one with wider
permissions is repaired, with a WARNING naming the old mode.

``sweep`` runs once per host start (the supervisor, before it forks the workers; or the single
serving process): temporary files of writes that never finished, leftover lock files, entries
whose size is not the one their header states, files that are not entries at all, and the old
table (what S3 said about objects a restart ago is not worth trusting) are removed; then the
oldest entries go until the rest fit ``max_bytes``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from imgproxy.hostcache import entries
from imgproxy.startup import StartupError

log = logging.getLogger("imgproxy.hostcache")
ENTRY_NAME: Final = re.compile(r"[0-9a-f]{64}")  # VariantKey.store_name
TEMP_SUFFIX: Final = ".tmp"
TABLE_FILES: Final = ("table.sqlite", "table.sqlite-wal", "table.sqlite-shm")


@dataclass(frozen=True, slots=True)
class CacheDir:
    """Where each part of the host cache lives."""

    root: Path

    @property
    def variants(self) -> Path:
        return self.root / "variants"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def table(self) -> Path:
        return self.root / TABLE_FILES[0]

    @property
    def evict_lock(self) -> Path:
        return self.root / "evict.lock"


def private_temp_dir() -> Path:
    """A fresh directory for a host cache nobody configured (the system's temp dir, 0700)."""
    return Path(tempfile.mkdtemp(prefix="imgproxy-cache-"))


def secure(path: Path, what: str) -> None:
    """``path`` exists as this user's own directory with mode 0700 (created, or repaired)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise StartupError(f"{what} {path}: cannot create it: {os.strerror(exc.errno or 0)}") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StartupError(f"{what} {path}: not a directory (a symlink or a file); refusing it")
    if info.st_uid != os.geteuid():
        raise StartupError(f"{what} {path}: owned by uid {info.st_uid}, not this user "
                           f"(uid {os.geteuid()}); refusing to keep private images there")
    mode = stat.S_IMODE(info.st_mode)
    if mode != 0o700:
        os.chmod(path, 0o700)
        log.warning("%s %s had mode %o (readable by others); changed to 700", what, path, mode)


def open_dir(root: str | os.PathLike[str]) -> CacheDir:
    """The cache directory, its parts created and checked (idempotent: every worker may call it)."""
    where = CacheDir(Path(root))
    secure(where.root, "cache.dir")
    secure(where.variants, "cache.dir")
    secure(where.locks, "cache.dir")
    return where


@dataclass(frozen=True, slots=True)
class Claim:
    """One ``imgproxy serve``'s hold on a cache directory: an ``flock`` on ``instance.lock``,
    shared with the workers it forks, released when the last of them exits. A second instance
    on the same directory would sweep away the first one's table and temporary files."""

    where: CacheDir
    fd: int

    def release(self) -> None:
        os.close(self.fd)


def claim(where: CacheDir) -> Claim:
    fd = os.open(where.root / "instance.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(f"cache.dir {where.root}: in use by another imgproxy serve "
                           "(one per directory)") from None
    return Claim(where, fd)


def prepare(root: str | os.PathLike[str], max_bytes: int) -> Claim:
    """The directory made safe, claimed and swept, its table fresh with the bytes kept (before
    any worker starts); the caller holds the claim while it serves."""
    from imgproxy.hostcache.table import HostTable

    where = open_dir(root)
    held = claim(where)
    try:
        kept, families = sweep(where, max_bytes)
        table = HostTable(where.table)
        try:
            table.set_variant_bytes(kept)
            for family in families:
                table.note_family(family, 0.0)
        finally:
            table.close()
    except (OSError, sqlite3.Error) as exc:
        held.release()
        raise StartupError(f"cache.dir {root}: cannot prepare it: {exc}") from None
    return held


def sweep(where: CacheDir, max_bytes: int) -> tuple[int, set[bytes]]:
    """Clean up after whatever ran here before (see the module docstring); the bytes kept and
    the families of the entries kept (``HostVariantCache.holds_any``)."""
    for name in TABLE_FILES:
        _remove(where.root / name)
    for lock in os.scandir(where.locks):
        _remove(Path(lock.path))
    kept: list[tuple[float, int, bytes, Path]] = []
    removed = 0
    for item in os.scandir(where.variants):
        path = Path(item.path)
        described = describe_entry(path) if ENTRY_NAME.fullmatch(item.name) else None
        if described is None:
            removed += _remove(path)
        else:
            kept.append((item.stat(follow_symlinks=False).st_mtime, *described, path))
    kept.sort(reverse=True)  # newest first: those stay
    total, families = 0, set()
    for _, size, family, path in kept:
        if total + size <= max_bytes:
            total += size
            families.add(family)
        else:
            removed += _remove(path)
    if removed:
        log.info("host cache %s: removed %d partial, foreign or excess entries at start-up",
                 where.root, removed)
    return total, families


def describe_entry(path: Path) -> tuple[int, bytes] | None:
    """The file's size and family if it is a regular file of the size its header states and a
    key of this pipeline version, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        described = entries.describe(os.pread(fd, entries.PREFIX_BYTES + entries.MAX_HEADER_BYTES, 0))
        return described if described is not None and described[0] == info.st_size else None
    finally:
        os.close(fd)


def _remove(path: Path) -> int:
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    except IsADirectoryError:
        return 0
    return 1
