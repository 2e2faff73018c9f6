"""hostcache.flight: one holder per variant across processes; waiting is bounded."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

import pytest

from imgproxy.hostcache.flight import HostFlight

DIGEST = "abc" + "0" * 61


async def test_a_second_holder_waits_for_the_first(tmp_path: Path) -> None:
    flight = HostFlight(tmp_path, wait_limit=5)
    order: list[str] = []

    async def hold(name: str, seconds: float) -> None:
        async with flight.hold(DIGEST):
            order.append(f"{name} in")
            await asyncio.sleep(seconds)
            order.append(f"{name} out")

    first = asyncio.create_task(hold("first", 0.2))
    await asyncio.sleep(0.05)
    await hold("second", 0)
    await first
    assert order == ["first in", "first out", "second in", "second out"]
    assert flight.waited == 1


async def test_a_lock_held_by_another_process_is_waited_for_then_given_up(tmp_path: Path) -> None:
    flight = HostFlight(tmp_path, wait_limit=0.3)
    pid = os.fork()
    if pid == 0:  # another worker holding the lock for a second
        fd = os.open(tmp_path / DIGEST[:3], os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        time.sleep(1.0)
        os._exit(0)
    try:
        await asyncio.sleep(0.2)
        started = time.monotonic()
        async with flight.hold(DIGEST):
            waited = time.monotonic() - started
        assert 0.25 <= waited < 0.9
        assert flight.timed_out == 1
    finally:
        os.waitpid(pid, 0)


async def test_a_holder_that_dies_frees_the_lock_at_once(tmp_path: Path) -> None:
    flight = HostFlight(tmp_path, wait_limit=10)
    pid = os.fork()
    if pid == 0:
        fd = os.open(tmp_path / DIGEST[:3], os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        time.sleep(0.3)
        os._exit(1)  # a crash mid-render: the kernel drops its lock
    try:
        await asyncio.sleep(0.1)
        started = time.monotonic()
        async with flight.hold(DIGEST):
            assert time.monotonic() - started < 2
        assert flight.timed_out == 0
    finally:
        os.waitpid(pid, 0)


async def test_a_lock_is_named_by_a_digest_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hex digest"):
        async with HostFlight(tmp_path, 1).hold("../x"):
            pass
