#!/usr/bin/env python3
"""Benchmark: distinct thumbnails through imgproxy vs the peers' bare Pillow render, and cache hits.

Not a test. It measures and prints; it exits non-zero only when something *failed* (a process
would not start, a request errored, a thumbnail had the wrong type or size), never because a
target was missed. Shares its harness (moto, ``imgproxy serve``, CPU accounting, load loop)
with the other benchmarks:
  moto      S3-compatible server in its own process, holding copies of two generated photos
            (``tests/photos.py``): large 4000x3000 (~2.7 MB) and medium 1600x1200 (~0.54 MB)
  proxy     ``imgproxy serve`` (one serving process) with --workers image worker processes, the
            variant cache on and ``cache.metadata_ttl = 0``: every request is as for an object
            not seen before, as on a page of distinct photos (no HEAD: nothing cached to look
            up; the image worker GETs the source itself)
  tls       with --s3-tls, nginx terminating TLS (a throwaway CA) in front of moto: the proxy
            reaches S3 over HTTPS, as in production
  hit       a second ``imgproxy serve``, default config, asked for one URL again and again
  floor     --workers processes doing what thumbor and the other Pillow-based peers do, in a
            tight loop on the same bytes: ``Image.draft`` to the target (DCT-scaled decode),
            LANCZOS resize, JPEG encode at the proxy's default quality. Not this project's
            ``steps.render``: measured against itself, the proxy could never look slow.
  bench     this process: generates the images, seeds the bucket, is the aiohttp load generator

(a) thumbnails/s of DISTINCT thumbnails: every request is a new (key, width) pair, widths
    260-359 px (``fmt=jpeg``), so neither the variant cache nor request coalescing can help;
    the floor renders the same widths. Per source: ratio proxy/floor, the image workers' CPU
    per thumbnail against the floor's CPU per render, and the serving process's CPU per
    thumbnail (targets from issue 12: large >= 0.75, medium >= 0.5, workers <= 1.1x the floor,
    serving process < 2 ms).
(b) the variant cache: one ``w=300`` URL of the medium photo through the hit proxy: req/s, hit
    rate (X-Cache header), and hit req/s relative to the medium proxy side's.
Sides run interleaved (floor-large, proxy-large, floor-medium, proxy-medium, hit, floor-large,
...) after a warm-up of each.

    .venv/bin/python bench/bench_transform.py [--seconds 10] [--workers N] [--warm-metadata] [--s3-tls]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import math
import os
import platform
import random
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import aiohttp
import PIL
from harness import (
    BUCKET,
    SOURCE,
    BenchError,
    CpuMeter,
    Exchange,
    Phase,
    add_load_options,
    add_s3_options,
    descendants,
    merged,
    note,
    proxy,
    run_exchanges,
    run_main,
    s3_client,
    s3_server,
    session_for,
    spawned,
)

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from photos import photo_jpeg  # the photo-like images the render-quality tests use

from imgproxy.auth.signing import UrlSigner
from imgproxy.config import load_config
from imgproxy.transform.geometry import target_box
from imgproxy.transform.params import TransformSpec
from imgproxy.transform.pool import default_workers

JPEG_QUALITY: Final = 90  # photo_like's sources
WIDTHS: Final = tuple(range(260, 360))  # about 300 px
HIT_QUERY: Final = {"w": "300", "fmt": "jpeg"}
TARGET_RATIO: Final = {"large": 0.75, "medium": 0.5}
TARGET_WORKER_CPU: Final = 1.1  # the image workers' CPU per thumbnail / the floor's per render
TARGET_SERVING_MS: Final = 2.0  # the serving process's CPU per thumbnail
CPU_COLUMNS: Final = ("moto", "tls", "proxy", "workers", "bench", "floor")


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    width: int
    height: int
    copies: int  # distinct keys: with WIDTHS, copies x 100 distinct thumbnails per run

    def key(self, copy: int) -> str:
        return f"photos/bench-{self.name}-{self.width}x{self.height}-{copy:03d}.jpg"

    def thumbnail_size(self, width: int) -> tuple[int, int]:
        """The proxy's size for ``w=width`` (its own arithmetic: a half pixel such as 3000 x
        278/4000 = 208.5 rounds as the proxy's float scale does), which the floor renders too."""
        return thumbnail_size((self.width, self.height), width)


def thumbnail_size(size: tuple[int, int], width: int) -> tuple[int, int]:
    box = target_box(size, TransformSpec(width, None))
    assert box is not None
    return box


SOURCES: Final = (Source("large", 4000, 3000, 24), Source("medium", 1600, 1200, 64))
SIDES: Final = ("floor-large", "proxy-large", "floor-medium", "proxy-medium", "hit")


# --- photo_like: the generator bench_soak.py and bench_hostile.py import ---------------------

def photo_like(width: int = 4000, height: int = 3000, seed: int = 4000) -> bytes:
    """A photo-like JPEG: smooth colour gradients, ~400 flat shapes and lines softened by a blur,
    then film-grain-like texture (coarse mottling + fine noise, 25 % blend). Not pure noise:
    that barely compresses and decodes far slower than a photograph."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    gradient = Image.linear_gradient("L")
    image = Image.merge("RGB", (
        gradient.rotate(90).resize((width, height), Image.Resampling.BILINEAR),
        gradient.resize((width, height), Image.Resampling.BILINEAR),
        Image.radial_gradient("L").resize((width, height), Image.Resampling.BILINEAR),
    ))
    draw = ImageDraw.Draw(image)
    for _ in range(120):
        x, y = rng.randrange(width), rng.randrange(height)
        w, h = rng.randrange(40, width // 3), rng.randrange(40, height // 3)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        kind = rng.random()
        if kind < 0.4:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        elif kind < 0.7:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        else:
            draw.polygon([(x + rng.randrange(-w, w), y + rng.randrange(-h, h)) for _ in range(5)],
                         fill=colour)
    for _ in range(300):
        x, y = rng.randrange(width), rng.randrange(height)
        draw.line((x, y, x + rng.randrange(-400, 400), y + rng.randrange(-400, 400)),
                  fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)),
                  width=rng.randrange(1, 8))
    image = image.filter(ImageFilter.GaussianBlur(2))
    coarse = Image.effect_noise((width // 16, height // 16), 40).resize((width, height),
                                                                         Image.Resampling.BICUBIC)
    grain = Image.blend(coarse, Image.effect_noise((width, height), 18), 0.5).convert("RGB")
    image = Image.blend(image, grain, 0.25)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# --- the floor: the peers' render, one process per worker ------------------------------------

def peer_render(data: bytes, size: tuple[int, int], quality: int) -> bytes:
    """What thumbor and the other Pillow-based proxies do: DCT-scaled decode to the target
    (``draft``), LANCZOS to the size, JPEG at ``quality``."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.draft("RGB", size)
    resized = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    resized.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def floor_worker(conn: Connection, sources: dict[str, tuple[bytes, int, int]], quality: int,
                 max_pixels: int, offset: int) -> None:
    """In a floor process: render each source once (the size is sent back), then for each
    (source name, seconds) received, render its thumbnails in a loop, cycling through WIDTHS,
    and send back the time each render took."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels  # as the proxy's pool initialiser does
    sizes = {name: Image.open(io.BytesIO(peer_render(data, thumbnail_size((w, h), 300), quality))).size
             for name, (data, w, h) in sources.items()}
    conn.send(sizes)
    widths = itertools.cycle(WIDTHS[offset:] + WIDTHS[:offset])
    while (command := conn.recv()) is not None:
        name, seconds = command
        data, width, height = sources[name]
        times: list[float] = []
        end = time.perf_counter() + seconds
        while (started := time.perf_counter()) < end:
            peer_render(data, thumbnail_size((width, height), next(widths)), quality)
            times.append(time.perf_counter() - started)
        conn.send(times)


@dataclass
class Floor:
    conns: list[Connection]
    pids: list[int]

    def run(self, phase: Phase, source: str, seconds: float, meter: CpuMeter) -> Phase:
        meter.start()
        started = time.perf_counter()
        for conn in self.conns:
            conn.send((source, seconds))
        for conn in self.conns:
            phase.latencies += conn.recv()
        phase.wall = time.perf_counter() - started
        phase.cpu = meter.stop()
        phase.requests = len(phase.latencies)
        return phase


@contextmanager
def floor_processes(count: int, sources: dict[str, tuple[bytes, int, int]], quality: int,
                    max_pixels: int) -> Iterator[Floor]:
    with ExitStack() as stack:
        children = [stack.enter_context(spawned(floor_worker, sources, quality, max_pixels,
                                                i * len(WIDTHS) // count))
                    for i in range(count)]
        conns = [conn for conn, _ in children]
        try:
            for conn in conns:
                if not conn.poll(120):
                    raise BenchError("a floor process did not start")
                sizes = conn.recv()
                if sizes != {s.name: s.thumbnail_size(300) for s in SOURCES}:
                    raise BenchError(f"the floor rendered {sizes}")
            yield Floor(conns, [pid for _, pid in children])
        except EOFError:
            raise BenchError("a floor process died") from None


# --- load ------------------------------------------------------------------------------------

def thumbnail_problem(response: aiohttp.ClientResponse, body: bytes, size: tuple[int, int]) -> str:
    """"" if ``body`` is a JPEG of ``size`` (read from its header), else what is wrong."""
    from PIL import Image

    if response.status != 200:
        return f"HTTP {response.status}"
    if response.content_type != "image/jpeg":
        return f"Content-Type {response.content_type}"
    try:
        found = Image.open(io.BytesIO(body)).size
    except Exception as exc:
        return f"not an image: {exc.__class__.__name__}"
    return "" if found == size else f"{found[0]}x{found[1]} instead of {size[0]}x{size[1]}"


def distinct_thumbnails(signer: UrlSigner, source: Source) -> Iterator[tuple[str, tuple[int, int]]]:
    """Every (key, width) pair once, both changing at every request: (signed URL, expected size).

    The n-th request is width ``n % len(WIDTHS)`` of copy ``(n + len(WIDTHS) * k) % copies``
    with ``k = n // len(WIDTHS)``, each pair once while ``copies`` is prime to ``len(WIDTHS) + 1``
    (checked). Until 2026-12-02 the keys changed fastest, so a run reached only the first widths
    (the medium source's 64 copies: ``w`` 260-292 in a 2 x 10 s run), all decoded at 1/4, while
    the floor rendered every width: the ratio left out the widths a draft decodes at 1/2."""
    count = len(WIDTHS)
    if math.gcd(count + 1, source.copies) != 1:
        raise BenchError(f"{source.name}: {source.copies} copies repeat pairs with {count} widths")
    for n in range(count * source.copies):
        width, copy = WIDTHS[n % count], (n + n // count) % source.copies
        url = signer.sign(SOURCE, source.key(copy), ttl=3600, params={"w": str(width), "fmt": "jpeg"})
        yield url, source.thumbnail_size(width)


def next_thumbnail(urls: Iterator[tuple[str, tuple[int, int]]]) -> Exchange:
    """Each call GETs the next distinct thumbnail (shared by every connection): the tally is
    X-Cache, which must be MISS every time."""
    async def exchange(session: aiohttp.ClientSession) -> tuple[str, str | None]:
        try:
            url, size = next(urls)
        except StopIteration:
            raise BenchError("ran out of distinct thumbnails (raise Source.copies)") from None
        async with session.get(url, allow_redirects=False) as response:
            body = await response.read()
            return thumbnail_problem(response, body, size), response.headers.get("X-Cache", "-")
    return exchange


def same_thumbnail(url: str, size: tuple[int, int]) -> Exchange:
    async def exchange(session: aiohttp.ClientSession) -> tuple[str, str | None]:
        async with session.get(url, allow_redirects=False) as response:
            body = await response.read()
            return thumbnail_problem(response, body, size), response.headers.get("X-Cache", "-")
    return exchange


@dataclass
class Sides:
    """Everything a phase of each side needs."""

    floor: Floor
    exchanges: dict[str, Exchange]  # proxy-large, proxy-medium, hit
    pids: dict[str, dict[str, Any]]  # side -> CpuMeter groups, except a proxy's workers
    proxy_pid: dict[str, int]

    def meter(self, side: str) -> CpuMeter:
        groups = dict(self.pids[side])
        if side in self.proxy_pid:  # the forkserver, its workers, the resource tracker
            groups["workers"] = descendants(self.proxy_pid[side])
        return CpuMeter(groups)


async def one_phase(sides: Sides, session: aiohttp.ClientSession, side: str, number: int,
                    seconds: float, concurrency: int) -> Phase:
    phase = Phase(side, number)
    if side.startswith("floor-"):
        return await asyncio.to_thread(sides.floor.run, phase, side.removeprefix("floor-"), seconds,
                                       sides.meter(side))
    return await run_exchanges(session, phase, [sides.exchanges[side]], seconds, concurrency,
                               sides.meter(side))


async def measure(sides: Sides, args: argparse.Namespace) -> list[Phase]:
    """Warm up each side, then run every side in turn for args.rounds rounds."""
    phases: list[Phase] = []
    async with session_for(args.concurrency) as session:
        for side in SIDES:
            warm = await one_phase(sides, session, side, 0, args.warmup, args.concurrency)
            note(f"warm-up {side}: {warm.rps:.1f}/s, {warm.errors} errors")
            if warm.errors:
                raise BenchError(f"{side} warm-up failed: {warm.first_error}")
        for number in range(1, args.rounds + 1):
            for side in SIDES:
                phase = await one_phase(sides, session, side, number, args.seconds, args.concurrency)
                note(f"round {number} {side}: {phase.rps:.1f}/s")
                phases.append(phase)
    return phases


# --- report ----------------------------------------------------------------------------------

def hit_rate(phase: Phase) -> float:
    counted = sum(phase.tally.values())
    return phase.tally.get("HIT", 0) / counted if counted else 0.0


def phase_json(phase: Phase) -> dict[str, Any]:
    return {
        "side": phase.side, "round": phase.round, "seconds": round(phase.wall, 2),
        "requests": phase.requests, "errors": phase.errors, "per_s": round(phase.rps, 2),
        "p50_ms": round(phase.percentile_ms(0.50), 2), "p99_ms": round(phase.percentile_ms(0.99), 2),
        "first_error": phase.first_error, "x_cache": dict(phase.tally), "cpu_pct_of_one_core": phase.cpu,
        "cpu_ms_per_request": phase.cpu_ms_per_request(),
    }


def ratios(phases: list[Phase], top: str, bottom: str) -> list[float]:
    tops = [p for p in phases if p.side == top]
    bottoms = [p for p in phases if p.side == bottom]
    return [round(t.rps / b.rps, 3) if b.rps else 0.0 for t, b in zip(tops, bottoms, strict=True)]


def verdict(met: bool) -> str:
    return "meets" if met else "BELOW"


def report(phases: list[Phase]) -> tuple[str, dict[str, Any]]:
    totals = {side: merged(phases, side) for side in SIDES}
    head = (f"{'side':<13}{'round':>6}{'per s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'HIT %':>7}"
            f"   cpu % of one core:{''.join(f'{c:>8}' for c in CPU_COLUMNS)}{'others':>8}{'idle':>6}")
    lines = [head, "-" * len(head)]
    for phase in [*phases, *totals.values()]:
        c = phase.cpu
        hits = f"{100 * hit_rate(phase):.1f}" if phase.tally else "-"
        lines.append(
            f"{phase.side:<13}{phase.round or 'all':>6}{phase.rps:>8.1f}{phase.percentile_ms(0.5):>8.1f}"
            f"{phase.percentile_ms(0.99):>8.1f}{phase.errors:>7}{hits:>7}   {'':<18}"
            + "".join(f"{c.get(name, 0):>8.0f}" for name in CPU_COLUMNS)
            + f"{c.get('others', 0):>8.0f}{c.get('idle', 0):>6.0f}")
    per = {side: total.cpu_ms_per_request() for side, total in totals.items()}
    for side in totals:
        spent = {name: ms for name, ms in per[side].items() if ms >= 0.01}
        lines.append(f"CPU ms per {'render' if side.startswith('floor') else 'request'}, {side}: "
                     + ", ".join(f"{name} {ms:.2f}" for name, ms in spent.items())
                     + f" (sum {sum(spent.values()):.2f})")
    result: dict[str, Any] = {}
    for source in SOURCES:
        floor, proxied = totals[f"floor-{source.name}"], totals[f"proxy-{source.name}"]
        ratio = proxied.rps / floor.rps if floor.rps else 0.0
        floor_ms = per[floor.side].get("floor", 0.0)
        workers_ms = per[proxied.side].get("workers", 0.0)
        serving_ms = per[proxied.side].get("proxy", 0.0)
        worker_ratio = workers_ms / floor_ms if floor_ms else 0.0
        target = TARGET_RATIO[source.name]
        per_round = ", ".join(f"{r:.3f}" for r in ratios(phases, proxied.side, floor.side))
        lines.append(
            f"{source.name} {source.width}x{source.height} -> w=260-359: proxy/floor thumbnails per second "
            f"{ratio:.3f} (per round: {per_round})"
            f" - {verdict(ratio >= target)} target >= {target}; image workers' CPU per thumbnail "
            f"{workers_ms:.2f} ms = {worker_ratio:.3f}x the floor's {floor_ms:.2f} ms per render - "
            f"{verdict(worker_ratio <= TARGET_WORKER_CPU)} target <= {TARGET_WORKER_CPU}; serving process "
            f"{serving_ms:.2f} ms per thumbnail - {verdict(serving_ms < TARGET_SERVING_MS)} target < "
            f"{TARGET_SERVING_MS:g}; cache hits {100 * hit_rate(proxied):.2f}% (must be 0)")
        result[source.name] = {
            "ratio": round(ratio, 3), "ratio_per_round": ratios(phases, proxied.side, floor.side),
            "target_ratio": target, "floor_cpu_ms_per_render": floor_ms,
            "workers_cpu_ms_per_thumbnail": workers_ms, "workers_over_floor_cpu": round(worker_ratio, 3),
            "serving_cpu_ms_per_thumbnail": serving_ms, "hit_rate": round(hit_rate(proxied), 4),
            "floor": phase_json(floor), "proxy": phase_json(proxied),
        }
    hit, medium = totals["hit"], totals["proxy-medium"]
    hit_over_miss = hit.rps / medium.rps if medium.rps else 0.0
    lines.append(f"variant cache: {hit.rps:.0f} req/s, hit rate {100 * hit_rate(hit):.2f}% "
                 f"({', '.join(f'{k} {v}' for k, v in sorted(hit.tally.items()))}); "
                 f"{hit_over_miss:.1f}x the medium proxy side's req/s")
    result["hit"] = {"hit_rate": round(hit_rate(hit), 4), "hit_over_medium": round(hit_over_miss, 2),
                     "hit_over_medium_per_round": ratios(phases, "hit", "proxy-medium"),
                     "phase": phase_json(hit)}
    result["phases"] = [phase_json(p) for p in phases]
    return "\n".join(lines), result


ARRANGEMENT: Final = (
    "processes: moto | imgproxy serve (one serving process, {workers} image workers, variant cache on, "
    "metadata_ttl {ttl}) | imgproxy serve for the cache hits | floor: {workers} processes running the "
    "peers' render (draft to the target, LANCZOS, JPEG q={quality}) | bench = aiohttp load generator; "
    "all on {cpus} CPUs shared with anything else running ('others' column). The floor has the CPUs "
    "to itself; the proxy side shares them with moto (a real S3 would not) and the load generator."
)


# --- main ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(parser, warmup=2.0, rounds_help="rounds of every side")
    add_s3_options(parser)
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help=f"proxy transform workers = floor processes ({default_workers()}: CPUs)")
    parser.add_argument("--warm-metadata", action="store_true",
                        help="keep the default cache.metadata_ttl (30 s): a key seen recently needs no HEAD")
    parser.add_argument("--profile-proxy", type=Path, metavar="PATH",
                        help="run the proxy's serving process under cProfile, stats to PATH")
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 3600 and 0 < args.warmup <= 600 and 1 <= args.rounds <= 20
            and 1 <= args.concurrency <= 99 and 1 <= args.workers <= 256):
        parser.error("an option is out of range")
    return args


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    signing_key = secrets.token_urlsafe(32)
    result: dict[str, Any] = {
        "bench": "imgproxy-transform", "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "python": platform.python_version(), "aiohttp": aiohttp.__version__, "pillow": PIL.__version__,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    workers = f"\n[transform]\nworkers = {args.workers}\n"
    ttl = "30 s (default)" if args.warm_metadata else "0"
    cache = "" if args.warm_metadata else "\n[cache]\nmetadata_ttl = 0\n"
    with ExitStack() as stack:
        storage = stack.enter_context(s3_server(workdir, tls=args.s3_tls))
        endpoint, ca_bundle = storage.endpoint, storage.ca_bundle
        s3 = s3_client(endpoint, ca_bundle)
        s3.create_bucket(Bucket=BUCKET)
        images: dict[str, tuple[bytes, int, int]] = {}
        for source in SOURCES:
            note(f"generating a {source.width}x{source.height} photo-like JPEG, {source.copies} copies")
            data = photo_jpeg(source.width, source.height, seed=source.width)
            images[source.name] = (data, source.width, source.height)
            for copy in range(source.copies):
                s3.put_object(Bucket=BUCKET, Key=source.key(copy), Body=data, ContentType="image/jpeg")
        proxy_proc, proxy_url = stack.enter_context(proxy(
            workdir, endpoint, signing_key, args.profile_proxy, name="proxy", extra_toml=workers + cache,
            ca_bundle=ca_bundle))
        hit_proc, hit_url = stack.enter_context(proxy(workdir, endpoint, signing_key, name="hit",
                                                      extra_toml=workers, ca_bundle=ca_bundle))
        transform = load_config(workdir / "proxy.toml").transform
        floor = stack.enter_context(floor_processes(args.workers, images, transform.jpeg_quality,
                                                    transform.max_source_pixels))
        bench_pid, moto_pid = os.getpid(), storage.moto_pid
        tls = {"tls": storage.tls_pids} if storage.tls_pids else {}
        signer = UrlSigner(signing_key, "bench", proxy_url)
        large, medium = SOURCES
        sides = Sides(
            floor=floor,
            exchanges={
                "proxy-large": next_thumbnail(distinct_thumbnails(signer, large)),
                "proxy-medium": next_thumbnail(distinct_thumbnails(signer, medium)),
                "hit": same_thumbnail(UrlSigner(signing_key, "bench", hit_url).sign(
                    SOURCE, medium.key(0), ttl=3600, params=HIT_QUERY), medium.thumbnail_size(300)),
            },
            pids={
                **{f"floor-{s.name}": {"moto": moto_pid, "bench": bench_pid, "floor": floor.pids}
                   for s in SOURCES},
                **{f"proxy-{s.name}": {"moto": moto_pid, **tls, "proxy": proxy_proc.pid, "bench": bench_pid}
                   for s in SOURCES},
                "hit": {"moto": moto_pid, **tls, "proxy": hit_proc.pid, "bench": bench_pid},
            },
            proxy_pid={**{f"proxy-{s.name}": proxy_proc.pid for s in SOURCES}, "hit": hit_proc.pid},
        )
        result["sources"] = {s.name: {"width": s.width, "height": s.height, "bytes": len(images[s.name][0]),
                                      "copies": s.copies} for s in SOURCES}
        result["widths"] = [WIDTHS[0], WIDTHS[-1]]
        result["workers"] = args.workers
        print(ARRANGEMENT.format(workers=args.workers, ttl=ttl, quality=transform.jpeg_quality,
                                 cpus=os.cpu_count()))
        kind = "HTTPS: nginx terminating TLS in front of moto" if ca_bundle else "moto, plain HTTP"
        print(f"S3: {endpoint} ({kind})")
        print("; ".join(f"{s.name}: {s.width}x{s.height} JPEG of {len(images[s.name][0]):,} bytes x "
                        f"{s.copies} keys" for s in SOURCES)
              + f"; every request a new (key, w={WIDTHS[0]}-{WIDTHS[-1]}) thumbnail, fmt=jpeg; "
              f"{args.concurrency} connections, {args.rounds} x {args.seconds:g} s per side after "
              f"{args.warmup:g} s warm-up; load avg at start {result['loadavg_start'][0]:.2f}")
        phases = asyncio.run(measure(sides, args))
        text, measured = report(phases)
        result.update(measured)
        print(text, flush=True)
    result["loadavg_end"] = os.getloadavg()
    return result


def failures(result: dict[str, Any]) -> list[str]:
    return [f"{p['side']} round {p['round']}: {p['errors']} failed requests, first: {p['first_error']}"
            for p in result.get("phases", []) if p["errors"]]


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, failures, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
