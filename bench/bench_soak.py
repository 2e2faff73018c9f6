#!/usr/bin/env python3
"""Benchmark: a soak run: a request mix for minutes, S3 restarted in the middle, memory flat.

Not a test. It measures and prints; it exits non-zero only when something *failed*: a process
would not start or died, or a request was answered wrongly outside the S3 outage (any error
other than the expected 502/503/504 or dropped connection during the restart window). Memory
growth is a target, reported, not a failure.

Processes on 127.0.0.1, each one's CPU visible:
  moto      the S3 server (its own Python process); killed and replaced once, mid-run
  relay     a TCP relay owned by this script (its own process): the proxy's ``endpoint_url``
            points at it, and it forwards each connection to whichever moto is current
  proxy     ``imgproxy serve`` as deployed: the supervisor, --workers HTTP worker processes
            forked from it, each with its image pool (forkserver + render processes), and the
            Prometheus listener on (scraped every 30 s, as a Prometheus would)
  bench     this process: generates and seeds the images, renders the expected thumbnails, is
            the load generator (--concurrency clients), checks every answer, samples memory

Each client loops: it picks a kind of request at random (fixed seed per client, weights in
MIX), sends it on its keep-alive connection, checks the answer, and goes on; after an error it
waits 0.1 s (as a client would before retrying), so an outage is not a flood of errors. The
clients connect in one burst (``--stagger`` s apart, default 0): on one listening socket shared
by the workers, the first to wake took the whole burst and keep-alive kept it there, which is
why each worker now has its own SO_REUSEPORT socket; the report shows how the connections and
the CPU split between the workers.
Kinds:
  original     GET of an object from the streaming source: 200, every byte, its ETag
  thumbnail    ``w`` in WIDTHS and ``fmt=webp``, or ``fmt=auto`` with a WebP-accepting Accept:
               200, ``image/webp``, the variant ETag, and bytes equal to what the proxy's own
               ``steps.render`` gives in this process. The variant cache holds about
               CACHE_FRACTION of all variants, so answers are a mix of hits and misses
  range        one ``Range`` (``a-b``, ``a-``, ``-n``) of an original: 206, Content-Range, bytes
  conditional  ``If-None-Match`` with the right ETag of an original or a thumbnail: 304, no body
  redirect     GET through a second source in ``mode = "redirect"``: 302, Location a presigned
               URL for that object at the relay; every FOLLOW_EVERY-th redirect per client is
               followed (kind ``s3-follow``: the presigned GET through the relay to moto,
               200 and every byte)

The restart (at --restart-at of the measured run): the relay goes down (open connections are
aborted, new ones closed at once), moto is killed (SIGKILL), a new moto is started and seeded
with the same bytes (the ETags are checked to be identical), then the relay forwards to it. The
proxy thus sees S3 unreachable, never an empty one. The window is [relay down, relay re-pointed];
an error is *expected* if it is a 502/503/504 or a dropped connection and the request overlapped
the window or the GRACE seconds after it; anything else is *unexpected*.

Memory: VmRSS (and PSS) summed over the server's process tree, sampled every second. ``start``
is the first sample after the warm-up, ``middle`` the last before the restart, ``end`` the last
before the clients stop; growth = end vs start (target < 10 %).

    .venv/bin/python bench/bench_soak.py [--seconds 300] [--concurrency 16] [--restart-at 0.5]
        [--workers 2] [--warmup 20] [--objects 24] [--stagger 0] [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import hdrs
from bench_transform import photo_like
from harness import (
    BUCKET,
    CLK_TCK,
    HOST,
    MIB,
    ROLES,
    SOURCE,
    BenchError,
    Check,
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
    proxy_toml,
    run_main,
    s3_client,
    session_for,
    source_toml,
    ticks_of,
)
from relay import RelayProcess, relay_process
from yarl import URL

from imgproxy.auth.signing import UrlSigner
from imgproxy.cache import ENTRY_OVERHEAD, VariantKey
from imgproxy.config import load_config
from imgproxy.transform.jobs import available_outputs
from imgproxy.transform.negotiate import choose_target
from imgproxy.transform.policy import TransformPolicy
from imgproxy.transform.steps import render

REDIRECT_SOURCE: Final = "redirect"
PID_IN_SS: Final = re.compile(r"pid=(\d+)")
MIX: Final = {"original": 30, "thumbnail": 30, "range": 15, "conditional": 15, "redirect": 10}
KINDS: Final = (*MIX, "s3-follow")
S3_BACKED: Final = frozenset({"original", "range", "s3-follow"})  # always reach S3 (and MISSes)
SIZES: Final = ((640, 480), (1280, 960), (1920, 1440))  # object i has SIZES[i % 3]
WIDTHS: Final = (160, 320, 640)
ACCEPT: Final = "image/webp,image/apng,image/*,*/*;q=0.8"  # a browser's, without AVIF
CACHE_FRACTION: Final = 0.4  # of all variants' bytes, per HTTP worker
FOLLOW_EVERY: Final = 4
GRACE: Final = 2.0  # seconds after the relay is re-pointed that errors are still expected
EXPECTED_STATUSES: Final = frozenset({502, 503, 504})
ERROR_PAUSE: Final = 0.1
REPORT_EVERY: Final = 30.0
TARGET_GROWTH_PCT: Final = 10.0
RANGE_MAX: Final = 64 * 1024  # bytes of a range request, at most
SEED: Final = 20_260_301
TTL: Final = 24 * 3600  # the signed URLs outlive any run (harness max_ttl is 1d)


# --- the objects and the answers expected for them ---------------------------------------------

@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    data: bytes
    etag: str = ""  # as S3 sends it (quoted), after seeding


def generate_objects(count: int) -> list[StoredObject]:
    """Photo-like JPEGs in three sizes (~80, ~270, ~500 KB), each its own image (seed)."""
    return [StoredObject(f"soak/photo-{i:03d}.jpg", photo_like(*SIZES[i % len(SIZES)], seed=i))
            for i in range(count)]


def seed_bucket(endpoint: str, objects: Sequence[StoredObject]) -> list[StoredObject]:
    """Create the bucket and put every object; the objects with the ETags S3 gave them."""
    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    seeded = []
    for obj in objects:
        s3.put_object(Bucket=BUCKET, Key=obj.key, Body=obj.data, ContentType="image/jpeg")
        head = s3.head_object(Bucket=BUCKET, Key=obj.key)
        if head["ContentLength"] != len(obj.data):
            raise BenchError(f"moto holds {head['ContentLength']} bytes of {obj.key}, not {len(obj.data)}")
        seeded.append(StoredObject(obj.key, obj.data, head["ETag"]))
    return seeded


@dataclass(frozen=True, slots=True)
class Request:
    kind: str
    url: URL
    headers: Mapping[str, str]
    check: Check
    obj: StoredObject


def expect_original(obj: StoredObject) -> Check:
    def check(response: aiohttp.ClientResponse, body: bytes) -> str:
        if response.status != 200:
            return f"HTTP {response.status}"
        if len(body) != len(obj.data):
            return f"{len(body)} bytes instead of {len(obj.data)}"
        if body != obj.data:
            return "bytes differ from the object's"
        etag = response.headers.get(hdrs.ETAG)
        return "" if etag == obj.etag else f"ETag {etag!r}, expected {obj.etag!r}"
    return check


def expect_thumbnail(body_expected: bytes, media_type: str, etag: str) -> Check:
    def check(response: aiohttp.ClientResponse, body: bytes) -> str:
        if response.status != 200:
            return f"HTTP {response.status}"
        if response.content_type != media_type:
            return f"Content-Type {response.content_type}, expected {media_type}"
        if response.headers.get(hdrs.ETAG) != etag:
            return f"ETag {response.headers.get(hdrs.ETAG)!r}, expected {etag!r}"
        return "" if body == body_expected else f"{len(body)}-byte thumbnail differs from the render"
    return check


def expect_not_modified(etag: str) -> Check:
    def check(response: aiohttp.ClientResponse, body: bytes) -> str:
        if response.status != 304:
            return f"HTTP {response.status}, expected 304"
        if body:
            return f"304 with a {len(body)}-byte body"
        got = response.headers.get(hdrs.ETAG)
        return "" if got == etag else f"304 with ETag {got!r}, expected {etag!r}"
    return check


def expect_range(obj: StoredObject, first: int, last: int) -> Check:
    content_range = f"bytes {first}-{last}/{len(obj.data)}"

    def check(response: aiohttp.ClientResponse, body: bytes) -> str:
        if response.status != 206:
            return f"HTTP {response.status}, expected 206"
        got = response.headers.get(hdrs.CONTENT_RANGE)
        if got != content_range:
            return f"Content-Range {got!r}, expected {content_range!r}"
        return "" if body == obj.data[first:last + 1] else f"range {first}-{last}: bytes differ"
    return check


def expect_redirect(prefix: str) -> Check:
    def check(response: aiohttp.ClientResponse, body: bytes) -> str:
        if response.status != 302:
            return f"HTTP {response.status}, expected 302"
        location = response.headers.get(hdrs.LOCATION, "")
        if not location.startswith(prefix) or "X-Amz-Signature=" not in location:
            return f"Location {location[:80]!r}..., expected a presigned {prefix}..."
        return ""
    return check


@dataclass
class Catalog:
    """Every request the mix can make, signed and with its check, built once."""

    originals: list[Request] = field(default_factory=list)
    thumbnails: list[Request] = field(default_factory=list)
    conditionals: list[Request] = field(default_factory=list)
    redirects: list[Request] = field(default_factory=list)

    def pick(self, kind: str, rng: random.Random) -> Request:
        if kind == "original":
            return rng.choice(self.originals)
        if kind == "thumbnail":
            return rng.choice(self.thumbnails)
        if kind == "conditional":
            return rng.choice(self.conditionals)
        if kind == "redirect":
            return rng.choice(self.redirects)
        if kind == "range":
            return range_request(rng.choice(self.originals), rng)
        raise ValueError(kind)


def range_request(original: Request, rng: random.Random) -> Request:
    """One of the three single-range forms, at most 64 KiB (every object is larger)."""
    size = len(original.obj.data)
    form = rng.randrange(3)
    if form == 0:
        first = rng.randrange(size)
        last = min(size - 1, first + rng.randrange(RANGE_MAX))
        header = f"bytes={first}-{last}"
    elif form == 1:
        count = rng.randrange(1, RANGE_MAX)
        first, last, header = size - count, size - 1, f"bytes=-{count}"
    else:
        first, last = rng.randrange(size - RANGE_MAX, size), size - 1
        header = f"bytes={first}-"
    return Request("range", original.url, {hdrs.RANGE: header}, expect_range(original.obj, first, last),
                   original.obj)


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """What the proxy must answer for one object, width and ``fmt``."""

    obj: StoredObject
    params: Mapping[str, str]
    body: bytes
    media_type: str
    etag: str


def render_thumbnails(objects: Sequence[StoredObject], config_path: Path) -> list[Thumbnail]:
    """Every variant of the mix, rendered here by the proxy's own code with the server's
    transform settings (``config_path``: the same [transform] section, i.e. the defaults)."""
    config = load_config(config_path)
    policy = TransformPolicy.from_config(config.transform, available_outputs())
    thumbnails = []
    for obj in objects:
        for width in WIDTHS:
            for fmt in ("webp", "auto"):
                params = {"w": str(width), "fmt": fmt}
                spec = policy.parse(params)
                if spec is None:
                    raise BenchError(f"{params} is not a transform")
                target = choose_target(spec, ACCEPT, policy.auto_formats)
                if target is None:
                    raise BenchError(f"{params} with Accept {ACCEPT!r}: no concrete format (no WebP?)")
                rendered = render(obj.data, spec, target, policy.settings)
                thumbnails.append(Thumbnail(obj, params, rendered.body, rendered.media_type,
                                            VariantKey(SOURCE, obj.key, obj.etag, spec.canonical,
                                                       target.value).etag))
    return thumbnails


def build_catalog(objects: Sequence[StoredObject], thumbnails: Sequence[Thumbnail], signer: UrlSigner,
                  relay_endpoint: str) -> Catalog:
    """Sign every URL once; conditionals ask for originals twice as often as for thumbnails."""
    catalog = Catalog()
    for obj in objects:
        url = URL(signer.sign(SOURCE, obj.key, ttl=TTL), encoded=True)
        catalog.originals.append(Request("original", url, {}, expect_original(obj), obj))
        catalog.conditionals.append(
            Request("conditional", url, {hdrs.IF_NONE_MATCH: obj.etag}, expect_not_modified(obj.etag), obj))
        catalog.redirects.append(Request(
            "redirect", URL(signer.sign(REDIRECT_SOURCE, obj.key, ttl=TTL), encoded=True), {},
            expect_redirect(f"{relay_endpoint}/{BUCKET}/{obj.key}?"), obj))
    for thumb in thumbnails:
        url = URL(signer.sign(SOURCE, thumb.obj.key, ttl=TTL, params=thumb.params), encoded=True)
        headers: dict[str, str] = {hdrs.ACCEPT: ACCEPT}
        check = expect_thumbnail(thumb.body, thumb.media_type, thumb.etag)
        catalog.thumbnails.append(Request("thumbnail", url, headers, check, thumb.obj))
        if thumb.params["w"] == str(WIDTHS[0]):  # 2 of the 6 variants per object: half as many
            conditional = {**headers, hdrs.IF_NONE_MATCH: thumb.etag}
            catalog.conditionals.append(Request("conditional", url, conditional,
                                                expect_not_modified(thumb.etag), thumb.obj))
    return catalog


# --- S3 behind the relay: restartable -------------------------------------------------------

@dataclass
class Window:
    """The S3 outage, in time.monotonic() seconds."""

    start: float  # the relay went down (just before the kill)
    killed: float
    moto_up: float
    seeded: float
    end: float  # the relay forwards to the new moto
    wall_offset: float = field(default_factory=lambda: time.time() - time.monotonic())

    def overlaps(self, started: float, ended: float) -> bool:
        return started <= self.end + GRACE and ended >= self.start


class Storage:
    """moto behind the relay, restartable once the load runs."""

    def __init__(self, workdir: Path, objects: Sequence[StoredObject]) -> None:
        self.workdir = workdir
        self.objects = list(objects)
        self.restarts = 0
        self.moto_pid = 0
        self.relay_pid = 0
        self.relay_endpoint = ""
        self._relay: RelayProcess | None = None
        self._moto_stack = ExitStack()
        self._moto_proc: subprocess.Popen[bytes] | None = None
        self.moto_up = 0.0  # when the current moto answered (before it was seeded)

    def _point(self, port: int | None) -> None:
        assert self._relay is not None
        self._relay.point(port)

    def _start_moto(self) -> int:
        """A new moto, seeded; its port. The objects' ETags must be the first moto's."""
        name = "moto" if not self.restarts else f"moto-{self.restarts + 1}"
        proc, endpoint = self._moto_stack.enter_context(moto(self.workdir, name))
        self._moto_proc, self.moto_pid, self.moto_up = proc, proc.pid, time.monotonic()
        seeded = seed_bucket(endpoint, self.objects)
        if self.restarts and [o.etag for o in seeded] != [o.etag for o in self.objects]:
            raise BenchError("the new moto gave the same bytes other ETags")
        self.objects = seeded
        return int(endpoint.rpartition(":")[2])

    @contextmanager
    def running(self) -> Iterator[Storage]:
        with relay_process() as relay:
            self._relay, self.relay_pid, self.relay_endpoint = relay, relay.pid, relay.endpoint
            try:
                self._point(self._start_moto())
                yield self
            finally:
                self._moto_stack.close()

    def restart(self) -> Window:
        """Blocking (run it in a thread): S3 unreachable, moto replaced and re-seeded, reachable."""
        start = time.monotonic()
        self._point(None)
        assert self._moto_proc is not None
        self._moto_proc.kill()
        self._moto_proc.wait(timeout=10)
        killed = time.monotonic()
        self._moto_stack.close()
        self._moto_stack = ExitStack()
        self.restarts += 1
        try:
            port = self._start_moto()
        except Exception as exc:
            raise BenchError(f"the restarted moto: {exc}") from exc
        seeded = time.monotonic()
        self._point(port)
        return Window(start=start, killed=killed, moto_up=self.moto_up, seeded=seeded, end=time.monotonic())


# --- the HTTP workers: their client connections and CPU ------------------------------------------

def connections_by_pid(port: int) -> Counter[int]:
    """Established client connections on the server's port, per process that accepted them."""
    try:
        listing = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return Counter()
    return Counter(int(pid) for line in listing.splitlines() for pid in set(PID_IN_SS.findall(line)))


def worker_of(pid: int, root: int) -> int:
    """The HTTP worker (a child of ``root``) that ``pid`` descends from; 0 if none."""
    for _ in range(16):
        parent = parent_of(pid)
        if parent == root:
            return pid
        if parent <= 1:
            return 0
        pid = parent
    return 0


def worker_split(root: int, before: Mapping[int, int], after: Mapping[int, int], seconds: float,
                 connections: tuple[Mapping[int, int], Mapping[int, int]]) -> list[dict[str, Any]]:
    """Per HTTP worker: its client connections, and the CPU of its main process and of its image
    pool over the measured run (% of one core): keep-alive clients stay with the worker that
    accepted them, and each worker renders only in its own pool."""
    split: dict[int, dict[str, Any]] = {}
    for pid, ticks in after.items():
        worker = worker_of(pid, root)
        if not worker or pid not in before:
            continue
        entry = split.setdefault(worker, {
            "pid": worker, "connections_start": connections[0].get(worker, 0),
            "connections_end": connections[1].get(worker, 0), "main_cpu_pct": 0.0, "pool_cpu_pct": 0.0})
        pct = 100.0 * (ticks - before[pid]) / CLK_TCK / seconds
        entry["main_cpu_pct" if pid == worker else "pool_cpu_pct"] += pct
    return [{k: round(v, 1) if isinstance(v, float) else v for k, v in entry.items()}
            for _, entry in sorted(split.items())]


# --- load ----------------------------------------------------------------------------------------

@dataclass(slots=True)
class Outcome:
    kind: str
    started: float
    ended: float
    status: int  # 0: no complete answer (connection error, timeout, truncated body)
    problem: str  # "" when the answer was right
    cache: str = ""  # X-Cache of a thumbnail


@dataclass
class Interval:
    start: float
    end: float
    cpu: dict[str, float]
    sample: Sample
    scrape: str  # "" if the metrics scrape worked, else what went wrong


@dataclass
class Run:
    load_start: float = 0.0
    measure_start: float = 0.0
    end: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    intervals: list[Interval] = field(default_factory=list)
    window: Window | None = None
    meter: CpuMeter | None = None  # the current interval's
    workers: list[dict[str, Any]] = field(default_factory=list)  # per HTTP worker, measured run


async def perform(session: aiohttp.ClientSession, request: Request) -> tuple[Outcome, str]:
    """One request: (what happened, the Location header if any)."""
    started = time.monotonic()
    status, problem, cache, location = 0, "", "", ""
    try:
        async with session.get(request.url, headers=request.headers, allow_redirects=False) as response:
            body = await response.read()
            problem = request.check(response, body)
            status = response.status
            cache = response.headers.get("X-Cache", "")
            location = response.headers.get(hdrs.LOCATION, "")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        status, problem = 0, f"{exc.__class__.__name__}: {exc}"[:200]
    return Outcome(request.kind, started, time.monotonic(), status, problem, cache), location


async def client(number: int, session: aiohttp.ClientSession, catalog: Catalog, end: float,
                 run: Run, stagger: float) -> None:
    rng = random.Random(SEED * 1000 + number)
    kinds, weights = list(MIX), list(MIX.values())
    redirects = 0
    await asyncio.sleep(number * stagger)  # clients connect one after another, not in one burst
    while time.monotonic() < end:
        request = catalog.pick(rng.choices(kinds, weights)[0], rng)
        outcome, location = await perform(session, request)
        run.outcomes.append(outcome)
        if request.kind == "redirect" and not outcome.problem:
            redirects += 1
            if redirects % FOLLOW_EVERY == 0:
                follow = Request("s3-follow", URL(location, encoded=True), {}, expect_original(request.obj),
                                 request.obj)
                outcome, _ = await perform(session, follow)
                run.outcomes.append(outcome)
        if outcome.problem:
            await asyncio.sleep(ERROR_PAUSE)


async def scrape(session: aiohttp.ClientSession, metrics_url: str) -> str:
    try:
        async with session.get(metrics_url) as response:
            body = await response.read()
            if response.status != 200 or b"imgproxy_" not in body:
                return f"HTTP {response.status}, {len(body)} bytes"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"{exc.__class__.__name__}: {exc}"
    return ""


async def reporter(run: Run, storage: Storage, sampler: TreeSampler, metrics_url: str, port: int) -> None:
    """Every REPORT_EVERY s of the measured run: CPU, memory, a metrics scrape, a progress line;
    at its start and end, how the clients and the CPU split between the HTTP workers."""
    await asyncio.sleep(max(0.0, run.measure_start - time.monotonic()))
    before = ticks_of([sampler.root, *descendants(sampler.root)])
    connections = connections_by_pid(port)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        begin, index = time.monotonic(), len(run.outcomes)
        while begin < run.end - 0.5:
            tree = sampler.latest().processes
            pools = [pid for pid, (role, _, _) in tree.items() if role == "image pools"]
            meter = CpuMeter({"proxy": [pid for pid in tree if pid not in pools], "pools": pools,
                              "moto": storage.moto_pid, "relay": storage.relay_pid, "bench": os.getpid()})
            meter.start()
            run.meter = meter
            await asyncio.sleep(max(0.0, min(begin + REPORT_EVERY, run.end) - time.monotonic()))
            cpu = meter.stop()
            finished = time.monotonic()
            problem = await scrape(session, metrics_url)
            interval = Interval(begin, finished, cpu, sampler.latest(), problem)
            run.intervals.append(interval)
            done = run.outcomes[index:]
            index += len(done)
            failed = sum(1 for o in done if o.problem)
            note(f"+{finished - run.measure_start:5.0f} s: {len(done) - failed} ok, {failed} errors, "
                 f"RSS {interval.sample.rss_kib / 1024:.1f} MiB, CPU proxy {cpu.get('proxy', 0):.0f} %, "
                 f"pools {cpu.get('pools', 0):.0f} %, "
                 f"others {cpu.get('others', 0):.0f} %{', metrics scrape: ' + problem if problem else ''}")
            begin = finished
    run.workers = worker_split(sampler.root, before, ticks_of(before), time.monotonic() - run.measure_start,
                               (connections, connections_by_pid(port)))


async def restart_at(moment: float, storage: Storage, run: Run) -> Window:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))
    note("restarting S3: relay down, moto killed")
    if run.meter is not None:
        run.meter.read()  # the old moto's CPU up to its kill
    window = await asyncio.to_thread(storage.restart)
    if run.meter is not None:
        run.meter.add("moto", storage.moto_pid)
    note(f"S3 back after {window.end - window.start:.2f} s (new moto seeded, relay re-pointed)")
    return window


async def soak(args: argparse.Namespace, catalog: Catalog, storage: Storage, sampler: TreeSampler,
               metrics_url: str, port: int) -> Run:
    run = Run()
    run.load_start = time.monotonic()
    run.measure_start = run.load_start + args.warmup
    run.end = run.measure_start + args.seconds
    async with session_for(args.concurrency) as session:
        moment = run.measure_start + args.restart_at * args.seconds
        restart = asyncio.create_task(restart_at(moment, storage, run))
        report = asyncio.create_task(reporter(run, storage, sampler, metrics_url, port))
        await asyncio.gather(*(client(i, session, catalog, run.end, run, args.stagger)
                               for i in range(args.concurrency)))
        run.window = await restart
        await report
    return run


# --- report --------------------------------------------------------------------------------------

def classify(outcome: Outcome, window: Window | None) -> str:
    """"ok", "expected" (an S3-outage answer during the window) or "unexpected"."""
    if not outcome.problem:
        return "ok"
    if (window is not None and (outcome.status in EXPECTED_STATUSES or outcome.status == 0)
            and window.overlaps(outcome.started, outcome.ended)):
        return "expected"
    return "unexpected"


def kind_stats(kind: str, outcomes: list[Outcome], window: Window | None, seconds: float) -> dict[str, Any]:
    phase = Phase(kind, 0, wall=seconds)
    verdicts: Counter[str] = Counter()
    cache: Counter[str] = Counter()
    for outcome in outcomes:
        verdict = classify(outcome, window)
        verdicts[verdict] += 1
        if verdict == "ok":
            phase.requests += 1
            phase.latencies.append(outcome.ended - outcome.started)
            if outcome.cache:
                cache[outcome.cache] += 1
    stats: dict[str, Any] = {
        "kind": kind, "requests": len(outcomes), "ok": verdicts["ok"], "rps": round(phase.rps, 1),
        "p50_ms": round(phase.percentile_ms(0.50), 1), "p99_ms": round(phase.percentile_ms(0.99), 1),
        "expected_errors": verdicts["expected"], "unexpected_errors": verdicts["unexpected"],
    }
    if kind == "thumbnail":
        hits = cache["HIT"]
        stats["x_cache"] = dict(cache)
        stats["hit_pct"] = round(100.0 * hits / sum(cache.values()), 1) if cache else 0.0
    return stats


def window_report(run: Run) -> dict[str, Any]:
    window = run.window
    if window is None:
        return {}
    base = run.measure_start
    inside = [o for o in run.outcomes if window.overlaps(o.started, o.ended)]
    expected = [o for o in inside if classify(o, window) == "expected"]
    back = [o for o in run.outcomes if not o.problem and o.started >= window.start
            and (o.kind in S3_BACKED or o.cache == "MISS")]
    first_back = min((o.ended for o in back), default=None)
    return {
        "relay_down_at_s": round(window.start - base, 2),
        "moto_killed_at_s": round(window.killed - base, 2),
        "moto_up_at_s": round(window.moto_up - base, 2),
        "seeded_at_s": round(window.seeded - base, 2),
        "relay_repointed_at_s": round(window.end - base, 2),
        "outage_s": round(window.end - window.start, 2),
        "grace_s": GRACE,
        "requests_overlapping": len(inside),
        "ok_overlapping": sum(1 for o in inside if not o.problem),
        "ok_overlapping_by_kind": dict(Counter(o.kind for o in inside if not o.problem)),
        "expected_errors": len(expected),
        "expected_by_status": {str(k): v for k, v in sorted(Counter(o.status for o in expected).items())},
        "expected_by_kind": dict(Counter(o.kind for o in expected)),
        "first_s3_success_after_repoint_s": (round(first_back - window.end, 3)
                                             if first_back is not None else None),
        "last_expected_error_after_repoint_s": (round(max(o.ended for o in expected) - window.end, 3)
                                                if expected else None),
    }


def memory_report(run: Run, sampler: TreeSampler) -> dict[str, Any]:
    start = sampler.at_or_after(run.measure_start)
    middle = sampler.before(run.window.start) if run.window else start
    end = sampler.before(run.end + 0.001)
    measured = [s for s in sampler.samples if run.measure_start <= s.at <= run.end]
    peak = max(measured, key=lambda s: s.rss_kib) if measured else end
    pids_start, pids_end = set(start.processes), set(end.processes)
    seen = {pid for s in sampler.samples if s.at >= start.at for pid in s.processes}

    def point(sample: Sample) -> dict[str, Any]:
        return {"at_s": round(sample.at - run.measure_start, 1), "rss_mib": round(sample.rss_kib / 1024, 1),
                "pss_mib": round(sample.pss_kib / 1024, 1), "by_role": sample.by_role()}

    return {
        "samples": len(sampler.samples), "start": point(start), "middle": point(middle), "end": point(end),
        "peak_rss_mib": round(peak.rss_kib / 1024, 1), "peak_at_s": round(peak.at - run.measure_start, 1),
        "growth_pct": round(100.0 * (end.rss_kib - start.rss_kib) / start.rss_kib, 2),
        "growth_middle_pct": round(100.0 * (middle.rss_kib - start.rss_kib) / start.rss_kib, 2),
        "pss_growth_pct": round(100.0 * (end.pss_kib - start.pss_kib) / start.pss_kib, 2),
        "target_growth_pct": TARGET_GROWTH_PCT,
        "processes": len(pids_start),
        "processes_gone": sorted(pids_start - pids_end), "processes_new": sorted(seen - pids_start),
    }


CPU_COLUMNS: Final = ("proxy", "pools", "moto", "relay", "bench", "others", "idle")


def timeline(run: Run) -> list[dict[str, Any]]:
    rows = []
    ends = [o.ended for o in run.outcomes]
    for interval in run.intervals:
        done = [o for o, ended in zip(run.outcomes, ends, strict=True)
                if interval.start <= ended < interval.end]
        phase = Phase("interval", 0, wall=interval.end - interval.start)
        verdicts = Counter(classify(o, run.window) for o in done)
        phase.latencies = [o.ended - o.started for o in done if not o.problem]
        phase.requests = len(phase.latencies)
        rows.append({
            "t_s": round(interval.end - run.measure_start), "rps": round(phase.rps, 1),
            "p50_ms": round(phase.percentile_ms(0.5), 1), "p99_ms": round(phase.percentile_ms(0.99), 1),
            "expected": verdicts["expected"], "unexpected": verdicts["unexpected"],
            "rss_mib": round(interval.sample.rss_kib / 1024, 1),
            "pss_mib": round(interval.sample.pss_kib / 1024, 1),
            "cpu": interval.cpu, "metrics_scrape": interval.scrape or "ok",
        })
    return rows


def report(run: Run, sampler: TreeSampler, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    measured = [o for o in run.outcomes if o.started >= run.measure_start]
    warmup = [o for o in run.outcomes if o.started < run.measure_start]
    kinds = [kind_stats(kind, [o for o in measured if o.kind == kind], run.window, args.seconds)
             for kind in KINDS]
    total = kind_stats("all", measured, run.window, args.seconds)
    head = (f"{'kind':<12}{'requests':>9}{'ok':>8}{'req/s':>7}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'expected':>9}{'unexpected':>11}")
    lines = [head, "-" * len(head)]
    for stats in [*kinds, total]:
        extra = f"   X-Cache HIT {stats['hit_pct']:.1f} %" if "hit_pct" in stats else ""
        if stats is total:
            lines.append("-" * len(head))
        lines.append(f"{stats['kind']:<12}{stats['requests']:>9}{stats['ok']:>8}{stats['rps']:>7.1f}"
                     f"{stats['p50_ms']:>8.1f}{stats['p99_ms']:>8.1f}{stats['expected_errors']:>9}"
                     f"{stats['unexpected_errors']:>11}{extra}")
    warm_unexpected = [o for o in warmup if classify(o, run.window) == "unexpected"]
    lines.append(f"warm-up ({args.warmup:g} s, not in the table): {len(warmup)} requests, "
                 f"{len(warm_unexpected)} errors")

    outage = window_report(run)
    if outage:
        lines.append(
            f"S3 restart: relay down at +{outage['relay_down_at_s']:.1f} s, moto killed +"
            f"{outage['moto_killed_at_s']:.1f} s, new moto up +{outage['moto_up_at_s']:.1f} s, seeded "
            f"+{outage['seeded_at_s']:.1f} s, relay "
            f"re-pointed +{outage['relay_repointed_at_s']:.1f} s: outage {outage['outage_s']:.2f} s; errors "
            f"expected within it and {GRACE:g} s after: {outage['expected_errors']} "
            f"(by status {outage['expected_by_status']}, 0 = connection dropped)")
        first = outage["first_s3_success_after_repoint_s"]
        last = outage["last_expected_error_after_repoint_s"]
        lines.append(
            f"  during the window {outage['ok_overlapping']} answers were right anyway (caches: "
            f"{outage['ok_overlapping_by_kind']}); first S3-backed success "
            f"{'never' if first is None else f'{first:+.2f} s'} after re-pointing; last expected "
            f"error ended {'-' if last is None else f'{last:+.2f} s'} after re-pointing")

    unexpected = [o for o in run.outcomes if classify(o, run.window) == "unexpected"]
    if unexpected:
        lines.append(f"UNEXPECTED errors: {len(unexpected)}; most common:")
        for (kind, problem), count in Counter((o.kind, o.problem) for o in unexpected).most_common(8):
            lines.append(f"  {count:>6} x {kind}: {problem}")
        for outcome in unexpected[:5]:
            lines.append(f"  e.g. {outcome.kind} at +{outcome.started - run.measure_start:.2f}.."
                         f"+{outcome.ended - run.measure_start:.2f} s: {outcome.problem}")

    memory = memory_report(run, sampler)
    verdict = "meets" if memory["growth_pct"] < TARGET_GROWTH_PCT else "ABOVE"
    point = {name: memory[name] for name in ("start", "middle", "end")}
    lines.append(
        f"server RSS (sum over {memory['processes']} processes): start {point['start']['rss_mib']:.1f} MiB "
        f"(+{point['start']['at_s']:.0f} s), middle {point['middle']['rss_mib']:.1f} MiB "
        f"(+{point['middle']['at_s']:.0f} s), end {point['end']['rss_mib']:.1f} MiB "
        f"(+{point['end']['at_s']:.0f} s); peak {memory['peak_rss_mib']:.1f} MiB; growth "
        f"{memory['growth_pct']:+.2f} % - {verdict} target < {TARGET_GROWTH_PCT:g} %")
    lines.append(f"  PSS (shared pages split): start {point['start']['pss_mib']:.1f}, middle "
                 f"{point['middle']['pss_mib']:.1f}, end {point['end']['pss_mib']:.1f} MiB "
                 f"({memory['pss_growth_pct']:+.2f} %)")
    for role in ROLES:
        values = [point[name]["by_role"][role] for name in ("start", "middle", "end")]
        lines.append(f"  {role:<13} ({values[0]['processes']:.0f}): RSS "
                     + " / ".join(f"{v['rss_mib']:.1f}" for v in values) + " MiB")
    if memory["processes_gone"] or memory["processes_new"]:
        lines.append(f"  SERVER PROCESSES CHANGED: gone {memory['processes_gone']}, "
                     f"new {memory['processes_new']}")

    lines.append("HTTP workers (client connections at start -> end; CPU % of one core over the run, "
                 "main process + its image pool): " + "; ".join(
                     f"pid {w['pid']}: {w['connections_start']} -> {w['connections_end']}, "
                     f"{w['main_cpu_pct']:.0f} + {w['pool_cpu_pct']:.0f}" for w in run.workers))
    rows = timeline(run)
    head = (f"{'t s':>5}{'req/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'exp':>5}{'unexp':>6}{'RSS MiB':>9}"
            f"{'PSS MiB':>9}  cpu % of one core:" + "".join(f"{name:>7}" for name in CPU_COLUMNS))
    lines += ["", head, "-" * len(head)]
    for row in rows:
        lines.append(f"{row['t_s']:>5}{row['rps']:>7.1f}{row['p50_ms']:>8.1f}{row['p99_ms']:>8.1f}"
                     f"{row['expected']:>5}{row['unexpected']:>6}{row['rss_mib']:>9.1f}{row['pss_mib']:>9.1f}"
                     f"  {'':<18}" + "".join(f"{row['cpu'].get(name, 0.0):>7.0f}" for name in CPU_COLUMNS))
    scrapes_failed = [row for row in rows if row["metrics_scrape"] != "ok"]
    result = {
        "kinds": {stats["kind"]: stats for stats in kinds}, "all": total,
        "warmup": {"requests": len(warmup), "unexpected_errors": len(warm_unexpected)},
        "unexpected_errors": len(unexpected),  # warm-up and measured run
        "unexpected_examples": [f"{o.kind} +{o.started - run.measure_start:.2f}s: {o.problem}"
                                for o in unexpected[:10]],
        "window": outage, "memory": memory, "workers": run.workers, "timeline": rows,
        "metrics_scrapes": len(rows), "metrics_scrapes_failed": len(scrapes_failed),
        "cpu_mean": mean_cpu(run.intervals),
    }
    return "\n".join(lines), result


def mean_cpu(intervals: list[Interval]) -> dict[str, float]:
    wall = sum(i.end - i.start for i in intervals)
    if not wall:
        return {}
    names = {name for i in intervals for name in i.cpu}
    return {name: round(sum(i.cpu.get(name, 0.0) * (i.end - i.start) for i in intervals) / wall, 1)
            for name in sorted(names)}


ARRANGEMENT: Final = (
    "processes: moto (replaced once) | relay (this script's, the proxy's S3 endpoint) | imgproxy serve "
    "--workers {workers} (supervisor, HTTP workers, image pools; metrics on) | bench = {concurrency} "
    "aiohttp clients checking every answer; all on {cpus} CPUs shared with anything else running "
    "('others' column)."
)


# --- main ----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0,
                        help="measured seconds, after the warm-up (300)")
    parser.add_argument("--warmup", type=float, default=20.0,
                        help="seconds of the same load before; RSS 'start' is taken at its end (20)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--restart-at", type=float, default=0.5,
                        help="when S3 is restarted, as a fraction of the measured run (0.5)")
    parser.add_argument("--workers", type=int, default=2, help="the server's HTTP worker processes (2)")
    parser.add_argument("--stagger", type=float, default=0.0,
                        help="seconds between the clients' starts (0: all connect in one burst)")
    parser.add_argument("--objects", type=int, default=24, help="distinct objects in the bucket (24)")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="copy the server's, moto's and the config files to DIR at the end")
    args = parser.parse_args(argv)
    if not (10 <= args.seconds <= 24 * 3600 and 0 <= args.warmup <= 600 and 0.05 <= args.restart_at <= 0.95
            and 1 <= args.concurrency <= 256 and 1 <= args.workers <= 16 and 3 <= args.objects <= 300
            and 0 <= args.stagger <= 10):
        parser.error("an option is out of range")
    return args


def server_log_summary(path: Path, window: Window | None) -> dict[str, Any]:
    """ERROR/WARNING lines of the server's log, and those outside the outage (+ GRACE)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    summary: dict[str, Any] = {"lines": 0, "tracebacks": text.count("Traceback (most recent call last)"),
                               "error_lines": 0, "warning_lines": 0, "outside_window": 0, "examples": []}
    for line in text.splitlines():
        summary["lines"] += 1
        level = line[24:].partition(" ")[0]  # "2026-11-23 22:02:28,744 ERROR imgproxy.error ..."
        if level not in ("WARNING", "ERROR", "CRITICAL"):
            continue
        summary["warning_lines" if level == "WARNING" else "error_lines"] += 1
        try:
            logged = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local, as logged
        except ValueError:
            continue
        if window is None or not window.start - 0.5 <= logged - window.wall_offset <= window.end + GRACE:
            summary["outside_window"] += 1
            if len(summary["examples"]) < 10:
                summary["examples"].append(line[:300])
    return summary


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    signing_key = secrets.token_urlsafe(32)
    result: dict[str, Any] = {
        "bench": "imgproxy-soak", "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "code": code_state(),
        "python": platform.python_version(), "aiohttp": aiohttp.__version__,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    note(f"generating {args.objects} photo-like JPEGs")
    objects = generate_objects(args.objects)
    with ExitStack() as stack:
        storage = stack.enter_context(Storage(workdir, objects).running())
        render_config = workdir / "render.toml"  # no [transform]: the defaults, as the server's
        render_config.write_text(proxy_toml(storage.relay_endpoint, 0, signing_key))
        note("rendering the expected thumbnails")
        thumbnails = render_thumbnails(storage.objects, render_config)
        all_variants = sum(len(t.body) + ENTRY_OVERHEAD for t in thumbnails)
        variant_bytes = max(64 * 1024, round(all_variants * CACHE_FRACTION))
        extra = "\n".join([
            "", "[delivery]", 'mode = "stream"  # the mix measures redirects on their own source', "",
            "[cache]", f"variant_bytes = {variant_bytes}", "",
            f"[sources.{REDIRECT_SOURCE}.delivery]", 'mode = "redirect"', "",
        ]) + "\n" + source_toml(REDIRECT_SOURCE, storage.relay_endpoint)
        metrics_port = free_port()
        proxy_proc, base_url = stack.enter_context(proxy(
            workdir, storage.relay_endpoint, signing_key, extra_toml=extra, workers=args.workers,
            metrics_port=metrics_port))
        if args.keep_logs is not None:
            stack.callback(keep_logs, workdir, args.keep_logs)
        catalog = build_catalog(storage.objects, thumbnails, UrlSigner(signing_key, "bench", base_url),
                                storage.relay_endpoint)
        result["objects"] = {"count": len(objects), "bytes": sum(len(o.data) for o in objects),
                             "thumbnails": len(thumbnails), "variant_bytes": all_variants,
                             "variant_cache_bytes_per_worker": variant_bytes}
        sampler = stack.enter_context(TreeSampler(proxy_proc.pid))
        print(ARRANGEMENT.format(workers=args.workers, concurrency=args.concurrency, cpus=os.cpu_count()))
        print(f"{len(objects)} objects ({result['objects']['bytes'] / MIB:.1f} MiB), {len(thumbnails)} "
              f"thumbnail URLs ({all_variants / MIB:.1f} MiB of variants; cache {variant_bytes / MIB:.2f} "
              f"MiB per worker); {args.warmup:g} s warm-up + {args.seconds:g} s measured, S3 restarted at "
              f"{args.restart_at:g} of it; load avg at start {result['loadavg_start'][0]:.2f}; imgproxy at "
              f"{result['code']}; {result['started']}", flush=True)
        run = asyncio.run(soak(args, catalog, storage, sampler, f"http://{HOST}:{metrics_port}/metrics",
                               int(base_url.rpartition(":")[2])))
        text, measured = report(run, sampler, args)
        result.update(measured)
        log = result["server_log"] = server_log_summary(workdir / "imgproxy.log", run.window)
        print(text, flush=True)
        print(f"server log: {log['lines']} lines; {log['error_lines']} ERROR, {log['warning_lines']} "
              f"WARNING, {log['tracebacks']} tracebacks; ERROR/WARNING outside the outage window: "
              f"{log['outside_window']}" + "".join(f"\n  {line}" for line in log["examples"][:5]), flush=True)
    result["loadavg_end"] = os.getloadavg()
    return result


def failures(result: dict[str, Any]) -> list[str]:
    found = []
    if result.get("unexpected_errors"):  # the warm-up's included
        found.append(f"{result['unexpected_errors']} unexpected errors, "
                     f"e.g. {result['unexpected_examples'][:3]}")
    for kind, stats in result.get("kinds", {}).items():
        if not stats["ok"]:
            found.append(f"{kind}: no request answered right")
    memory = result.get("memory", {})
    if memory.get("processes_gone") or memory.get("processes_new"):
        found.append(f"server processes changed during the run: gone {memory['processes_gone']}, "
                     f"new {memory['processes_new']}")
    if result.get("metrics_scrapes_failed"):
        found.append(f"{result['metrics_scrapes_failed']} metrics scrapes failed")
    return found


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, failures, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
