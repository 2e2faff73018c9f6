#!/usr/bin/env python3
"""Benchmark: a normal client's errors, latency and the server's memory while hostile clients attack.

Not a test. It measures and prints; it exits non-zero only when something *failed to run* (a
process would not start or died, the normal client failed before any attack, no attacker could
connect). The targets (no error for the normal client, p99 within 3x, memory growth) are
reported, never an error: on code without the defences the point is to show the damage.

Processes on 127.0.0.1, each one's CPU visible:
  moto       the S3 server (its own Python process)
  proxy      ``imgproxy serve`` (``server.workers = 1`` unless --workers), ``[delivery] mode =
             "stream"``, metrics on; its image pool (forkserver, render processes) is "pools"
  bench      this process: seeds the bucket, is the normal client, samples memory
  attackers  one asyncio process with raw non-blocking sockets (no thread per client), all bound
             to --attacker-address (127.0.0.2: all of 127/8 is loopback on Linux) so that a
             per-client limit in the server can tell them from the normal client (127.0.0.1)

(a) Rounds alternate without and with attackers (--rounds of each). Each round lasts until the
    normal client has made --requests requests and --seconds have passed (at most --max-seconds;
    requests still running then get --drain seconds, then count as "unfinished"). The normal
    client: --concurrency keep-alive connections, each cycling through originals (a ~500 KB
    photo-like JPEG, streamed: 50 %), thumbnail hits (w=160/240/320, cached after the warm-up:
    40 %) and thumbnail misses (a fresh w/q pair every time: 10 %), checking status, type and
    length. A with-round starts the attackers --ramp seconds before it is measured:
      slow readers   --slow-readers sockets with a small SO_RCVBUF (set before connect), each GETs
                     the big object (a ~23 MiB JPEG) and reads at one of --slow-rates bytes/s
                     (0: never reads)
      idle           --idle keep-alive sockets: one GET /healthz, then silence
      slowloris      --slowloris sockets sending a request head one byte every --slowloris-every s
    When the server cuts one (EOF, reset, or its end of the connection seen closed or gone in
    /proc/net/tcp), it reconnects after RECONNECT_AFTER s, so the pressure is sustained. The
    attackers close with RST when the round ends. Reported: per side, requests, errors by kind,
    p50/p99 of the normal client's right answers and p99 with/without attackers (targets: 0
    errors, <= 3x, judged on the p99 of every request, an error counting with the time it took);
    attacker connections open (server-side ESTABLISHED from the attacker address), cuts
    by reason; the server's RSS summed over its process tree (baseline after the warm-up, peak in
    the with-rounds and --settle s after them: growth target < 64 MiB; part (a)'s variant cache is
    small, so the normal client's misses do not grow it); Prometheus counters about aborts, pools,
    timeouts, overload and rejections (if the server has any); the server log's warnings and errors.
(b) One burst of --transform-requests concurrent transform misses (distinct w, each large
    enough that the whole source is decoded) of the big JPEG, on a second proxy with the variant
    cache off and ``transform.max_source_bytes`` raised above it: statuses (200, 503 overloaded
    with Retry-After, other) and the peak RSS growth of the server's process tree against
    ``predicted_peak_bytes``, the README's worst case.

    .venv/bin/python bench/bench_hostile.py [--quick] [--rounds 3] [--requests 2000]
        [--slow-readers 200] [--idle 100] [--server send_timeout='"10s"'] [--skip-transform]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import io
import itertools
import os
import platform
import random
import re
import secrets
import signal
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import hdrs
from bench_transform import photo_like
from harness import (
    BUCKET,
    HOST,
    MIB,
    SOURCE,
    BenchError,
    CpuMeter,
    Phase,
    Sample,
    TreeSampler,
    code_state,
    descendants,
    free_port,
    keep_logs,
    moto,
    note,
    parent_of,
    proxy,
    receive,
    reset_peak_rss,
    run_main,
    s3_client,
    session_for,
    spawned,
    status_kib,
)
from yarl import URL

from imgproxy.auth.signing import UrlSigner
from imgproxy.config import load_config

BYTES_PER_PIXEL: Final = 5  # decoded at 4 bytes a pixel (Pillow's RGB and RGBA), + resize buffers
DEFAULT_MAX_SOURCE_PIXELS: Final = 50_000_000  # transform.max_source_pixels's default


def predicted_peak_bytes(workers: int, queue_size: int, max_source_bytes: int,
                         max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS) -> int:
    """The README's worst case for the memory transforms add to a server (its process tree);
    keep this function in step with the README's formula: when one changes, so must the other.

    Admission comes before the download and only ``2 * workers`` admitted jobs are handed to
    the workers (transform/pool.py), so ``queue_size`` costs nothing; each worker reads its job's
    source itself (storage/worker_read.py), so the main process holds none. Each worker holds
    its source twice (the buffer it read it into, and Pillow's BytesIO copy) plus its decoded
    pixels and resize buffers, BYTES_PER_PIXEL bytes for each of at most ``max_source_pixels``."""
    del queue_size  # in the formula's signature on purpose: it no longer matters
    per_worker = 2 * max_source_bytes + BYTES_PER_PIXEL * max_source_pixels
    return workers * per_worker


ORIGINAL_KEY: Final = "hostile/photo-1920x1440.jpg"
BIG_KEY: Final = "hostile/noise-{}x{}.jpg"
ORIGINAL_SIZE: Final = (1920, 1440)  # photo_like: ~500 KB
NOISE_SIGMA: Final = 10  # 6000x4000 at quality 100: ~23 MiB
PATTERN: Final = ("original", "hit", "original", "hit", "original", "hit", "original", "hit", "original",
                  "miss")
KINDS: Final = ("original", "hit", "miss")
HIT_WIDTHS: Final = (160, 240, 320)
MISS_WIDTHS: Final = range(100, 700)  # the JPEG decoder's DCT scaling keeps these renders cheap
MISS_QUALITIES: Final = range(90, 30, -1)
BURST_FIRST_WIDTH: Final = 1200  # w >= 1001 of a 6000 px source: no DCT scaling, a full decode
TTL: Final = 24 * 3600
ERROR_PAUSE: Final = 0.1  # after an error the normal client waits, as a client would
TICK: Final = 1.0  # attackers act (read, check for a cut) once a second
RECONNECT_AFTER: Final = 0.5
CONNECT_TIMEOUT: Final = 10.0
IP_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux
STOPPED: Final = "stopped by the bench"
RECOVERY_LIMIT: Final = 30.0
RSS_EVERY: Final = 0.5
BURST_RSS_EVERY: Final = 0.1
TARGET_ERRORS: Final = 0
TARGET_P99_RATIO: Final = 3.0
TARGET_GROWTH_MIB: Final = 64.0
METRIC_WORDS: Final = ("abort", "pool", "timeout", "overload", "rejection")
STATUS_LABEL: Final = re.compile(r'status="(\d+)"')
LOG_RECORD: Final = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ([A-Z]+) (\S+) ?(.*)$")
REQUEST_ID: Final = re.compile(r"request_id=\S+")
ACCESS_CLIENT: Final = re.compile(r"\bclient=(\S+)")
ACCESS_STATUS: Final = re.compile(r"\bstatus=(\d+)")
ACCESS_ABORTED: Final = re.compile(r"\baborted=(\S+)")
TRACEBACK_PROSE: Final = ("Traceback (", "During handling", "The above exception")
HTTP_STATUS: Final = re.compile(rb"^HTTP/1\.[01] (\d{3})")
TCP_STATES: Final = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
                     "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
                     "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}
OPEN_STATES: Final = frozenset({"ESTABLISHED", "SYN_RECV"})  # SYN_RECV: not accepted yet

DEFAULTS: Final[dict[str, Any]] = {
    # warmup: the image workers reach their memory high-water only after ~10 s of misses; the
    # baseline is taken after that, so growth measures the attack, not the workers' first renders.
    "rounds": 3, "requests": 2000, "seconds": 30.0, "max_seconds": 40.0, "warmup": 15.0, "ramp": 5.0,
    "drain": 8.0, "settle": 3.0, "slow_readers": 200, "idle": 100, "slowloris": 10, "transform_requests": 100,
    "big": "6000x4000",
}
QUICK: Final[dict[str, Any]] = {
    "rounds": 1, "requests": 300, "seconds": 8.0, "max_seconds": 15.0, "warmup": 2.0, "ramp": 3.0,
    "drain": 5.0, "settle": 2.0, "slow_readers": 40, "idle": 20, "slowloris": 4, "transform_requests": 20,
    "big": "3000x2000",
}


# --- the objects -------------------------------------------------------------------------------

def noisy_jpeg(width: int, height: int, sigma: int = NOISE_SIGMA) -> bytes:
    """Gaussian noise in each channel at quality 100: barely compressible, so the file is large
    for its pixels (6000x4000: ~23 MiB) and a transform decodes all of them."""
    from PIL import Image

    image = Image.merge("RGB", [Image.effect_noise((width, height), sigma) for _ in range(3)])
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=100)
    return buffer.getvalue()


# --- sockets seen by the kernel ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TcpSocket:
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    send_queue: int  # bytes in the kernel's send queue (not yet acknowledged)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.partition(":")
    return socket.inet_ntoa(struct.pack("=I", int(host, 16))), int(port, 16)


def tcp_sockets(port: int) -> list[TcpSocket]:
    """Every IPv4 TCP socket with ``port`` at one of its ends, from /proc/net/tcp (the bench and
    the server share a network namespace)."""
    marker = f":{port:04X} "
    found = []
    with open("/proc/net/tcp") as listing:
        next(listing)
        for line in listing:
            if marker not in line:
                continue
            fields = line.split()
            local, remote = _address(fields[1]), _address(fields[2])
            if port in (local[1], remote[1]):
                found.append(TcpSocket(local, remote, TCP_STATES.get(fields[3], fields[3]),
                                       int(fields[4].partition(":")[0], 16)))
    return found


# --- the attackers: one process, one event loop, raw sockets -----------------------------------

@dataclass(frozen=True, slots=True)
class AttackPlan:
    port: int
    source: str  # the attackers' source address
    slow_request: bytes
    idle_request: bytes
    slow_rates: tuple[int, ...]  # one per slow reader: bytes read a second (0: never reads)
    idle: int
    slowloris: int
    slowloris_every: float
    rcvbuf: int
    ramp: float
    scan_every: float


def slow_kind(rate: int) -> str:
    return "never reads" if rate == 0 else f"reads {rate} B/s"


@dataclass(eq=False)
class Conn:
    kind: str
    sock: socket.socket
    port: int  # our end's port: the key in /proc/net/tcp
    opened: float
    cut: str = ""  # set by the monitor: why the server is taken to have cut it
    strikes: int = 0
    head: bytes = b""  # the first bytes of the answer


@dataclass
class KindStats:
    connections: int = 0
    connect_errors: Counter[str] = field(default_factory=Counter)
    ends: Counter[str] = field(default_factory=Counter)  # why connections ended
    statuses: Counter[str] = field(default_factory=Counter)  # status lines read
    bytes_read: int = 0
    lifetimes: list[float] = field(default_factory=list)  # connect -> cut by the server, seconds
    open: int = 0
    max_open: int = 0

    def summary(self) -> dict[str, Any]:
        cuts = {reason: n for reason, n in self.ends.items() if reason != STOPPED}
        lifetimes = sorted(self.lifetimes)
        return {
            "connections": self.connections, "connect_errors": dict(self.connect_errors),
            "cuts": cuts, "cut_total": sum(cuts.values()), "open_at_stop": self.ends[STOPPED],
            "max_open": self.max_open, "statuses": dict(self.statuses), "bytes_read": self.bytes_read,
            "median_lifetime_s": round(lifetimes[len(lifetimes) // 2], 1) if lifetimes else None,
        }


def error_name(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return exc.__class__.__name__


def reset_close(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the server's end goes at once, no TIME_WAIT on ours."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def slowloris_bytes(port: int) -> Iterator[bytes]:
    """A request head that never ends, one byte at a time."""
    yield from (bytes([b]) for b in f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode())
    for number in itertools.count():
        yield from (bytes([b]) for b in f"X-Slow-{number}: {number}\r\n".encode())


class Attack:
    """All attacker connections of one with-round, and a monitor that reads /proc/net/tcp every
    ``scan_every`` s: it counts the server's sockets, and marks a connection cut when its server
    end is closed or gone (two scans running) or ours has received the server's FIN. A client
    that does not read never sees a FIN queued behind unread data, hence the server-side view."""

    def __init__(self, plan: AttackPlan) -> None:
        self.plan = plan
        self.conns: dict[int, Conn] = {}
        self.stats: dict[str, KindStats] = {}
        self.timeline: list[dict[str, Any]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.started = time.monotonic()

    def start(self) -> None:
        rng = random.Random(7)
        spread = self.plan.ramp / 2  # connect within the first half of the ramp, not in one burst

        def launch(kind: str, session: Callable[[Conn], Awaitable[str]]) -> None:
            self.stats.setdefault(kind, KindStats())
            self.tasks.append(asyncio.create_task(self.attacker(kind, rng.uniform(0, spread), session)))

        for rate in self.plan.slow_rates:
            launch(slow_kind(rate), functools.partial(self.trickle, rate=rate))
        for _ in range(self.plan.idle):
            launch("idle keep-alive", self.idle)
        for _ in range(self.plan.slowloris):
            launch("slowloris", self.slowloris)
        self.tasks.append(asyncio.create_task(self.monitor()))

    async def stop(self) -> dict[str, Any]:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for conn in list(self.conns.values()):
            self.finish(conn, STOPPED)
        return {"seconds": round(time.monotonic() - self.started, 1),
                "kinds": {kind: stats.summary() for kind, stats in self.stats.items()},
                "timeline": self.timeline}

    async def connect(self, kind: str) -> Conn | None:
        loop = asyncio.get_running_loop()
        stats = self.stats[kind]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.plan.rcvbuf)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.plan.source, 0))
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, (HOST, self.plan.port)), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            reset_close(sock)
            stats.connect_errors[error_name(exc)] += 1
            await asyncio.sleep(RECONNECT_AFTER)
            return None
        except BaseException:
            reset_close(sock)
            raise
        conn = Conn(kind, sock, sock.getsockname()[1], time.monotonic())
        self.conns[conn.port] = conn
        stats.connections += 1
        stats.open += 1
        stats.max_open = max(stats.max_open, stats.open)
        return conn

    def finish(self, conn: Conn, reason: str) -> None:
        if self.conns.pop(conn.port, None) is None:
            return
        stats = self.stats[conn.kind]
        stats.open -= 1
        stats.ends[reason] += 1
        if reason != STOPPED:
            stats.lifetimes.append(time.monotonic() - conn.opened)
        reset_close(conn.sock)

    def received(self, conn: Conn, data: bytes) -> str:
        """Count ``data``; "" to go on, or why to hang up (a complete refusal: not 200)."""
        stats = self.stats[conn.kind]
        stats.bytes_read += len(data)
        if len(conn.head) >= 1024:
            return ""
        had_status = HTTP_STATUS.match(conn.head)
        conn.head += data[:1024 - len(conn.head)]
        status = HTTP_STATUS.match(conn.head)
        if status is None:
            return ""
        if not had_status:
            stats.statuses[status.group(1).decode()] += 1
        if status.group(1) != b"200" and b"\r\n\r\n" in conn.head and conn.kind != "idle keep-alive":
            return f"refused: HTTP {status.group(1).decode()}"
        return ""

    async def attacker(self, kind: str, delay: float, session: Callable[[Conn], Awaitable[str]]) -> None:
        await asyncio.sleep(delay)
        while True:
            conn = await self.connect(kind)
            if conn is None:
                continue
            try:
                reason = await session(conn)
            except ConnectionResetError:
                reason = "server reset"
            except BrokenPipeError:
                reason = "server closed (write failed)"
            except OSError as exc:
                reason = f"error {error_name(exc)}"
            except asyncio.CancelledError:
                self.finish(conn, STOPPED)
                raise
            self.finish(conn, reason)
            await asyncio.sleep(RECONNECT_AFTER)

    async def receive(self, conn: Conn, size: int, seconds: float) -> bytes | None:
        """Up to ``size`` bytes within ``seconds``; None if none came (b"": the server closed)."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.sock_recv(conn.sock, size), seconds)
        except TimeoutError:
            return None

    async def trickle(self, conn: Conn, rate: int) -> str:
        """The slow reader: GET the big object, then read ``rate`` bytes a second (0: none)."""
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(conn.sock, self.plan.slow_request)
        while not conn.cut:
            if rate == 0:
                await asyncio.sleep(TICK)
                continue
            tick_end = loop.time() + TICK
            data = await self.receive(conn, rate, TICK)
            if data is None:
                continue
            if not data:
                return "server closed (EOF)"
            if refused := self.received(conn, data):
                return refused
            await asyncio.sleep(max(0.0, tick_end - loop.time()))
        return conn.cut

    async def listen(self, conn: Conn, seconds: float) -> str:
        """Read what the server sends for ``seconds``: "" if it is still open then, else why not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0 and not conn.cut:
            data = await self.receive(conn, 64 * 1024, min(left, TICK))
            if data is None:
                continue
            if not data:
                return "server closed (EOF)"
            self.received(conn, data)
        return conn.cut

    async def idle(self, conn: Conn) -> str:
        """One small request, its answer, then silence until the server closes."""
        await asyncio.get_running_loop().sock_sendall(conn.sock, self.plan.idle_request)
        reason = ""
        while not reason:
            reason = await self.listen(conn, 60.0)
        return reason

    async def slowloris(self, conn: Conn) -> str:
        """A request head one byte every ``slowloris_every`` s, listening for an answer between."""
        loop = asyncio.get_running_loop()
        for byte in slowloris_bytes(self.plan.port):
            await loop.sock_sendall(conn.sock, byte)
            if reason := await self.listen(conn, self.plan.slowloris_every):
                return reason
        return conn.cut

    async def monitor(self) -> None:
        while True:
            sockets = await asyncio.to_thread(tcp_sockets, self.plan.port)
            self.inspect(sockets)
            await asyncio.sleep(self.plan.scan_every)

    def inspect(self, sockets: Sequence[TcpSocket]) -> None:
        server = (HOST, self.plan.port)
        theirs: dict[int, TcpSocket] = {}
        ours: dict[int, TcpSocket] = {}
        states: Counter[str] = Counter()
        others = queued = 0
        for sock in sockets:
            if sock.local == server and sock.remote[0] == self.plan.source:
                theirs[sock.remote[1]] = sock
                states[sock.state] += 1
                queued += sock.send_queue
            elif sock.local == server and sock.state == "ESTABLISHED":
                others += 1
            elif sock.local[0] == self.plan.source and sock.remote == server:
                ours[sock.local[1]] = sock
        for conn in list(self.conns.values()):
            mine, server_end = ours.get(conn.port), theirs.get(conn.port)
            if mine is not None and mine.state == "CLOSE_WAIT":
                conn.cut = conn.cut or "server closed (FIN received)"
            elif server_end is None or server_end.state not in OPEN_STATES:
                conn.strikes += 1
                if conn.strikes >= 2:
                    conn.cut = conn.cut or (f"server end {server_end.state}" if server_end is not None
                                            else "server end gone")
            else:
                conn.strikes = 0
        self.timeline.append({
            "t": round(time.monotonic() - self.started, 1),
            "open": {kind: stats.open for kind, stats in self.stats.items()},
            "answered": sum(1 for conn in self.conns.values() if conn.head),  # open, a byte of answer read
            "cuts": sum(n for stats in self.stats.values() for reason, n in stats.ends.items()
                        if reason != STOPPED),
            "server_established": states["ESTABLISHED"], "server_other_states": dict(states - Counter(
                {"ESTABLISHED": states["ESTABLISHED"]})),
            "server_send_queue_mib": round(queued / MIB, 2), "server_established_others": others,
        })


def attackers_main(conn: Connection) -> None:
    """The attacker process: an AttackPlan starts an attack ("started"), "stop" ends it (its
    summary is the answer), None or a closed pipe ends the process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the bench's; it stops us
    asyncio.run(attackers_serve(conn))


async def attackers_serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    attack: Attack | None = None
    while (command := await loop.run_in_executor(None, receive, conn)) is not None:
        if isinstance(command, AttackPlan):
            attack = Attack(command)
            attack.start()
            conn.send("started")
        elif command == "stop" and attack is not None:
            conn.send(await attack.stop())
            attack = None
    if attack is not None:
        await attack.stop()


@dataclass
class Attackers:
    """The bench's end of the attacker process's pipe (blocking: call from a thread)."""

    conn: Connection
    pid: int

    def ask(self, command: object, seconds: float = 30.0) -> object:
        self.conn.send(command)
        if not self.conn.poll(seconds):
            raise BenchError(f"the attacker process did not answer {command!r:.40}")
        try:
            return self.conn.recv()
        except EOFError:
            raise BenchError("the attacker process died") from None

    def start(self, plan: AttackPlan) -> None:
        if self.ask(plan) != "started":
            raise BenchError("the attacker process did not start the attack")

    def stop(self) -> dict[str, Any]:
        summary = self.ask("stop")
        if not isinstance(summary, dict):
            raise BenchError(f"the attacker process answered {summary!r:.80}")
        return summary


@contextmanager
def attacker_process() -> Iterator[Attackers]:
    with spawned(attackers_main, name="hostile-attackers", join_timeout=15) as (conn, pid):
        yield Attackers(conn, pid)


# --- the normal client -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    started: float
    seconds: float
    problem: str  # "" for a right answer, else a stable label (the error's kind)
    cache: str = ""  # X-Cache


@dataclass
class NormalClient:
    """What the normal client asks for: signed URLs, and a fresh miss every time."""

    signer: UrlSigner
    original_url: str
    original_size: int
    hit_urls: list[str]
    misses: Iterator[int] = field(default_factory=itertools.count)

    def url(self, kind: str, position: int) -> str:
        if kind == "original":
            return self.original_url
        if kind == "hit":
            return self.hit_urls[position % len(self.hit_urls)]
        number = next(self.misses)
        params = {"w": str(MISS_WIDTHS[number % len(MISS_WIDTHS)]),
                  "q": str(MISS_QUALITIES[(number // len(MISS_WIDTHS)) % len(MISS_QUALITIES)]),
                  "fmt": "jpeg"}
        return self.signer.sign(SOURCE, ORIGINAL_KEY, ttl=TTL, params=params)

    def problem(self, kind: str, response: aiohttp.ClientResponse, body: bytes) -> str:
        if response.status != 200:
            retry = " + Retry-After" if hdrs.RETRY_AFTER in response.headers else ""
            return f"HTTP {response.status}{retry}"
        if response.content_type != "image/jpeg":
            return f"Content-Type {response.content_type}"
        if kind == "original":
            return "" if len(body) == self.original_size else "original: wrong length"
        return "" if body[:3] == b"\xff\xd8\xff" else "thumbnail: not a JPEG"


async def normal_connection(client: NormalClient, session: aiohttp.ClientSession, index: int,
                            done: Callable[[], bool], outcomes: list[Outcome]) -> None:
    """One keep-alive connection's loop until ``done()``; starts at its own place in PATTERN."""
    position = index * 3
    while not done():
        kind = PATTERN[position % len(PATTERN)]
        url = client.url(kind, position)
        position += 1
        started = time.monotonic()
        problem, cache = "", ""
        try:
            async with session.get(url, allow_redirects=False) as response:
                body = await response.read()
                problem = client.problem(kind, response, body)
                cache = response.headers.get("X-Cache", "")
        except TimeoutError:
            problem = "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            problem = f"connection: {exc.__class__.__name__}"
        except asyncio.CancelledError:
            outcomes.append(Outcome(kind, started, time.monotonic() - started, "unfinished at round end"))
            raise
        outcomes.append(Outcome(kind, started, time.monotonic() - started, problem, cache))
        if problem:
            await asyncio.sleep(ERROR_PAUSE)


async def normal_load(client: NormalClient, session: aiohttp.ClientSession, concurrency: int,
                      requests: int, seconds: float, max_seconds: float, drain: float) -> list[Outcome]:
    """Until ``requests`` were made and ``seconds`` passed (at most ``max_seconds``); requests
    still running then get ``drain`` seconds, then are cancelled (counted as unfinished)."""
    outcomes: list[Outcome] = []
    start = time.monotonic()

    def done() -> bool:
        elapsed = time.monotonic() - start
        return elapsed >= max_seconds or (elapsed >= seconds and len(outcomes) >= requests)

    tasks = [asyncio.create_task(normal_connection(client, session, i, done, outcomes))
             for i in range(concurrency)]
    while not done():
        await asyncio.sleep(0.05)
    _, pending = await asyncio.wait(tasks, timeout=drain)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return outcomes


async def recovery_seconds(session: aiohttp.ClientSession, client: NormalClient) -> float | None:
    """After an attack: how long until an original is answered right again (None: not within
    RECOVERY_LIMIT)."""
    start = time.monotonic()
    while time.monotonic() - start < RECOVERY_LIMIT:
        try:
            async with session.get(client.original_url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                if not client.problem("original", response, await response.read()):
                    return round(time.monotonic() - start, 2)
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        await asyncio.sleep(0.5)
    return None


# --- part (a): rounds without and with attackers -----------------------------------------------

@dataclass
class Round:
    side: str  # "without" or "with"
    number: int
    start: float = 0.0  # measured: the normal client's load (monotonic)
    end: float = 0.0
    attack_start: float = 0.0  # with: from the attackers' start to their stop
    attack_end: float = 0.0
    settled: float = 0.0  # with: after the recovery and --settle s (its memory window ends here)
    outcomes: list[Outcome] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    attack: dict[str, Any] = field(default_factory=dict)
    recovery_s: float | None = None


@dataclass
class Rig:
    """Part (a)'s processes and what the rounds share."""

    args: argparse.Namespace
    client: NormalClient
    plan: AttackPlan
    attackers: Attackers
    groups: Callable[[], dict[str, Any]]  # CpuMeter groups, looked up at each round's start


async def rounds(rig: Rig, metrics_url: str) -> tuple[list[Round], list[Outcome], float, dict[str, float]]:
    """The warm-up, then the rounds: (rounds, warm-up outcomes, end of the warm-up, the metrics
    scraped after the warm-up)."""
    args = rig.args
    async with session_for(args.concurrency, timeout=args.timeout) as session:
        warmup = await normal_load(rig.client, session, args.concurrency, 0, args.warmup, args.warmup,
                                   args.drain)
        failed = [o for o in warmup if o.problem]
        note(f"warm-up: {len(warmup)} requests, {len(failed)} errors")
        if failed or not warmup:
            raise BenchError(f"the normal client failed before any attack: "
                             f"{Counter(o.problem for o in failed).most_common(3)}")
        warm_end = time.monotonic()
        before, _ = await scrape(metrics_url)
        done: list[Round] = []
        for number in range(1, args.rounds + 1):
            for side in ("without", "with"):
                done.append(await one_round(rig, session, side, number))
    return done, warmup, warm_end, before


async def one_round(rig: Rig, session: aiohttp.ClientSession, side: str, number: int) -> Round:
    args = rig.args
    result = Round(side, number)
    if side == "with":
        result.attack_start = time.monotonic()
        await asyncio.to_thread(rig.attackers.start, rig.plan)
        await asyncio.sleep(args.ramp)
    meter = CpuMeter(rig.groups())
    meter.start()
    result.start = time.monotonic()
    result.outcomes = await normal_load(rig.client, session, args.concurrency, args.requests, args.seconds,
                                        args.max_seconds, args.drain)
    result.end = time.monotonic()
    result.cpu = meter.stop()
    if side == "with":
        result.attack = await asyncio.to_thread(rig.attackers.stop)
        result.attack_end = time.monotonic()
        result.recovery_s = await recovery_seconds(session, rig.client)
        await asyncio.sleep(args.settle)  # requests that waited for a pool finish (the aftermath)
        result.settled = time.monotonic()
    errors = sum(1 for o in result.outcomes if o.problem)
    note(f"round {number} {side} attackers: {len(result.outcomes)} requests, {errors} errors in "
         f"{result.end - result.start:.1f} s" + (f"; attackers cut {cut_total(result.attack)} times, "
                                                 f"recovered after {result.recovery_s} s"
                                                 if side == "with" else ""))
    return result


def cut_total(attack: dict[str, Any]) -> int:
    return sum(kind["cut_total"] for kind in attack.get("kinds", {}).values())


def latency_phase(outcomes: Sequence[Outcome], wall: float) -> Phase:
    """The right answers as a harness Phase (for its percentiles); errors are counted apart."""
    ok = [o.seconds for o in outcomes if not o.problem]
    return Phase("", 0, wall=wall, requests=len(ok), errors=len(outcomes) - len(ok), latencies=ok)


def ms(phase: Phase, q: float) -> float | None:
    """A percentile in ms, rounded; None when there is nothing to rank (JSON has no NaN)."""
    return round(phase.percentile_ms(q), 1) if phase.latencies else None


def outcome_stats(outcomes: Sequence[Outcome], wall: float) -> dict[str, Any]:
    phase = latency_phase(outcomes, wall)
    every = Phase("", 0, latencies=[o.seconds for o in outcomes])
    stats: dict[str, Any] = {
        "requests": len(outcomes), "ok": phase.requests, "errors": phase.errors,
        "errors_by_kind": dict(Counter(o.problem for o in outcomes if o.problem).most_common()),
        "seconds": round(wall, 1), "per_s": round(len(outcomes) / wall, 1) if wall else 0.0,
        "p50_ms": ms(phase, 0.50), "p99_ms": ms(phase, 0.99),
        "p99_all_ms": ms(every, 0.99),  # errors counted with the time they took
    }
    caches = Counter(o.cache for o in outcomes if o.cache)
    if caches:
        stats["x_cache"] = dict(caches)
    return stats


def side_stats(done: Sequence[Round], side: str) -> dict[str, Any]:
    mine = [r for r in done if r.side == side]
    outcomes = [o for r in mine for o in r.outcomes]
    wall = sum(r.end - r.start for r in mine)
    stats = outcome_stats(outcomes, wall)
    stats["by_kind"] = {kind: outcome_stats([o for o in outcomes if o.kind == kind], wall) for kind in KINDS}
    return stats


def attack_totals(done: Sequence[Round]) -> dict[str, Any]:
    """The attackers over every with-round: per kind, and the server's sockets from /proc."""
    kinds: dict[str, dict[str, Any]] = {}
    for r in done:
        for kind, s in r.attack.get("kinds", {}).items():
            total = kinds.setdefault(kind, {"connections": 0, "cuts": Counter(), "connect_errors": Counter(),
                                            "statuses": Counter(), "max_open": 0, "bytes_read": 0,
                                            "median_lifetime_s": []})
            total["connections"] += s["connections"]
            total["cuts"].update(s["cuts"])
            total["connect_errors"].update(s["connect_errors"])
            total["statuses"].update(s["statuses"])
            total["max_open"] = max(total["max_open"], s["max_open"])
            total["bytes_read"] += s["bytes_read"]
            if s["median_lifetime_s"] is not None:
                total["median_lifetime_s"].append(s["median_lifetime_s"])
    for total in kinds.values():
        for name in ("cuts", "connect_errors", "statuses"):
            total[name] = dict(total[name])
        total["cut_total"] = sum(total["cuts"].values())
    return kinds


def measured_scans(r: Round) -> list[dict[str, Any]]:
    """The attacker monitor's scans that fall in the round's measured window."""
    offset = r.start - r.attack_start
    return [s for s in r.attack.get("timeline", []) if offset <= s["t"] <= offset + (r.end - r.start)]


def server_sockets(r: Round) -> dict[str, Any]:
    scans = measured_scans(r) or r.attack.get("timeline", [])
    if not scans:
        return {}
    return {
        "max_established": max(s["server_established"] for s in scans),
        "min_established": min(s["server_established"] for s in scans),
        "mean_established": round(sum(s["server_established"] for s in scans) / len(scans), 1),
        "max_send_queue_mib": max(s["server_send_queue_mib"] for s in scans),
        "max_other_states": max_states(scans),
        "scans": len(scans),
    }


def timeline_text(scans: Sequence[dict[str, Any]], every: float = 10.0) -> str:
    shown, next_at = [], 0.0
    for scan in scans:
        if scan["t"] >= next_at:
            shown.append(f"{scan['t']:.0f}s {scan['server_established']}/{scan['answered']}/{scan['cuts']}")
            next_at = scan["t"] + 0.9 * every  # scans drift a little
    return " ".join(shown) or "-"


def max_states(scans: Sequence[dict[str, Any]]) -> dict[str, int]:
    found: dict[str, int] = {}
    for scan in scans:
        for state, count in scan["server_other_states"].items():
            found[state] = max(found.get(state, 0), count)
    return found


def window(r: Round) -> tuple[float, float]:
    """A round's memory window: its measured load, or for a with-round from the attackers' start
    to the end of the settle period after them (what they leave behind counts as theirs)."""
    return (r.attack_start, r.settled) if r.side == "with" else (r.start, r.end)


def memory_report(done: Sequence[Round], sampler: TreeSampler, warm_end: float) -> dict[str, Any]:
    baseline = sampler.at_or_after(warm_end)

    def peak(side: str) -> Sample | None:
        windows = [window(r) for r in done if r.side == side]
        inside = [s for s in sampler.samples if any(a <= s.at <= b for a, b in windows)]
        return max(inside, key=lambda s: s.rss_kib) if inside else None

    with_peak, without_peak = peak("with"), peak("without")
    end = sampler.latest()
    pids = {pid for s in sampler.samples if s.at >= baseline.at for pid in s.processes}

    def mib(sample: Sample | None) -> float | None:
        return None if sample is None else round(sample.rss_kib / 1024, 1)

    growth = None if with_peak is None else round((with_peak.rss_kib - baseline.rss_kib) / 1024, 1)
    peaks = [(r.side, r.number, mib(max(
        (s for s in sampler.samples if window(r)[0] <= s.at <= window(r)[1]),
        key=lambda s: s.rss_kib, default=None))) for r in done]
    # What each attack added over the round before it: the normal client's own load (variants
    # cached, allocator) grows the RSS too, without attackers.
    increments = [round(peak - before, 1) for (_, _, before), (side, _, peak) in itertools.pairwise(peaks)
                  if side == "with" and peak is not None and before is not None]
    return {
        "processes": len(baseline.processes), "processes_seen": len(pids), "samples": len(sampler.samples),
        "baseline_mib": mib(baseline), "peak_with_mib": mib(with_peak), "peak_without_mib": mib(without_peak),
        "end_mib": mib(end), "growth_mib": growth, "target_growth_mib": TARGET_GROWTH_MIB,
        "per_round_peak_mib": peaks, "with_round_increments_mib": increments,
        "rounds_s": [(r.side, r.number, round(window(r)[0] - warm_end, 1), round(window(r)[1] - warm_end, 1))
                     for r in done],
        "timeline": [(round(s.at - warm_end, 1), round(s.rss_kib / 1024, 1)) for s in sampler.samples[::2]],
    }


# --- the server's own account: metrics and log -------------------------------------------------

async def scrape(url: str) -> tuple[dict[str, float], str]:
    """Every sample of a Prometheus scrape, by series; and "" or what went wrong."""
    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                    session.get(url) as response):
            text = await response.text()
            if response.status != 200:
                return {}, f"HTTP {response.status}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return {}, f"{exc.__class__.__name__}: {exc}"
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            values[series] = float(value)
    return values, ""


def metrics_report(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Series whose name has one of METRIC_WORDS (value at the end and change over the rounds),
    and requests by status over the rounds (imgproxy_requests_total)."""
    counters = {}
    for series, value in after.items():
        name = series.partition("{")[0]
        if name.endswith("_created") or not any(word in name for word in METRIC_WORDS):
            continue
        counters[series] = {"end": value, "change": round(value - before.get(series, 0.0), 3)}
    statuses: Counter[str] = Counter()
    for series, value in after.items():
        if series.startswith("imgproxy_requests_total{") and (match := STATUS_LABEL.search(series)):
            statuses[match.group(1)] += round(value - before.get(series, 0.0))
    return {"matching": counters, "words": list(METRIC_WORDS),
            "requests_by_status": dict(sorted((k, v) for k, v in statuses.items() if v))}


def log_report(path: Path) -> dict[str, Any]:
    """The server log: records by level, the commonest WARNING/ERROR messages (request ids and
    digits folded), the exceptions of its tracebacks, and the access log's statuses and
    ``aborted`` values by client address (the attackers' is not the normal client's)."""
    levels: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    statuses: dict[str, Counter[str]] = {}
    aborted: dict[str, Counter[str]] = {}
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in text.splitlines():
        record = LOG_RECORD.match(line)
        if record is None:
            if line and not line[0].isspace() and not line.startswith(TRACEBACK_PROSE):
                exceptions[line[:160]] += 1  # a traceback's last line: the exception
            continue
        level, logger, rest = record.groups()
        levels[level] += 1
        if level in ("WARNING", "ERROR", "CRITICAL"):
            folded = re.sub(r"\d+", "N", REQUEST_ID.sub("request_id=...", rest))
            messages[f"{level} {logger} {folded}"[:160]] += 1
        if logger == "imgproxy.access":
            client = (match.group(1) if (match := ACCESS_CLIENT.search(rest)) else "?")
            if match := ACCESS_STATUS.search(rest):
                statuses.setdefault(client, Counter())[match.group(1)] += 1
            if match := ACCESS_ABORTED.search(rest):
                aborted.setdefault(client, Counter())[match.group(1)] += 1
    return {"records": sum(levels.values()), "levels": dict(levels), "tracebacks": text.count("Traceback ("),
            "top_warnings_errors": messages.most_common(6), "exceptions": exceptions.most_common(6),
            "access_statuses_by_client": {c: dict(v.most_common()) for c, v in statuses.items()},
            "access_aborted_by_client": {c: dict(v.most_common()) for c, v in aborted.items()}}


# --- part (b): a burst of transform misses -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class BurstOutcome:
    label: str
    seconds: float


async def burst(urls: Sequence[str], timeout: float) -> list[BurstOutcome]:
    """Every URL at once, each on its own connection."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout),
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:

        async def one(url: str) -> BurstOutcome:
            started = time.monotonic()
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    if response.status == 200:
                        label = "200" if body[:3] == b"\xff\xd8\xff" else "200, not a JPEG"
                    elif response.status == 503:
                        label = ("503 + Retry-After" if hdrs.RETRY_AFTER in response.headers
                                 else "503 without Retry-After")
                    else:
                        label = f"HTTP {response.status}"
            except TimeoutError:
                label = "timeout"
            except (aiohttp.ClientError, OSError) as exc:
                label = f"connection: {exc.__class__.__name__}"
            return BurstOutcome(label, time.monotonic() - started)

        return await asyncio.gather(*(one(url) for url in urls))


def tree_hwm_kib(root: int) -> tuple[int, int]:
    """(sum of VmHWM over the tree, processes read)."""
    total = count = 0
    for pid in (root, *descendants(root)):
        with contextlib.suppress(OSError, BenchError):
            total += status_kib(pid, "VmHWM")
            count += 1
    return total, count


def transform_part(args: argparse.Namespace, workdir: Path, endpoint: str, signing_key: str, big: bytes,
                   big_key: str, size: tuple[int, int]) -> dict[str, Any]:
    max_source = args.max_source_mib * MIB
    extra = "\n".join(["", "[transform]", f"workers = {args.transform_workers}",
                       f"queue_size = {args.queue_size}", f"max_source_bytes = {max_source}", "",
                       "[cache]", "variant_bytes = 0", ""])
    with proxy(workdir, endpoint, signing_key, name="transform", extra_toml=extra,
               workers=args.workers) as (proc, base_url):
        config = load_config(workdir / "transform.toml").transform
        signer = UrlSigner(signing_key, "bench", base_url)
        first = BURST_FIRST_WIDTH

        def url(width: int) -> str:
            return signer.sign(SOURCE, big_key, ttl=TTL, params={"w": str(width), "fmt": "jpeg"})

        warm = asyncio.run(burst([url(first - 1)], args.timeout * 4))[0]  # imports, metadata cache
        if warm.label != "200":
            raise BenchError(f"the transform proxy's first render of the big JPEG: {warm.label}")
        time.sleep(1.0)
        root = proc.pid
        for pid in (root, *descendants(root)):
            reset_peak_rss(pid)
        with TreeSampler(root, interval=BURST_RSS_EVERY) as sampler:
            before = sampler.take()
            started = time.monotonic()
            outcomes = asyncio.run(burst([url(first + i) for i in range(args.transform_requests)],
                                         args.timeout * 4))
            seconds = time.monotonic() - started
            time.sleep(2 * BURST_RSS_EVERY)
        hwm_kib, hwm_processes = tree_hwm_kib(root)
        after = sampler.take()
        samples = [s for s in sampler.samples if s.at >= started]
        peak = max(samples, key=lambda s: s.rss_kib) if samples else after
        workers = args.transform_workers
        bound = predicted_peak_bytes(workers, config.queue_size, config.max_source_bytes,
                                     config.max_source_pixels)
        this_source = predicted_peak_bytes(workers, config.queue_size, len(big), size[0] * size[1])
        growth = (peak.rss_kib - before.rss_kib) * 1024
        labels = Counter(o.label for o in outcomes)
        ok_seconds = sorted(o.seconds for o in outcomes if o.label == "200")
        return {
            "requests": len(outcomes), "statuses": dict(labels.most_common()), "seconds": round(seconds, 1),
            "ok_seconds_median": round(ok_seconds[len(ok_seconds) // 2], 2) if ok_seconds else None,
            "ok_seconds_max": round(ok_seconds[-1], 2) if ok_seconds else None,
            "widths": f"{first}..{first + args.transform_requests - 1}",
            "workers": workers, "queue_size": config.queue_size, "max_source_bytes": config.max_source_bytes,
            "max_source_pixels": config.max_source_pixels, "source_bytes": len(big),
            "source_pixels": size[0] * size[1],
            "processes": len(before.processes), "rss_before_mib": round(before.rss_kib / 1024, 1),
            "rss_peak_mib": round(peak.rss_kib / 1024, 1), "rss_after_mib": round(after.rss_kib / 1024, 1),
            "samples": len(samples), "growth_mib": round(growth / MIB, 1),
            "hwm_sum_mib": round(hwm_kib / 1024, 1), "hwm_processes": hwm_processes,
            "hwm_growth_mib": round((hwm_kib - before.rss_kib) / 1024, 1),
            "predicted_mib": round(bound / MIB, 1), "growth_over_predicted": round(growth / bound, 3),
            "predicted_this_source_mib": round(this_source / MIB, 1),
            "growth_over_predicted_this_source": round(growth / this_source, 3),
        }


# --- report ------------------------------------------------------------------------------------

CPU_COLUMNS: Final = ("proxy", "pools", "moto", "bench", "attackers", "others", "idle")


def cell(value: float | None, width: int) -> str:
    return f"{'-' if value is None else f'{value:.1f}':>{width}}"


def round_row(name: str, number: str, stats: dict[str, Any], cpu: dict[str, float], open_max: str,
              cuts: str) -> str:
    return (f"{name:<8}{number:>6}{stats['seconds']:>7.1f}{stats['requests']:>9}{stats['per_s']:>8.1f}"
            f"{stats['errors']:>7}{cell(stats['p50_ms'], 9)}{cell(stats['p99_ms'], 9)}"
            f"{cell(stats['p99_all_ms'], 9)}{open_max:>7}{cuts:>6}  "
            + "".join(f"{cpu.get(c, 0.0):>{len(c) + 1}.0f}" for c in CPU_COLUMNS))


def mean_cpu(done: Sequence[Round], side: str) -> dict[str, float]:
    mine = [r for r in done if r.side == side]
    wall = sum(r.end - r.start for r in mine)
    names = {name for r in mine for name in r.cpu}
    return {name: round(sum(r.cpu.get(name, 0.0) * (r.end - r.start) for r in mine) / wall, 1)
            for name in sorted(names)} if wall else {}


def rig_settle_text(done: Sequence[Round]) -> str:
    """How long after the attackers' stop their rounds' memory windows ran, e.g. "4.1-5.0 s"."""
    after = [r.settled - r.attack_end for r in done if r.side == "with"]
    return f"{min(after):.1f}-{max(after):.1f} s" if after else "-"


def p99_ratio(under: dict[str, Any], without: dict[str, Any], key: str) -> float | None:
    return round(under[key] / without[key], 2) if under[key] is not None and without[key] else None


def ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in errors.items()) or "none"


def part_a_report(done: Sequence[Round], warmup: Sequence[Outcome], memory: dict[str, Any],
                  metrics: dict[str, Any], log: dict[str, Any],
                  scrape_problem: str) -> tuple[str, dict[str, Any]]:
    head = (f"{'side':<8}{'round':>6}{'secs':>7}{'requests':>9}{'req/s':>8}{'errors':>7}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'p99 all':>9}{'open':>7}{'cuts':>6}  cpu % of one core:")
    head2 = " " * (len(head) - len("cpu % of one core:")) + "".join(f" {c}" for c in CPU_COLUMNS)
    lines = [head, head2, "-" * len(head2)]
    for r in done:
        stats = outcome_stats(r.outcomes, r.end - r.start)
        sockets = server_sockets(r) if r.side == "with" else {}
        lines.append(round_row(r.side, str(r.number), stats, r.cpu, str(sockets.get("max_established", "-")),
                               str(cut_total(r.attack)) if r.side == "with" else "-"))
    sides = {side: side_stats(done, side) for side in ("without", "with")}
    lines.append("-" * len(head2))
    for side, stats in sides.items():
        lines.append(round_row(side, "all", stats, mean_cpu(done, side), "", ""))
    lines.append("(p50/p99: right answers only; 'p99 all': every request, an error counted with the time "
                 "it took; open: most server-side ESTABLISHED connections from the attackers in a scan; "
                 "cuts: attacker connections the server ended, each followed by a reconnect)")
    for side, stats in sides.items():
        lines.append(f"errors {side} attackers: {errors_text(stats['errors_by_kind'])}")
    for side, stats in sides.items():
        lines.append(f"by request {side}: " + "; ".join(
            f"{kind} {s['requests']} req, {s['errors']} err, p50/p99 {cell(s['p50_ms'], 0)}/"
            f"{cell(s['p99_ms'], 0)} ms"
            + (f", X-Cache {s['x_cache']}" if "x_cache" in s else "")
            for kind, s in stats["by_kind"].items()))
    without, under = sides["without"], sides["with"]
    ratio, ratio_all = p99_ratio(under, without, "p99_ms"), p99_ratio(under, without, "p99_all_ms")
    # The verdict counts every request: an error is latency too (one answer in 20 s is no p99).
    ratio_ok = ratio_all is not None and ratio_all <= TARGET_P99_RATIO
    errors_ok = under["errors"] <= TARGET_ERRORS
    lines.append(f"normal client with attackers: {under['errors']} errors - "
                 f"{'meets' if errors_ok else 'MISSES'} target {TARGET_ERRORS}; p99 with/without, every "
                 f"request: {ratio_text(ratio_all)} ({cell(under['p99_all_ms'], 0)} / "
                 f"{cell(without['p99_all_ms'], 0)} ms) - {'meets' if ratio_ok else 'MISSES'} target <= "
                 f"{TARGET_P99_RATIO:g}x; right answers only: {ratio_text(ratio)}; requests per round with "
                 f"attackers: {[len(r.outcomes) for r in done if r.side == 'with']}")
    warm_errors = sum(1 for o in warmup if o.problem)
    lines.append(f"warm-up (not in the table): {len(warmup)} requests, {warm_errors} errors; recovery "
                 "after each attack (first right original after the attackers hung up): "
                 + ", ".join(f"{r.recovery_s} s" if r.recovery_s is not None
                             else f"not within {RECOVERY_LIMIT:g} s" for r in done if r.side == "with"))

    attackers = attack_totals(done)
    lines.append("attackers over the with-rounds (kind: connections made, most open at once, cuts by "
                 "reason, median life until cut, statuses read, bytes read):")
    for kind, total in attackers.items():
        lifetimes = sorted(total["median_lifetime_s"])
        life = f"{lifetimes[len(lifetimes) // 2]:.0f} s" if lifetimes else "-"
        reasons = f" {total['cuts']}" if total["cuts"] else ""
        errors = f", connect errors {total['connect_errors']}" if total["connect_errors"] else ""
        lines.append(f"  {kind:<16} {total['connections']:>5} conn, max open {total['max_open']:>4}, cuts "
                     f"{total['cut_total']:>4}{reasons}, life {life}, statuses {total['statuses'] or '-'}, "
                     f"{total['bytes_read']:,} B read{errors}")
    per_round = [server_sockets(r) for r in done if r.side == "with"]
    lines.append("server side (/proc/net/tcp, measured window of each with-round): ESTABLISHED from the "
                 "attackers min/mean/max " + "; ".join(
                     f"{s.get('min_established', '-')}/{s.get('mean_established', '-')}/"
                     f"{s.get('max_established', '-')}" for s in per_round)
                 + "; most in other states "
                 + "; ".join(str(s.get("max_other_states") or "none") for s in per_round)
                 + "; kernel send queue to them, max MiB " + ", ".join(
                     str(s.get("max_send_queue_mib", "-")) for s in per_round))

    for r in done:
        if r.side == "with":
            scans = timeline_text(r.attack.get("timeline", []))
            lines.append(f"  with-round {r.number}, every ~10 s since the attackers started (server-side "
                         f"ESTABLISHED / attackers answered / cuts so far): {scans}")
    growth = memory["growth_mib"]
    verdict = "-" if growth is None else ("meets" if growth < TARGET_GROWTH_MIB else "ABOVE")
    lines.append(f"server RSS (sum over {memory['processes']} processes, every {RSS_EVERY:g} s): baseline "
                 f"after the warm-up {memory['baseline_mib']} MiB, peak with attackers (to "
                 f"{rig_settle_text(done)} after them) "
                 f"{memory['peak_with_mib']} MiB, peak without {memory['peak_without_mib']} MiB, end "
                 f"{memory['end_mib']} MiB; growth {growth} MiB - {verdict} target < "
                 f"{TARGET_GROWTH_MIB:g} MiB")
    lines.append("  peak per round: " + ", ".join(f"{side} {number}: {peak} MiB"
                                                  for side, number, peak in memory["per_round_peak_mib"])
                 + "; each with-round's peak over the round before it: "
                 f"{memory['with_round_increments_mib']} MiB (the normal client's load alone grows "
                 "the RSS too)")

    if scrape_problem:
        lines.append(f"metrics: the scrape failed: {scrape_problem}")
    else:
        matching = metrics["matching"]
        lines.append(f"metrics with {'/'.join(METRIC_WORDS)} in the name (end value, change over the "
                     f"rounds): " + ("; ".join(f"{series} {v['end']:g} ({v['change']:+g})"
                                               for series, v in matching.items()) or "none exist"))
        lines.append(f"requests by status over the rounds (imgproxy_requests_total, every client): "
                     f"{metrics['requests_by_status']}")
    lines.append(f"server log: {log['records']} records {log['levels']}, {log['tracebacks']} tracebacks; "
                 f"access log by client: statuses {log['access_statuses_by_client']}, aborted= "
                 f"{log['access_aborted_by_client'] or '-'}")
    for message, count in [*log["top_warnings_errors"], *log["exceptions"]]:
        lines.append(f"  {count:>6} x {message}")

    result = {
        "sides": sides, "p99_ratio": ratio, "p99_all_ratio": ratio_all,
        "target_p99_ratio": TARGET_P99_RATIO, "target_errors": TARGET_ERRORS,
        "meets_errors": errors_ok, "meets_p99": ratio_ok,
        "rounds": [{"side": r.side, "round": r.number, **outcome_stats(r.outcomes, r.end - r.start),
                    "cpu_pct_of_one_core": r.cpu, "recovery_s": r.recovery_s,
                    "attackers": {k: v for k, v in r.attack.items() if k != "timeline"} if r.attack else None,
                    "server_sockets": server_sockets(r) if r.side == "with" else None} for r in done],
        "timelines": [r.attack.get("timeline", []) for r in done if r.side == "with"],
        "warmup": {"requests": len(warmup), "errors": warm_errors},
        "attackers": attackers, "memory": memory, "metrics": metrics,
        "metrics_scrape": scrape_problem or "ok", "server_log": log,
    }
    return "\n".join(lines), result


def part_b_report(b: dict[str, Any]) -> str:
    ratio = b["growth_over_predicted"]
    return "\n".join([
        f"{b['requests']} requests at once, w={b['widths']} (each a full decode), fmt=jpeg; "
        f"transform.workers {b['workers']}, queue_size {b['queue_size']}, max_source_bytes "
        f"{b['max_source_bytes'] / MIB:g} MiB, variant cache off",
        f"answers: {b['statuses']} in {b['seconds']:.1f} s (200s: median {b['ok_seconds_median']} s, "
        f"last {b['ok_seconds_max']} s)",
        f"server RSS (sum over {b['processes']} processes, every {BURST_RSS_EVERY * 1000:.0f} ms): before "
        f"{b['rss_before_mib']} MiB, peak {b['rss_peak_mib']} MiB, after {b['rss_after_mib']} MiB; growth "
        f"{b['growth_mib']} MiB (sum of per-process VmHWM {b['hwm_sum_mib']} MiB: "
        f"+{b['hwm_growth_mib']} MiB, an upper bound)",
        f"predicted worst case predicted_peak_bytes(workers={b['workers']}, queue_size={b['queue_size']}, "
        f"max_source_bytes={b['max_source_bytes'] / MIB:g} MiB, "
        f"max_source_pixels={b['max_source_pixels']:,}) "
        f"= {b['predicted_mib']} MiB: measured growth is {ratio:.2f} of it - "
        f"{'within' if ratio <= 1 else 'ABOVE'} the prediction",
        f"the same formula with this source ({b['source_bytes'] / MIB:.1f} MiB, {b['source_pixels']:,} px) "
        f"in place of the limits: {b['predicted_this_source_mib']} MiB; measured/that "
        f"{b['growth_over_predicted_this_source']:.2f}",
    ])


# --- main --------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a smoke run: 1 round a side, fewer requests and attackers "
        "(options given explicitly still apply)")
    add("--rounds", type=int, help=f"rounds of each side, alternating ({DEFAULTS['rounds']}; quick 1)")
    add("--requests", type=int, help=f"normal-client requests per round, at least ({DEFAULTS['requests']})")
    add("--seconds", type=float, help=f"seconds per round, at least ({DEFAULTS['seconds']:g})")
    add("--max-seconds", type=float, help=f"seconds per round, at most ({DEFAULTS['max_seconds']:g})")
    add("--warmup", type=float, help=f"normal-client seconds before the rounds ({DEFAULTS['warmup']:g})")
    add("--ramp", type=float, help=f"seconds the attackers run before a with-round is measured "
        f"({DEFAULTS['ramp']:g})")
    add("--drain", type=float, help=f"seconds requests still running at a round's end may take "
        f"({DEFAULTS['drain']:g})")
    add("--settle", type=float, help=f"seconds after an attack's recovery before the next round; its "
        f"memory counts as the attack's ({DEFAULTS['settle']:g})")
    add("--concurrency", type=int, default=4, help="the normal client's connections (4)")
    add("--timeout", type=float, default=30.0, help="the normal client's timeout per request, s (30)")
    add("--slow-readers", type=int, help=f"slow-reading attackers ({DEFAULTS['slow_readers']})")
    add("--slow-rates", default="0,1,100",
        help="bytes a second each slow reader reads, cycled over them; 0: never reads (0,1,100)")
    add("--idle", type=int, help=f"idle keep-alive attackers ({DEFAULTS['idle']})")
    add("--slowloris", type=int, help=f"slowloris attackers ({DEFAULTS['slowloris']})")
    add("--slowloris-every", type=float, default=2.0, help="seconds between a slowloris's bytes (2)")
    add("--rcvbuf", type=int, default=4096, help="the attackers' SO_RCVBUF, bytes (4096)")
    add("--attacker-address", default="127.0.0.2", help="the attackers' source address (127.0.0.2)")
    add("--scan-every", type=float, default=2.0,
        help="seconds between the attackers' /proc/net/tcp scans (2)")
    add("--workers", type=int, default=1, help="server.workers of both proxies (1)")
    add("--server", action="append", default=[], metavar="KEY=VALUE",
        help="a [server] line for part (a)'s proxy, as TOML (repeatable): --server 'send_timeout=\"10s\"'")
    add("--transform-workers", type=int, default=2, help="transform.workers of both proxies (2)")
    add("--variant-cache-mib", type=float, default=1.0,
        help="part (a)'s cache.variant_bytes, MiB (1: full after the warm-up, so misses do not grow the RSS)")
    add("--queue-size", type=int, default=32, help="part (b)'s transform.queue_size (32)")
    add("--max-source-mib", type=int, default=64, help="part (b)'s transform.max_source_bytes, MiB (64)")
    add("--transform-requests", type=int,
        help=f"part (b)'s concurrent transform misses ({DEFAULTS['transform_requests']})")
    add("--big", help=f"the big noise JPEG, WxH ({DEFAULTS['big']}; quick {QUICK['big']})")
    add("--skip-attack", action="store_true", help="skip part (a)")
    add("--skip-transform", action="store_true", help="skip part (b)")
    add("--keep-logs", type=Path, metavar="DIR", help="copy the servers' and moto's logs and configs to DIR")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    try:
        args.slow_rates = tuple(int(r) for r in args.slow_rates.split(","))
        width, height = (int(v) for v in args.big.lower().split("x"))
        args.big_size = (width, height)
        socket.inet_aton(args.attacker_address)
    except (ValueError, OSError):
        parser.error("--slow-rates: integers with commas; --big: WxH; --attacker-address: an IPv4 address")
    if any("=" not in line for line in args.server):
        parser.error("--server: KEY=VALUE")
    if not (1 <= args.rounds <= 20 and 0 <= args.requests <= 10**6 and 0 < args.seconds <= args.max_seconds
            <= 3600 and 0 < args.warmup <= 600 and 0 <= args.ramp <= 600 and 0 <= args.drain <= 600
            and 0 <= args.settle <= 600
            and 1 <= args.concurrency <= 256 and 1 <= args.timeout <= 600 and 0 <= args.slow_readers <= 5000
            and all(0 <= r <= 10**6 for r in args.slow_rates) and args.slow_rates
            and 0 <= args.idle <= 5000 and 0 <= args.slowloris <= 5000 and 0.1 <= args.slowloris_every <= 60
            and 256 <= args.rcvbuf <= 1 << 24 and 0.2 <= args.scan_every <= 60 and 1 <= args.workers <= 16
            and 1 <= args.transform_workers <= 64 and 0 <= args.queue_size <= 10_000
            and 0.0625 <= args.variant_cache_mib <= 4096
            and 1 <= args.max_source_mib <= 1024 and 1 <= args.transform_requests <= 2000
            and 16 <= width <= 20_000 and 16 <= height <= 20_000):
        parser.error("an option is out of range")
    return args


def http_get(path_qs: str, port: int) -> bytes:
    return (f"GET {path_qs} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: imgproxy-bench-hostile\r\n"
            "Accept: */*\r\n\r\n").encode()


def server_limits(config_path: Path) -> dict[str, Any]:
    """The limits the config states (the code under test may not enforce them all)."""
    config = load_config(config_path)
    server, source = config.server, config.sources[SOURCE]
    return {"header_timeout_s": server.header_timeout, "send_timeout_s": server.send_timeout,
            "min_send_rate_bytes_s": server.min_send_rate, "max_connections": server.max_connections,
            "keepalive_timeout_s": server.keepalive_timeout,
            "source_max_connections": source.max_connections, "source_pool_timeout_s": source.pool_timeout}


def attack_part(args: argparse.Namespace, workdir: Path, endpoint: str, signing_key: str, moto_pid: int,
                original: bytes, big_key: str) -> tuple[str, dict[str, Any]]:
    # A small variant cache: full by the end of the warm-up, so that the normal client's misses do
    # not grow the RSS over the rounds (the hits' three variants stay in it: they are hit all along).
    extra = "\n".join(["", "[delivery]", 'mode = "stream"', "", "[transform]",
                       f"workers = {args.transform_workers}", "", "[cache]",
                       f"variant_bytes = {round(args.variant_cache_mib * MIB)}", ""])
    metrics_port = free_port()
    with ExitStack() as stack:
        proc, base_url = stack.enter_context(proxy(workdir, endpoint, signing_key, name="hostile",
                                                   extra_toml=extra, workers=args.workers,
                                                   metrics_port=metrics_port, server=args.server))
        port = int(base_url.rpartition(":")[2])
        limits = server_limits(workdir / "hostile.toml")
        signer = UrlSigner(signing_key, "bench", base_url)
        client = NormalClient(signer, signer.sign(SOURCE, ORIGINAL_KEY, ttl=TTL), len(original),
                              [signer.sign(SOURCE, ORIGINAL_KEY, ttl=TTL, params={"w": str(w), "fmt": "jpeg"})
                               for w in HIT_WIDTHS])
        slow_path = URL(signer.sign(SOURCE, big_key, ttl=TTL), encoded=True).raw_path_qs
        rates = args.slow_rates
        plan = AttackPlan(
            port=port, source=args.attacker_address, slow_request=http_get(slow_path, port),
            idle_request=http_get("/healthz", port),
            slow_rates=tuple(rates[i % len(rates)] for i in range(args.slow_readers)), idle=args.idle,
            slowloris=args.slowloris, slowloris_every=args.slowloris_every, rcvbuf=args.rcvbuf,
            ramp=args.ramp, scan_every=args.scan_every)
        attackers = stack.enter_context(attacker_process())
        sampler = stack.enter_context(TreeSampler(proc.pid, interval=RSS_EVERY))
        root = proc.pid

        def groups() -> dict[str, Any]:
            tree = descendants(root)
            # The serving processes: the server itself, or with --workers > 1 the supervisor and
            # its HTTP workers; the rest of the tree is image pools (forkserver, renderers, tracker).
            serving = [root, *(pid for pid in tree if parent_of(pid) == root)] if args.workers > 1 else [root]
            return {"proxy": serving, "pools": [pid for pid in tree if pid not in serving], "moto": moto_pid,
                    "bench": os.getpid(), "attackers": attackers.pid}

        mix = Counter(slow_kind(r) for r in plan.slow_rates)
        print(f"(a) the normal client ({args.concurrency} keep-alive connections from {HOST}, timeout "
              f"{args.timeout:g} s): originals of {len(original):,} bytes (50 %), thumbnail hits w="
              f"{'/'.join(map(str, HIT_WIDTHS))} (40 %), misses with a fresh w/q (10 %); rounds of >= "
              f"{args.requests} requests and >= {args.seconds:g} s (at most {args.max_seconds:g} s + "
              f"{args.drain:g} s drain), {args.rounds} without and {args.rounds} with attackers, alternating")
        print(f"    attackers from {args.attacker_address} per with-round, started {args.ramp:g} s before it "
              f"is measured: {args.slow_readers} slow readers of the big object (SO_RCVBUF {args.rcvbuf}: "
              f"{', '.join(f'{n} {kind}' for kind, n in mix.items())}), {args.idle} idle keep-alive, "
              f"{args.slowloris} slowloris (a byte every {args.slowloris_every:g} s)")
        print(f"    server limits as configured (the code may not enforce them): {limits}", flush=True)
        rig = Rig(args, client, plan, attackers, groups)
        metrics_url = f"http://{HOST}:{metrics_port}/metrics"

        async def measure() -> tuple[list[Round], list[Outcome], float, dict[str, float],
                                     dict[str, float], str]:
            done, warmup, warm_end, before = await rounds(rig, metrics_url)
            after, problem = await scrape(metrics_url)
            return done, warmup, warm_end, before, after, problem

        done, warmup, warm_end, before, after, problem = asyncio.run(measure())
        memory = memory_report(done, sampler, warm_end)
    log = log_report(workdir / "hostile.log")
    text, result = part_a_report(done, warmup, memory, metrics_report(before, after), log, problem)
    result["limits"] = limits
    result["server_options"] = list(args.server)
    return text, result


ARRANGEMENT: Final = (
    "processes: moto | imgproxy serve (server.workers {workers}; its image pool: {pool} render "
    "processes) | bench = the normal client (this process) | attackers = one asyncio process, raw "
    "sockets; all on {cpus} CPUs shared with anything else running ('others' column)."
)


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    signing_key = secrets.token_urlsafe(32)
    result: dict[str, Any] = {
        "bench": "imgproxy-hostile", "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "code": code_state(),
        "python": platform.python_version(), "aiohttp": aiohttp.__version__,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    width, height = args.big_size
    big_key = BIG_KEY.format(width, height)
    with ExitStack() as stack:
        moto_proc, endpoint = stack.enter_context(moto(workdir))
        if args.keep_logs is not None:
            stack.callback(keep_logs, workdir, args.keep_logs)
        note(f"generating a {ORIGINAL_SIZE[0]}x{ORIGINAL_SIZE[1]} photo-like JPEG and a {width}x{height} "
             "noise JPEG")
        original = photo_like(*ORIGINAL_SIZE, seed=500)
        big = noisy_jpeg(width, height)
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=ORIGINAL_KEY, Body=original, ContentType="image/jpeg")
        s3.put_object(Bucket=BUCKET, Key=big_key, Body=big, ContentType="image/jpeg")
        result["objects"] = {"original_bytes": len(original), "big_bytes": len(big),
                             "big_size": [width, height]}
        print(ARRANGEMENT.format(workers=args.workers, pool=args.transform_workers, cpus=os.cpu_count()))
        print(f"objects: original {len(original):,}-byte JPEG ({ORIGINAL_SIZE[0]}x{ORIGINAL_SIZE[1]}); big "
              f"{len(big):,}-byte noise JPEG ({width}x{height}, {len(big) / MIB:.1f} MiB: the slow readers' "
              f"object and part (b)'s source); imgproxy at {result['code']}; load avg at start "
              f"{result['loadavg_start'][0]:.2f}; {result['started']}", flush=True)
        if not args.skip_attack:
            text, result["a"] = attack_part(args, workdir, endpoint, signing_key, moto_proc.pid, original,
                                            big_key)
            print(text, flush=True)
        if not args.skip_transform:
            note(f"part (b): {args.transform_requests} concurrent transform misses")
            result["b"] = transform_part(args, workdir, endpoint, signing_key, big, big_key, (width, height))
            print("(b) concurrent transform misses of the big JPEG")
            print(part_b_report(result["b"]), flush=True)
    result["loadavg_end"] = os.getloadavg()
    return result


def failures(result: dict[str, Any]) -> list[str]:
    """What failed to run (a missed target is not here)."""
    found = []
    a = result.get("a")
    if a is not None:
        for number, r in enumerate(x for x in a["rounds"] if x["side"] == "with"):
            attackers = r["attackers"] or {}
            if not sum(k["connections"] for k in attackers.get("kinds", {}).values()):
                found.append(f"with-round {number + 1}: no attacker could connect")
        if not a["sides"]["without"]["ok"]:
            found.append("the normal client had no right answer without attackers")
    b = result.get("b")
    if b is not None and not b["samples"]:
        found.append("part (b): no memory sample during the burst")
    return found


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, failures, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
