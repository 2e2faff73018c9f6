#!/usr/bin/env python3
"""Benchmark: HEIC -> 300 px JPEG thumbnails per second through imgproxy, against the same render
in a tight loop.

Not a test. It measures and prints; it exits non-zero only when something failed (a process would
not start, a request errored, a thumbnail had the wrong type or size). Shares its harness (moto,
``imgproxy serve``, CPU accounting, load loop) with the other benchmarks:
  moto    the S3-compatible server, holding two generated photo-like HEICs (``tests/photos.py``'s
          pixels, encoded by pillow-heif's x265 with its ``ultrafast`` preset, which keeps the
          set-up short; the decoder's work is the same kind): "phone" 4032x3024 in 512 px tiles,
          as iPhones store them, and "medium" 1600x1200 in one piece
  proxy   ``imgproxy serve`` (one serving process) with --workers image workers, HEIF in
          ``input_formats``, ``cache.variant_bytes = 0`` and ``cache.metadata_ttl = 0``: every
          request is rendered, none is a cache hit or a HEAD. Each connection asks for its own
          ``w=300&fmt=jpeg&q=N`` (N 70-89), so no two requests in flight coalesce
  loop    --workers processes rendering the same thumbnail with the same code in a tight loop on
          the same bytes: ``steps.render`` with the proxy's render settings, after
          ``transform/heif.register_opener()`` as in an image worker, each render asked for over
          a pipe by the load loop. What the proxy adds on top is its serving process, the worker
          pool's pipes and the source's read from S3
  bench   this process: generates the HEICs, seeds the bucket, is the aiohttp load generator
Per source: thumbnails/s of each side and their ratio, CPU ms per thumbnail of the image workers
against the loop's per render, and of the serving process. Sides interleaved (loop-phone,
proxy-phone, loop-medium, proxy-medium, ...) after a warm-up of each.

    .venv/bin/python bench/bench_heif.py [--seconds 20] [--rounds 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import secrets
import sys
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
    code_state,
    descendants,
    merged,
    note,
    proxy,
    run_exchanges,
    run_main,
    run_phase,
    s3_client,
    s3_server,
    session_for,
    spawned,
)
from PIL import Image

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from heic import heic  # the HEIF tests' encoder
from photos import photo  # their photo-like pixels

from imgproxy.auth.signing import UrlSigner
from imgproxy.config import DEFAULT_INPUT_FORMATS, load_config
from imgproxy.transform.jobs import RenderSettings
from imgproxy.transform.params import OutputFormat, TransformSpec
from imgproxy.transform.policy import TransformPolicy

QUALITIES: Final = range(70, 90)  # one per connection: distinct variants of the same 300 px size
TRANSFORM_TOML: Final = """
[transform]
workers = {workers}
input_formats = {formats}

[cache]
variant_bytes = 0
metadata_ttl = 0
"""


@dataclass(frozen=True)
class Source:
    name: str
    width: int
    height: int
    tile: int  # 0: one picture, else the grid's tile size

    @property
    def key(self) -> str:
        return f"heic/{self.name}.heic"

    @property
    def thumbnail(self) -> tuple[int, int]:
        return 300, round(300 * self.height / self.width)


SOURCES: Final = (Source("phone", 4032, 3024, 512), Source("medium", 1600, 1200, 0))


def loop_worker(conn: Connection, sources: dict[str, bytes], settings: RenderSettings) -> None:
    """In a loop process: start as an image worker does (the HEIF opener, the pixel limit), send
    back each source's thumbnail size; then render the thumbnail of each source name received,
    answering each with the empty string (or what went wrong)."""
    from imgproxy.transform.heif import register_opener
    from imgproxy.transform.steps import render

    Image.MAX_IMAGE_PIXELS = settings.max_source_pixels
    spec = TransformSpec(width=300, height=None, fmt=OutputFormat.JPEG)
    if not register_opener():
        conn.send("pillow-heif is not installed (the heif extra)")
        return
    conn.send({name: (r.width, r.height) for name, data in sources.items()
               for r in [render(data, spec, OutputFormat.JPEG, settings)]})
    while (name := conn.recv()) is not None:
        render(sources[name], spec, OutputFormat.JPEG, settings)
        conn.send("")


def render_in(conn: Connection, name: str) -> Exchange:
    """One render of ``name``'s thumbnail by a loop process, as the load loop's exchange (the
    session is not used; the pipe's round trip is well under a millisecond of a render's 100+)."""
    async def exchange(session: aiohttp.ClientSession) -> tuple[str, str | None]:
        await asyncio.to_thread(conn.send, name)
        return str(await asyncio.to_thread(conn.recv)), None
    return exchange


@contextmanager
def loop_processes(count: int, sources: dict[str, bytes], settings: RenderSettings
                   ) -> Iterator[list[tuple[Connection, int]]]:
    with ExitStack() as stack:
        children = [stack.enter_context(spawned(loop_worker, sources, settings)) for _ in range(count)]
        for conn, _ in children:
            sizes = conn.recv() if conn.poll(300) else "it did not start"
            if sizes != {s.name: s.thumbnail for s in SOURCES}:
                raise BenchError(f"a loop process rendered {sizes}")
        yield children


def thumbnail_check(size: tuple[int, int]) -> Any:
    def check(response: aiohttp.ClientResponse, body: bytes) -> str:
        if response.status != 200:
            return f"HTTP {response.status}: {body[:200]!r}"
        image = Image.open(io.BytesIO(body))
        return "" if (image.format, image.size) == ("JPEG", size) else f"{image.format} {image.size}"
    return check


async def measure(args: argparse.Namespace, loop: list[tuple[Connection, int]], signer: UrlSigner,
                  pids: dict[str, dict[str, Any]]) -> list[Phase]:
    phases: list[Phase] = []
    async with session_for(args.concurrency, timeout=300) as session:
        for number in range(args.rounds + 1):  # round 0: the warm-up, not kept
            seconds = args.warmup if number == 0 else args.seconds
            for source in SOURCES:
                note(f"round {number}: loop-{source.name}, proxy-{source.name} ({seconds:g} s each)")
                phases.append(await run_exchanges(session, Phase(f"loop-{source.name}", number),
                                                  [render_in(conn, source.name) for conn, _ in loop],
                                                  seconds, len(loop), CpuMeter(pids[f"loop-{source.name}"])))
                urls = [signer.sign(SOURCE, source.key, ttl=3600,
                                    params={"w": "300", "fmt": "jpeg", "q": str(q)}) for q in QUALITIES]
                phases.append(await run_phase(session, Phase(f"proxy-{source.name}", number), urls, seconds,
                                              args.concurrency, CpuMeter(pids[f"proxy-{source.name}"]),
                                              thumbnail_check(source.thumbnail)))
    return [phase for phase in phases if phase.round > 0]


def report(phases: list[Phase]) -> tuple[str, dict[str, Any]]:
    lines = [f"{'source':<8}{'loop/s':>9}{'proxy/s':>9}{'ratio':>7}{'loop ms':>9}{'workers ms':>12}"
             f"{'x loop':>8}{'serving ms':>12}{'moto ms':>9}{'p50 ms':>8}{'errors':>8}"]
    rows: dict[str, dict[str, Any]] = {}
    for source in SOURCES:
        loop, served = merged(phases, f"loop-{source.name}"), merged(phases, f"proxy-{source.name}")
        loop_ms = loop.cpu_ms_per_request().get("loop", 0.0)
        cpu = served.cpu_ms_per_request()
        workers_ms = cpu.get("workers", 0.0)
        row: dict[str, Any] = {"loop_per_s": round(loop.rps, 2), "proxy_per_s": round(served.rps, 2),
               "ratio": round(served.rps / loop.rps, 3) if loop.rps else None,
               "loop_cpu_ms": loop_ms, "workers_cpu_ms": workers_ms,
               "serving_cpu_ms": cpu.get("proxy", 0.0), "moto_cpu_ms": cpu.get("moto", 0.0),
               "p50_ms": round(served.percentile_ms(0.5), 1), "errors": served.errors + loop.errors,
               "first_error": served.first_error, "idle_pct": served.cpu.get("idle"),
               "others_pct": served.cpu.get("others")}
        rows[source.name] = row
        workers_x = workers_ms / loop_ms if loop_ms else float("nan")
        row["workers_x_loop"] = round(workers_x, 3)
        lines.append(f"{source.name:<8}{row['loop_per_s']:>9.2f}{row['proxy_per_s']:>9.2f}"
                     f"{row['ratio'] or 0:>7.2f}"
                     f"{loop_ms:>9.1f}{row['workers_cpu_ms']:>12.1f}{workers_x:>8.2f}"
                     f"{row['serving_cpu_ms']:>12.2f}{row['moto_cpu_ms']:>9.2f}{row['p50_ms']:>8.0f}"
                     f"{row['errors']:>8}")
    lines.append("(per second: thumbnails; ms: CPU per thumbnail, the proxy's image workers against "
                 "the loop's processes; ratio: proxy/loop)")
    return "\n".join(lines), {"sources": rows}


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    signing_key = secrets.token_urlsafe(32)
    result: dict[str, Any] = {
        "bench": "imgproxy-heif", "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "python": platform.python_version(), "aiohttp": aiohttp.__version__, "pillow": PIL.__version__,
        "code": code_state(), "options": vars(args),
    }
    formats = [*DEFAULT_INPUT_FORMATS, "HEIF"]
    extra = TRANSFORM_TOML.format(workers=args.workers, formats=str(formats).replace("'", '"'))
    with ExitStack() as stack:
        storage = stack.enter_context(s3_server(workdir))
        s3 = s3_client(storage.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        data: dict[str, bytes] = {}
        for source in SOURCES:
            note(f"encoding a {source.width}x{source.height} photo-like HEIC")
            tiles = {"tile_size": source.tile} if source.tile else {}
            data[source.name] = heic(photo(source.width, source.height, seed=source.width), quality=80,
                                     enc_params={"preset": "ultrafast"}, **tiles)
            s3.put_object(Bucket=BUCKET, Key=source.key, Body=data[source.name], ContentType="image/heic")
        proxy_proc, proxy_url = stack.enter_context(proxy(workdir, storage.endpoint, signing_key,
                                                          name="proxy", extra_toml=extra))
        settings = TransformPolicy.from_config(load_config(workdir / "proxy.toml").transform,
                                               (OutputFormat.JPEG,)).settings
        loop = stack.enter_context(loop_processes(args.workers, data, settings))
        bench_pid, moto_pid = os.getpid(), storage.moto_pid
        workers = descendants(proxy_proc.pid)  # the forkserver and the image workers
        loop_pids = [pid for _, pid in loop]
        pids = {**{f"loop-{s.name}": {"moto": moto_pid, "bench": bench_pid, "loop": loop_pids}
                   for s in SOURCES},
                **{f"proxy-{s.name}": {"moto": moto_pid, "proxy": proxy_proc.pid, "workers": workers,
                                       "bench": bench_pid} for s in SOURCES}}
        result["sources"] = {s.name: {"width": s.width, "height": s.height, "tile": s.tile,
                                      "bytes": len(data[s.name])} for s in SOURCES}
        print(f"{args.workers} image workers (proxy) / loop processes on {os.cpu_count()} CPUs; "
              + "; ".join(f"{s.name}: {s.width}x{s.height} HEIC of {len(data[s.name]):,} bytes"
                          + (f" in {s.tile} px tiles" if s.tile else "") for s in SOURCES)
              + f"; w=300 fmt=jpeg, {args.concurrency} connections, {args.rounds} x {args.seconds:g} s per "
              f"side after {args.warmup:g} s warm-up; load avg at start {result['loadavg_start'][0]:.2f}")
        phases = asyncio.run(measure(args, loop, UrlSigner(signing_key, "bench", proxy_url), pids))
        text, measured = report(phases)
        sources = result.pop("sources")
        result.update(measured)
        for name, row in result["sources"].items():
            row.update(sources[name])
        print(text, flush=True)
    result["loadavg_end"] = os.getloadavg()
    return result


def failures(result: dict[str, Any]) -> list[str]:
    return [f"{name}: {row['errors']} errors, the first: {row['first_error']}"
            for name, row in result.get("sources", {}).items() if row["errors"]]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(parser, warmup=5.0, rounds_help="measured rounds per side")
    parser.add_argument("--workers", type=int, default=2, help="image workers, and loop processes (2)")
    parser.set_defaults(seconds=20.0, concurrency=4)
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 16 or not 1 <= args.concurrency <= len(QUALITIES) or args.rounds < 1:
        parser.error("--workers, --concurrency or --rounds is out of range")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, failures, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
