"""Benchmark: one host, one cache. A second view's hit rate, and cache hits per second, at
``imgproxy serve --workers 1``, ``2`` and ``4``, against nginx serving the same bytes from disk.

For each worker count, one ``imgproxy serve`` (``transform.workers = 1`` per serving worker:
the host has few cores):

- **second view**: THUMBNAILS distinct thumbnails of one photo, each fetched once, then each
  again, every request on a new connection (the kernel spreads them over the workers). The hit
  rate is the second pass's ``X-Cache: HIT`` share (before the host cache, 2 workers: 19 of 40);
  ``renders`` is the first pass's ``MISS`` count (one per thumbnail: each rendered once).
- **hits/s**: those thumbnails, all cached, at ``--concurrency`` keep-alive connections for
  ``--seconds`` per round; CPU per request of the proxy's processes and of the load generator.

nginx (one worker, ``sendfile on``) serves the second pass's bytes as files from a directory,
measured the same way: the floor for "bytes from this host's disk".

    .venv/bin/python bench/bench_host_cache.py [--seconds 5] [--rounds 2] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import secrets
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Final

import aiohttp
from harness import (
    BUCKET,
    HOST,
    SOURCE,
    BenchError,
    CpuMeter,
    Phase,
    add_load_options,
    descendants,
    expect_size,
    free_port,
    get_checked,
    merged,
    moto,
    note,
    proxy,
    run_exchanges,
    run_main,
    running,
    s3_client,
    session_for,
)

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
import nginx_site  # the tests' way to run nginx
from photos import photo_jpeg

from imgproxy.auth.signing import UrlSigner

THUMBNAILS: Final = 40
KEY: Final = "photos/host-cache.jpg"
TARGET_HIT_RATE: Final = 1.0  # every second view a hit, whatever the worker count


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_options(parser, warmup=1.0, rounds_help="rounds per side")
    parser.add_argument("--workers", default="1,1dir,2,4",
                        help="serving worker counts; 1dir: one worker with cache.dir set (1,1dir,2,4)")
    return parser.parse_args(argv)


def fetch(url: str) -> tuple[int, str, bytes]:
    """One GET on a connection of its own: status, X-Cache, body."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(HOST, parts.port, timeout=60)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}")
        response = connection.getresponse()
        return response.status, response.getheader("X-Cache", "-"), response.read()
    finally:
        connection.close()


@contextmanager
def static_nginx(workdir: Path, root: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """nginx serving ``root``'s files (one worker, sendfile, keep-alive), as deployed nginx would."""
    prefix, port = workdir / "nginx-static", free_port()
    prefix.mkdir()
    site = prefix / "static.conf"
    site.write_text(f"""
server {{
    listen {HOST}:{port};
    keepalive_requests 100000;
    sendfile on;
    tcp_nopush on;
    location / {{ root {root}; }}
}}
""", encoding="utf-8")
    main = prefix / nginx_site.MAIN_CONFIG
    main.write_text(nginx_site.main_config(prefix, site, access_log=False), encoding="utf-8")
    with running(nginx_site.command(prefix, main), prefix / "stderr.log", stdin=subprocess.DEVNULL) as proc:
        nginx_site.wait_until_listening(prefix, port, proc.poll)
        yield proc, f"http://{HOST}:{port}"


async def hits_per_second(side: str, urls: list[str], sizes: list[int], pids: dict[str, Any],
                          args: argparse.Namespace) -> list[Phase]:
    """Warm-up, then ``args.rounds`` phases; connection i fetches urls[i % len(urls)] over and over."""
    phases = []
    exchanges = [get_checked(url, expect_size(size), "X-Cache")
                 for url, size in zip(urls, sizes, strict=True)]
    async with session_for(args.concurrency) as session:
        for number in range(args.rounds + 1):
            groups = {name: [pid, *descendants(pid)] for name, pid in pids.items()}
            phase = await run_exchanges(session, Phase(side, number), exchanges,
                                        args.warmup if number == 0 else args.seconds, args.concurrency,
                                        CpuMeter(groups))
            if phase.errors:
                raise BenchError(f"{side}: {phase.errors} failed requests, first: {phase.first_error}")
            if number:
                phases.append(phase)
                note(f"round {number} {side}: {phase.rps:,.0f}/s")
    return phases


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sides = args.workers.split(",")
    signing_key = secrets.token_urlsafe(32)
    result: dict[str, Any] = {
        "bench": "imgproxy-host-cache", "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "python": platform.python_version(), "aiohttp": aiohttp.__version__,
        "options": vars(args), "sides": {},
    }
    files = workdir / "static"
    workdir.chmod(0o711)  # nginx's worker (another user when run as root) reaches the files
    with ExitStack() as stack:
        moto_proc, endpoint = stack.enter_context(moto(workdir))
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=photo_jpeg(1600, 1200, seed=5), ContentType="image/jpeg")
        widths = range(200, 200 + THUMBNAILS)
        for name in sides:
            count = int(name.removesuffix("dir"))
            extra = "\n[transform]\nworkers = 1\n"
            if name.endswith("dir"):  # the host cache with one process: its own cost, apart from sharing
                extra += f"\n[cache]\ndir = {json.dumps(str(workdir / 'host-cache'))}\n"
            with proxy(workdir, endpoint, signing_key, name=f"proxy-{name}", workers=count,
                       extra_toml=extra) as (proxy_proc, url):
                signer = UrlSigner(signing_key, "bench", url)
                urls = [signer.sign(SOURCE, KEY, ttl=3600, params={"w": str(w), "fmt": "jpeg"})
                        for w in widths]
                first = [fetch(u) for u in urls]
                second = [fetch(u) for u in urls]
                if any(status != 200 for status, _, _ in first + second):
                    raise BenchError(f"--workers {count}: a thumbnail was not 200")
                if [b for _, _, b in first] != [b for _, _, b in second]:
                    raise BenchError(f"--workers {count}: a second view's bytes differ from the first's")
                hits = sum(cache == "HIT" for _, cache, _ in second)
                renders = sum(cache == "MISS" for _, cache, _ in first)
                note(f"--workers {name}: second view {hits}/{THUMBNAILS} hits, {renders} renders")
                if not files.exists():
                    files.mkdir(mode=0o755)
                    for w, (_, _, body) in zip(widths, second, strict=True):
                        (files / f"t{w}.jpg").write_bytes(body)
                        (files / f"t{w}.jpg").chmod(0o644)
                sizes = [len(b) for _, _, b in second]
                phases = asyncio.run(hits_per_second(
                    f"workers-{name}", urls, sizes, {"proxy": proxy_proc.pid, "bench": os.getpid()}, args))
                total = merged(phases, f"workers-{name}")
                result["sides"][f"workers-{name}"] = {
                    "second_view_hits": hits, "first_view_renders": renders, "thumbnails": THUMBNAILS,
                    "rps": round(total.rps, 1), "p50_ms": round(total.percentile_ms(0.5), 2),
                    "p99_ms": round(total.percentile_ms(0.99), 2), "cpu_ms": total.cpu_ms_per_request(),
                    "x_cache": dict(total.tally), "rounds": [round(p.rps, 1) for p in phases],
                }
        with static_nginx(workdir, files) as (nginx_proc, nginx_url):
            urls = [f"{nginx_url}/t{w}.jpg" for w in widths]
            sizes = [(files / f"t{w}.jpg").stat().st_size for w in widths]
            phases = asyncio.run(hits_per_second("nginx", urls, sizes,
                                                 {"proxy": nginx_proc.pid, "bench": os.getpid()}, args))
            total = merged(phases, "nginx")
            result["sides"]["nginx"] = {
                "rps": round(total.rps, 1), "p50_ms": round(total.percentile_ms(0.5), 2),
                "p99_ms": round(total.percentile_ms(0.99), 2), "cpu_ms": total.cpu_ms_per_request(),
                "rounds": [round(p.rps, 1) for p in phases]}
        del moto_proc
    result["loadavg_end"] = os.getloadavg()
    result["arrangement"] = (f"1600x1200 JPEG, {THUMBNAILS} thumbnails w=200-{199 + THUMBNAILS}, fmt=jpeg; "
                             f"{args.concurrency} keep-alive connections, {args.rounds} x {args.seconds:g} s "
                             f"per side after {args.warmup:g} s; "
                             f"load avg at start {result['loadavg_start'][0]:.2f}")
    print(result["arrangement"])
    print(report(result), flush=True)
    return result


def report(result: dict[str, Any]) -> str:
    nginx = result["sides"]["nginx"]["rps"]
    lines = [f"{'side':<15}{'2nd view hits':>14}{'renders':>9}{'hits/s':>9}{'÷ nginx':>9}{'p50 ms':>8}"
             f"{'p99 ms':>8}  CPU ms/request (server, bench)"]
    for side, row in result["sides"].items():
        hits = f"{row['second_view_hits']}/{row['thumbnails']}" if "thumbnails" in row else "-"
        renders = str(row.get("first_view_renders", "-"))
        cpu = row["cpu_ms"]
        lines.append(f"{side:<15}{hits:>14}{renders:>9}{row['rps']:>9,.0f}{row['rps'] / nginx:>9.2f}"
                     f"{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}  {cpu.get('proxy', 0):.2f}, "
                     f"{cpu.get('bench', 0):.2f}")
    return "\n".join(lines)


def failures(result: dict[str, Any]) -> list[str]:
    return [f"{side}: second view {row['second_view_hits']}/{row['thumbnails']} hits (target all)"
            for side, row in result["sides"].items()
            if "thumbnails" in row and row["second_view_hits"] < TARGET_HIT_RATE * row["thumbnails"]]


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, failures, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
