"""Answers to slow clients: a watch per answer that cuts off a client that stops taking bytes.

A client *accepts* a byte when the kernel takes it from the connection's buffer: bytes handed
to the transport minus bytes still buffered there. While nothing waits in that buffer the
client keeps up, whatever its speed (a slow S3 is not the client's fault); only time with bytes
waiting for the client counts:

- **send_timeout**: bytes waiting and none accepted for ``send_timeout`` seconds: cut off.
- **slow_client**: over each ``send_timeout`` window with bytes waiting, fewer than
  ``min_send_rate * window`` bytes accepted: cut off the same way (a trickle of 100 bytes/s is
  never idle, and would otherwise hold an S3 connection for hours).

Cutting off aborts the transport (nothing more is queued for a client that does not read), so
the handler's pending write fails at once and a streamed S3 body is closed by its ``finally``.
A connection stays watched after its answer was handed over until its buffer is empty: an
answer small enough to be buffered whole, or a connection closed with bytes still queued, would
otherwise hold that memory for as long as a client that never reads keeps the socket open.

``SendMeter`` is the pure decision; ``SendWatchdog`` samples every watched transport once per
tick on the event loop, and tells a watch's ``on_stall`` how long its client has been stalled
(the stream uses it to let go of its S3 connection early).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

MAX_TICK: Final = 0.5  # seconds between samples (less for very short timeouts)


def reset(transport: asyncio.Transport) -> None:
    """Drop the connection and everything queued for it, here and in the kernel: a reset, not a
    close (a close would leave the kernel retrying the queued bytes to a client that does not
    read, for minutes, in an orphaned socket)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Verdict(Enum):
    KEEPS_UP = "keeps_up"  # nothing waits for the client
    WAITING = "waiting"  # bytes wait, within the limits
    TIMED_OUT = "send_timeout"
    TOO_SLOW = "slow_client"


@dataclass(frozen=True, slots=True)
class SendLimits:
    timeout: float  # seconds without an accepted byte while bytes wait
    min_rate: int  # bytes/s over each ``timeout`` window while bytes wait; 0: no minimum


@dataclass(slots=True)
class SendMeter:
    """Pure: what the samples (time, handed, buffered) of one answer say about its client."""

    limits: SendLimits
    started: float
    _accepted: int = 0
    _progress_at: float = 0.0  # when a byte was last accepted, or nothing waited
    _window_at: float = 0.0
    _window_base: int = 0  # accepted at the window's start

    def __post_init__(self) -> None:
        self._progress_at = self._window_at = self.started

    def stalled_for(self, now: float) -> float:
        return now - self._progress_at

    def sample(self, now: float, handed: int, buffered: int) -> Verdict:
        accepted = max(0, handed - buffered)
        if buffered <= 0:
            self._accepted = self._window_base = accepted
            self._progress_at = self._window_at = now
            return Verdict.KEEPS_UP
        if accepted > self._accepted:
            self._accepted, self._progress_at = accepted, now
        if now - self._progress_at >= self.limits.timeout:
            return Verdict.TIMED_OUT
        window = now - self._window_at
        if window >= self.limits.timeout:
            if accepted - self._window_base < self.limits.min_rate * window:
                return Verdict.TOO_SLOW
            self._window_at, self._window_base = now, accepted
        return Verdict.WAITING


@dataclass(slots=True, eq=False)
class SendWatch:
    """One connection being written to: writers add what they hand the transport to ``handed``
    (over every answer on the connection); ``reason`` says why it was cut off."""

    transport: asyncio.Transport
    meter: SendMeter
    handed: int = 0
    reason: str | None = None  # "send_timeout" or "slow_client" once cut off
    on_stall: Callable[[float], None] | None = field(default=None)
    writing: bool = False  # an answer is being written (else: what was handed over drains)

    @property
    def is_cut(self) -> bool:
        return self.reason is not None


class SendWatchdog:
    """Every answer being written on one event loop, sampled once per tick."""

    def __init__(self, limits: SendLimits, on_cut: Callable[[str], None] = lambda reason: None,
                 clock: Callable[[], float] | None = None) -> None:
        self.limits = limits
        self.tick = min(MAX_TICK, limits.timeout / 4)
        self._on_cut = on_cut
        self._clock = clock
        self._watches: dict[asyncio.Transport, SendWatch] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._watches)

    @contextlib.contextmanager
    def watch(self, transport: asyncio.Transport | None) -> Iterator[SendWatch | None]:
        """Watch ``transport`` while the block writes an answer to it, and after it until what
        was handed over has left (None: no transport, nothing to watch)."""
        if transport is None:
            yield None
            return
        loop = asyncio.get_running_loop()
        watch = self._watches.get(transport)
        if watch is None:
            watch = self._watches[transport] = SendWatch(transport, SendMeter(self.limits, self._now(loop)))
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._sample_all)
        watch.writing = True
        try:
            yield watch
        finally:
            watch.writing, watch.on_stall = False, None
            if transport.get_write_buffer_size() <= 0:
                self._watches.pop(transport, None)

    def _now(self, loop: asyncio.AbstractEventLoop) -> float:
        return self._clock() if self._clock is not None else loop.time()

    def _sample_all(self) -> None:
        loop = asyncio.get_running_loop()
        now = self._now(loop)
        for watch in list(self._watches.values()):
            self.sample(watch, now)
        self._timer = loop.call_later(self.tick, self._sample_all) if self._watches else None

    def sample(self, watch: SendWatch, now: float) -> Verdict:
        if watch.is_cut:
            return Verdict.TIMED_OUT
        transport = watch.transport
        verdict = watch.meter.sample(now, watch.handed, transport.get_write_buffer_size())
        if verdict in (Verdict.TIMED_OUT, Verdict.TOO_SLOW):
            watch.reason = verdict.value
            self._watches.pop(transport, None)
            reset(transport)
            self._on_cut(verdict.value)
        elif verdict is Verdict.WAITING and watch.on_stall is not None:
            watch.on_stall(watch.meter.stalled_for(now))
        elif verdict is Verdict.KEEPS_UP and not watch.writing:
            self._watches.pop(transport, None)  # what was handed over has left
        return verdict

    def cut_all(self, reason: str) -> int:
        """Reset every connection still being written to (a graceful stop's time is up)."""
        watches = list(self._watches.values())
        for watch in watches:
            watch.reason = reason
            reset(watch.transport)
        self._watches.clear()
        return len(watches)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watches.clear()
