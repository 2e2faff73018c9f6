"""memory.py: freed heap goes back to the OS, so a burst of clients leaves no lasting peak."""

from __future__ import annotations

import asyncio

import pytest

from imgproxy.memory import find_malloc_trim, trim_periodically


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_trimming_returns_what_a_burst_of_buffers_freed() -> None:
    trim = find_malloc_trim()
    if trim is None:
        pytest.skip("this C library has no malloc_trim")
    trim(0)
    before = rss_kib()
    # Like a burst of connections: many 64 KiB buffers, interleaved with survivors, then freed.
    burst = [bytearray(64 * 1024) for _ in range(1500)]
    survivors = [bytes(100) for _ in range(1500)]
    del burst
    held = rss_kib() - before
    trim(0)
    assert rss_kib() - before < held / 2
    assert len(survivors) == 1500


async def test_the_trimmer_runs_every_interval_until_cancelled() -> None:
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    task = asyncio.create_task(trim_periodically(trim, 0.01))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(calls)
    await asyncio.sleep(0.05)
    assert count >= 3
    assert len(calls) == count  # stopped
    assert set(calls) == {0}
