#!/usr/bin/env python3
"""Benchmark: 300 px thumbnails of a 4000x3000 JPEG through imgproxy vs the bare Pillow floor.

Not a test. It measures and prints; it exits non-zero only when something *failed* (a process
would not start, a request errored, a thumbnail differed from the floor's), never because a
target was missed. Shares its harness (moto, ``imgproxy serve``, CPU accounting, load loop)
with ``bench_stream.py``:
  moto      S3-compatible server in its own process, holding the source JPEG
  proxy     two ``imgproxy serve`` processes, each with --workers image worker processes:
            "miss" with the variant cache disabled (``cache.variant_bytes = 0``), "hit" with it on
  floor     --workers processes calling ``imgproxy.transform.steps.render`` in a tight loop on
            the same bytes, with the spec and settings the proxy derives from the same config
  bench     this process: generates the image, seeds the bucket, is the aiohttp load generator

(a) thumbnails/s, ``w=300&fmt=jpeg``: floor vs proxy with every request transforming. Each of
    the --concurrency connections asks for its own copy of the image (its own key), so the
    proxy's request coalescing cannot merge them; ratio proxy/floor (target >= 0.8) and the CPU
    each process spent per thumbnail, which shows where the gap goes.
(b) the same URL through the proxy with the variant cache on: req/s, hit rate (X-Cache header),
    and hit req/s relative to miss req/s.
Sides run interleaved (floor, miss, hit, floor, ...) after a warm-up of each.

    .venv/bin/python bench/bench_transform.py [--seconds 10] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
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
    Check,
    CpuMeter,
    Phase,
    add_load_options,
    descendants,
    merged,
    moto,
    note,
    proxy,
    run_main,
    run_phase,
    s3_client,
    session_for,
    spawned,
)

from imgproxy.auth.signing import UrlSigner
from imgproxy.config import load_config
from imgproxy.transform.jobs import RenderSettings, available_outputs
from imgproxy.transform.negotiate import choose_target
from imgproxy.transform.params import OutputFormat, TransformSpec
from imgproxy.transform.policy import TransformPolicy
from imgproxy.transform.pool import default_workers
from imgproxy.transform.steps import render

WIDTH: Final = 4000
HEIGHT: Final = 3000
JPEG_QUALITY: Final = 90
QUERY: Final = {"w": "300", "fmt": "jpeg"}
KEY: Final = "photos/bench-4000x3000-{:02d}.jpg"  # one copy per connection
SIDES: Final = ("floor", "miss", "hit")
TARGET_RATIO: Final = 0.8
CPU_COLUMNS: Final = ("moto", "proxy", "workers", "bench", "floor")


# --- the source image ------------------------------------------------------------------------

def photo_like(width: int = WIDTH, height: int = HEIGHT, seed: int = 4000) -> bytes:
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


# --- the floor: render() in a tight loop, one process per worker ----------------------------

@dataclass(frozen=True, slots=True)
class RenderInputs:
    """What the proxy's worker gets for this request, derived by the proxy's own code."""

    spec: TransformSpec
    target: OutputFormat | None
    settings: RenderSettings
    max_pixels: int


def render_inputs(config_path: Path) -> RenderInputs:
    """Spec, target and settings as the proxy computes them from the same config file."""
    config = load_config(config_path)
    policy = TransformPolicy.from_config(config.transform, available_outputs())
    spec = policy.parse(QUERY)
    if spec is None:
        raise BenchError(f"{QUERY} is not a transform")
    return RenderInputs(spec, choose_target(spec, None, policy.formats), policy.settings,
                        config.transform.max_source_pixels)


def floor_worker(conn: Connection, data: bytes, inputs: RenderInputs) -> None:
    """In a floor process: render once (sent back as the expected thumbnail), then for each
    number of seconds received, render in a loop and send back the time each render took."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = inputs.max_pixels  # as the proxy's pool initialiser does
    conn.send(render(data, inputs.spec, inputs.target, inputs.settings).body)
    while (seconds := conn.recv()) is not None:
        times: list[float] = []
        end = time.perf_counter() + seconds
        while (started := time.perf_counter()) < end:
            render(data, inputs.spec, inputs.target, inputs.settings)
            times.append(time.perf_counter() - started)
        conn.send(times)


@dataclass
class Floor:
    conns: list[Connection]
    pids: list[int]
    expected: bytes

    def run(self, phase: Phase, seconds: float, meter: CpuMeter) -> Phase:
        meter.start()
        started = time.perf_counter()
        for conn in self.conns:
            conn.send(seconds)
        for conn in self.conns:
            phase.latencies += conn.recv()
        phase.wall = time.perf_counter() - started
        phase.cpu = meter.stop()
        phase.requests = len(phase.latencies)
        return phase


@contextmanager
def floor_processes(count: int, data: bytes, inputs: RenderInputs) -> Iterator[Floor]:
    with ExitStack() as stack:
        children = [stack.enter_context(spawned(floor_worker, data, inputs)) for _ in range(count)]
        conns = [conn for conn, _ in children]
        try:
            outputs = []
            for conn in conns:
                if not conn.poll(120):
                    raise BenchError("a floor process did not start")
                outputs.append(conn.recv())
            if len(set(outputs)) != 1:
                raise BenchError("floor processes rendered different thumbnails")
            yield Floor(conns, [pid for _, pid in children], outputs[0])
        except EOFError:
            raise BenchError("a floor process died") from None


# --- load ------------------------------------------------------------------------------------

def expect_thumbnail(expected: bytes) -> Check:
    """The proxy's answer must be the floor's thumbnail, byte for byte."""
    def check(response: aiohttp.ClientResponse, body: bytes) -> str:
        if response.status != 200:
            return f"HTTP {response.status}"
        if response.content_type != "image/jpeg":
            return f"Content-Type {response.content_type}"
        return "" if body == expected else f"{len(body)}-byte body differs from the floor's thumbnail"
    return check


@dataclass
class Sides:
    """Everything a phase of each side needs."""

    floor: Floor
    urls: dict[str, list[str]]  # side -> one URL per connection (cycled)
    pids: dict[str, dict[str, Any]]  # side -> CpuMeter groups, except a proxy's workers
    proxy_pid: dict[str, int]

    def meter(self, side: str) -> CpuMeter:
        groups = dict(self.pids[side])
        if side in self.proxy_pid:  # the forkserver, its workers, the resource tracker
            groups["workers"] = descendants(self.proxy_pid[side])
        return CpuMeter(groups)


async def one_phase(sides: Sides, session: aiohttp.ClientSession, side: str, number: int,
                    seconds: float, concurrency: int, check: Check) -> Phase:
    phase = Phase(side, number)
    if side == "floor":
        return await asyncio.to_thread(sides.floor.run, phase, seconds, sides.meter(side))
    return await run_phase(session, phase, sides.urls[side], seconds, concurrency, sides.meter(side),
                           check, tally_header="X-Cache")


async def measure(sides: Sides, args: argparse.Namespace) -> list[Phase]:
    """Warm up each side, then run floor, miss, hit in turn for args.rounds rounds."""
    check = expect_thumbnail(sides.floor.expected)
    phases: list[Phase] = []
    async with session_for(args.concurrency) as session:
        for side in SIDES:
            warm = await one_phase(sides, session, side, 0, args.warmup, args.concurrency, check)
            note(f"warm-up {side}: {warm.rps:.1f}/s, {warm.errors} errors")
            if warm.errors:
                raise BenchError(f"{side} warm-up failed: {warm.first_error}")
        for number in range(1, args.rounds + 1):
            for side in SIDES:
                phase = await one_phase(sides, session, side, number, args.seconds, args.concurrency,
                                        check)
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


def report(phases: list[Phase]) -> tuple[str, dict[str, Any]]:
    totals = {side: merged(phases, side) for side in SIDES}
    head = (f"{'side':<6}{'round':>6}{'per s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'HIT %':>7}"
            f"   cpu % of one core:{''.join(f'{c:>8}' for c in CPU_COLUMNS)}{'others':>8}{'idle':>6}")
    lines = [head, "-" * len(head)]
    for phase in [*phases, *totals.values()]:
        c = phase.cpu
        hits = f"{100 * hit_rate(phase):.1f}" if phase.tally else "-"
        lines.append(
            f"{phase.side:<6}{phase.round or 'all':>6}{phase.rps:>8.1f}{phase.percentile_ms(0.5):>8.1f}"
            f"{phase.percentile_ms(0.99):>8.1f}{phase.errors:>7}{hits:>7}   {'':<18}"
            + "".join(f"{c.get(name, 0):>8.0f}" for name in CPU_COLUMNS)
            + f"{c.get('others', 0):>8.0f}{c.get('idle', 0):>6.0f}")
    floor, miss, hit = totals["floor"], totals["miss"], totals["hit"]
    per = {side: total.cpu_ms_per_request() for side, total in totals.items()}
    for side in totals:
        spent = {name: ms for name, ms in per[side].items() if ms >= 0.01}
        lines.append(f"CPU ms per {'render' if side == 'floor' else 'request'}, {side}: "
                     + ", ".join(f"{name} {ms:.2f}" for name, ms in spent.items())
                     + f" (sum {sum(spent.values()):.2f})")
    ratio = miss.rps / floor.rps if floor.rps else 0.0
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    lines.append(f"proxy/floor thumbnails per second: {ratio:.3f} (per round: "
                 f"{', '.join(f'{r:.3f}' for r in ratios(phases, 'miss', 'floor'))}) - "
                 f"{verdict} target >= {TARGET_RATIO}")
    floor_ms = per["floor"].get("floor", 0.0)
    proxy_ms = per["miss"].get("proxy", 0.0) + per["miss"].get("workers", 0.0)
    all_ms = sum(per["miss"].values())
    efficiency = {
        "proxy_and_workers": round(floor_ms / proxy_ms, 3) if proxy_ms else 0.0,
        "all_processes": round(floor_ms / all_ms, 3) if all_ms else 0.0,
    }
    lines.append(f"CPU per thumbnail, floor / proxy side: {efficiency['proxy_and_workers']:.3f} counting "
                 f"the proxy and its workers, {efficiency['all_processes']:.3f} counting moto and the "
                 "load generator too (the ratio to expect when CPU-bound)")
    hit_over_miss = hit.rps / miss.rps if miss.rps else 0.0
    lines.append(f"variant cache: {hit.rps:.0f} req/s, hit rate {100 * hit_rate(hit):.2f}% "
                 f"({', '.join(f'{k} {v}' for k, v in sorted(hit.tally.items()))}); "
                 f"{hit_over_miss:.1f}x the miss req/s")
    result = {
        "a": {
            "ratio": round(ratio, 3), "ratio_per_round": ratios(phases, "miss", "floor"),
            "target_ratio": TARGET_RATIO, "cpu_efficiency": efficiency,
            "floor": phase_json(floor), "miss": phase_json(miss),
        },
        "b": {
            "hit_rate": round(hit_rate(hit), 4), "hit_over_miss": round(hit_over_miss, 2),
            "hit_over_miss_per_round": ratios(phases, "hit", "miss"), "hit": phase_json(hit),
        },
        "phases": [phase_json(p) for p in phases],
    }
    return "\n".join(lines), result


ARRANGEMENT: Final = (
    "processes: moto | imgproxy serve x2 (miss: variant cache off, hit: on), each with {workers} image "
    "workers | floor: {workers} processes running render() | bench = aiohttp load generator; all "
    "on {cpus} CPUs shared with anything else running ('others' column). The floor has the CPUs "
    "to itself; the proxy side shares them with moto (a real S3 would not) and the load generator, "
    "so when CPU-bound the ratio is a lower bound: see the CPU per thumbnail lines."
)


# --- main ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(parser, warmup=2.0, rounds_help="floor+miss+hit rounds")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help=f"proxy transform workers = floor processes ({default_workers()}: CPUs)")
    parser.add_argument("--profile-proxy", type=Path, metavar="PATH",
                        help="run the miss proxy's main process under cProfile, stats to PATH")
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
    with ExitStack() as stack:
        moto_proc, endpoint = stack.enter_context(moto(workdir))
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        note(f"generating a {WIDTH}x{HEIGHT} photo-like JPEG")
        image = photo_like()
        keys = [KEY.format(i) for i in range(args.concurrency)]
        for key in keys:
            s3.put_object(Bucket=BUCKET, Key=key, Body=image, ContentType="image/jpeg")
        miss_proc, miss_url = stack.enter_context(proxy(
            workdir, endpoint, signing_key, args.profile_proxy, name="miss",
            extra_toml=workers + "\n[cache]\nvariant_bytes = 0\n"))
        hit_proc, hit_url = stack.enter_context(proxy(
            workdir, endpoint, signing_key, name="hit", extra_toml=workers))
        inputs = render_inputs(workdir / "miss.toml")
        floor = stack.enter_context(floor_processes(args.workers, data=image, inputs=inputs))
        bench_pid, moto_pid = os.getpid(), moto_proc.pid
        sides = Sides(
            floor=floor,
            urls={
                "miss": [UrlSigner(signing_key, "bench", miss_url).sign(SOURCE, key, ttl=3600, params=QUERY)
                         for key in keys],
                "hit": [UrlSigner(signing_key, "bench", hit_url).sign(SOURCE, keys[0], ttl=3600,
                                                                       params=QUERY)],
            },
            pids={
                "floor": {"moto": moto_pid, "bench": bench_pid, "floor": floor.pids},
                "miss": {"moto": moto_pid, "proxy": miss_proc.pid, "bench": bench_pid},
                "hit": {"moto": moto_pid, "proxy": hit_proc.pid, "bench": bench_pid},
            },
            proxy_pid={"miss": miss_proc.pid, "hit": hit_proc.pid},
        )
        result["image"] = {"width": WIDTH, "height": HEIGHT, "bytes": len(image),
                           "quality": JPEG_QUALITY, "query": QUERY, "thumbnail_bytes": len(floor.expected)}
        result["workers"] = args.workers
        print(ARRANGEMENT.format(workers=args.workers, cpus=os.cpu_count()))
        query = "&".join(f"{k}={v}" for k, v in QUERY.items())
        print(f"{WIDTH}x{HEIGHT} JPEG of {len(image):,} bytes -> {query} ({len(floor.expected):,} bytes); "
              f"{args.concurrency} connections, {args.rounds} x "
              f"{args.seconds:g} s per side after {args.warmup:g} s warm-up; load avg at start "
              f"{result['loadavg_start'][0]:.2f}")
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
