#!/usr/bin/env python3
"""Benchmark: one ~20 MB original delivered three ways: stream, redirect, accel (nginx).

Not a test. It measures and prints; it exits non-zero only when something *failed* (a process
would not start, a request errored, bytes came back wrong, a mode answered as another), never
because of a figure.

Separate processes on 127.0.0.1, so each one's CPU is visible:
  moto      S3-compatible server (its own Python process) holding the object
  proxy     one ``imgproxy serve`` with three sources on the same bucket, one per delivery mode
            (``[sources.NAME.delivery] mode``), transforms off
  nginx     ``deploy/nginx.conf`` rendered and run in the foreground (one worker), in front of
            the proxy for accel; listening plain HTTP unless --nginx-tls, as moto and the
            proxy do (in production TLS is paid in every mode: by nginx, or by S3)
  bench     this process: seeds the bucket, is the aiohttp load generator, checks every byte

The modes, each at --concurrency connections for --seconds per round, rounds interleaved
(stream, redirect, accel, stream, ...) after a warm-up of each:
  stream    client -> proxy -> moto; the proxy moves every byte
  redirect  client -> proxy (302 to a presigned URL), then client -> moto; the client follows
  accel     client -> nginx -> proxy (X-Accel-Redirect), then nginx -> moto -> nginx -> client
and, only if asked for (--modes), stream as deployed behind nginx (deploy/nginx-stream.conf):
  stream-nginx  client -> nginx -> proxy -> moto; the proxy and nginx both move every byte
Per mode: req/s, MB/s, p50/p99 (the whole download, redirect included) and the CPU seconds each
process spent per GB delivered (MB and GB are 10^6 and 10^9 bytes).

    .venv/bin/python bench/bench_delivery.py [--seconds 10] [--rounds 2] [--nginx-tls]
        [--modes stream,redirect,accel,stream-nginx] [--deploy-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import secrets
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import hdrs
from harness import (
    BUCKET,
    HOST,
    NOT_CPU,
    SOURCE,
    BenchError,
    CpuMeter,
    Exchange,
    Phase,
    add_load_options,
    descendants,
    free_port,
    merged,
    moto,
    note,
    proxy,
    run_exchanges,
    run_main,
    running,
    s3_client,
    session_for,
    source_toml,
)
from yarl import URL

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
import nginx_site  # the tests' way to run deploy/*.conf
from nginx_site import DEPLOY, NGINX, NginxError

from imgproxy.auth.signing import UrlSigner

KEY: Final = "large/bench-delivery.jpg"
MB: Final = 1_000_000
GB: Final = 1_000_000_000
TLS_LISTEN: Final = "listen ${LISTEN} ssl;"


# --- the proxy: one source per delivery mode ---------------------------------------------------

def sources_toml(endpoint: str) -> str:
    """Appended to harness.proxy_toml: SOURCE streams; "redirect" and "accel" are the same bucket
    delivered the other two ways. Transforms are off: no image workers to account for."""
    tables = [f'\n[sources.{SOURCE}.delivery]\nmode = "stream"\n']
    for mode in ("redirect", "accel"):
        tables.append(f'\n{source_toml(mode, endpoint)}\n[sources.{mode}.delivery]\nmode = "{mode}"\n')
    return "".join(tables) + "\n[transform]\nenabled = false\n"


# --- nginx in front, from deploy/nginx.conf (run by tests/nginx_site.py, as the tests run it) ---

@contextmanager
def nginx(workdir: Path, imgproxy_url: str, template_path: Path,
          tls: bool) -> Iterator[tuple[subprocess.Popen[bytes], str, ssl.SSLContext | None]]:
    """A site template (deploy/nginx.conf) in front of the proxy: (process, base URL, client TLS
    context or None). Without ``tls`` its one ``listen ... ssl`` becomes plain HTTP; nothing
    else is changed."""
    if NGINX is None:
        raise BenchError("the nginx binary is not installed (Debian: apt-get install nginx)")
    prefix = workdir / f"nginx-{template_path.stem}"
    certificate = nginx_site.make_tls(prefix)
    port = free_port()
    template = template_path.read_text(encoding="utf-8")
    if not tls:
        if template.count(TLS_LISTEN) != 1:
            raise BenchError(f"{template_path} has not exactly one {TLS_LISTEN!r}; use --nginx-tls")
        template = template.replace(TLS_LISTEN, TLS_LISTEN.replace(" ssl;", ";"))
    values = nginx_site.site_values(prefix, port, imgproxy_url.removeprefix("http://"), certificate)
    try:
        main = nginx_site.prepare(prefix, template_path.name, values, template)
    except KeyError as exc:
        raise BenchError(f"{template_path}: {exc.args[0]}") from None
    checked = nginx_site.check_config(prefix, main)
    if checked.returncode != 0:
        raise BenchError(f"nginx -t refused the rendered {template_path}:\n{checked.stderr}")
    with running(nginx_site.command(prefix, main), prefix / "stderr.log", stdin=subprocess.DEVNULL) as proc:
        def has_worker() -> bool:  # what accepts, and what will use the CPU
            return bool(descendants(proc.pid))

        try:
            nginx_site.wait_until_listening(prefix, port, proc.poll, ready=has_worker)
        except NginxError as exc:
            raise BenchError(str(exc)) from None
        yield proc, f"{'https' if tls else 'http'}://{HOST}:{port}", certificate.context if tls else None


def version_of_nginx() -> str:
    if NGINX is None:
        return ""
    answer = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return answer.stderr.strip().removeprefix("nginx version: ")


# --- load generation ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    source: str  # the proxy's source, whose delivery mode is the one measured
    delivery: str  # what the answer's X-Delivery header must say
    site: str | None = None  # the deploy/ file of the nginx in front; None: straight to the proxy


ROUTES: Final = {
    "stream": Route(SOURCE, "stream"),
    "redirect": Route("redirect", "redirect"),
    "accel": Route("accel", "accel", "nginx.conf"),
    "stream-nginx": Route(SOURCE, "stream", "nginx-stream.conf"),
}
DEFAULT_MODES: Final = ("stream", "redirect", "accel")


@dataclass(frozen=True)
class Mode:
    name: str
    delivery: str
    url: str  # the signed URL every connection GETs
    tls: ssl.SSLContext | None = None  # behind nginx with --nginx-tls


async def read_exact(response: aiohttp.ClientResponse, expected: bytes) -> str:
    """Read the body chunk by chunk, comparing as it comes; "" when it is exactly ``expected``."""
    if response.status != 200:
        return f"HTTP {response.status}"
    received = 0
    async for chunk in response.content.iter_any():
        if chunk != expected[received:received + len(chunk)]:
            return f"bytes differ within {received}..{received + len(chunk)}"
        received += len(chunk)
    return "" if received == len(expected) else f"{received} bytes instead of {len(expected)}"


async def fetch_once(session: aiohttp.ClientSession, mode: Mode, expected: bytes) -> str:
    """One delivery; for redirect, the proxy's 302 and then the GET of its Location."""
    async with session.get(mode.url, allow_redirects=False, ssl=mode.tls or True) as answer:
        delivery = answer.headers.get("X-Delivery", "-")
        if delivery != mode.delivery:
            return f"HTTP {answer.status} with X-Delivery {delivery!r}, expected {mode.delivery!r}"
        if mode.delivery != "redirect":
            return await read_exact(answer, expected)
        await answer.read()
        location = answer.headers.get(hdrs.LOCATION, "")
        if answer.status != 302 or not location:
            return f"HTTP {answer.status}, Location {'present' if location else 'missing'}; expected 302"
    async with session.get(URL(location, encoded=True), allow_redirects=False) as s3_answer:
        return await read_exact(s3_answer, expected)


def deliveries(mode: Mode, expected: bytes) -> list[Exchange]:
    """What every connection of a phase does, for harness.run_exchanges: fetch_once, no tally."""
    async def exchange(session: aiohttp.ClientSession) -> tuple[str, str | None]:
        return await fetch_once(session, mode, expected), None
    return [exchange]


async def measure(modes: list[Mode], expected: bytes, args: argparse.Namespace,
                  meter: CpuMeter) -> list[Phase]:
    """Warm up each mode, then run them in turn for args.rounds rounds (one session per mode)."""
    phases: list[Phase] = []
    async with contextlib.AsyncExitStack() as stack:
        sessions = {mode.name: await stack.enter_async_context(session_for(args.concurrency))
                    for mode in modes}
        for mode in modes:
            warm = await run_exchanges(sessions[mode.name], Phase(mode.name, 0), deliveries(mode, expected),
                                       args.warmup, args.concurrency, meter)
            note(f"warm-up {mode.name}: {warm.requests} downloads, {warm.errors} errors")
            if warm.errors:
                raise BenchError(f"{mode.name} warm-up failed: {warm.first_error}")
        for number in range(1, args.rounds + 1):
            for mode in modes:
                phase = await run_exchanges(sessions[mode.name], Phase(mode.name, number),
                                            deliveries(mode, expected), args.seconds, args.concurrency, meter)
                note(f"round {number} {mode.name}: {phase.rps:.1f} req/s, {phase.errors} errors")
                phases.append(phase)
    return phases


# --- report ------------------------------------------------------------------------------------

def cpu_seconds_per_gb(phase: Phase, size: int) -> dict[str, float]:
    """CPU seconds each of our processes spent per GB delivered (contention-robust)."""
    delivered = phase.requests * size / GB
    if not delivered:
        return {}
    return {name: round(pct / 100.0 * phase.wall / delivered, 3)
            for name, pct in phase.cpu.items() if name not in NOT_CPU}


def phase_json(phase: Phase, size: int) -> dict[str, Any]:
    return {
        "mode": phase.side, "round": phase.round, "seconds": round(phase.wall, 2),
        "requests": phase.requests, "errors": phase.errors, "first_error": phase.first_error,
        "rps": round(phase.rps, 2), "mb_per_s": round(phase.rps * size / MB, 1),
        "p50_ms": round(phase.percentile_ms(0.50), 1), "p99_ms": round(phase.percentile_ms(0.99), 1),
        "cpu_pct_of_one_core": phase.cpu, "cpu_s_per_gb": cpu_seconds_per_gb(phase, size),
    }


PROCESSES: Final = ("proxy", "moto", "nginx", "bench")


def report(phases: list[Phase], size: int) -> tuple[str, dict[str, Any]]:
    totals = [merged(phases, name) for name in ROUTES if any(p.side == name for p in phases)]
    head = (f"{'mode':<13}{'round':>6}{'req/s':>7}{'MB/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'err':>4}"
            "  CPU s per GB:" + "".join(f"{name:>7}" for name in PROCESSES)
            + "   % of a core:" + "".join(f"{name:>7}" for name in (*PROCESSES, "others", "idle")))
    lines = [head, "-" * len(head)]
    for phase in [*phases, *totals]:
        per_gb = cpu_seconds_per_gb(phase, size)
        lines.append(
            f"{phase.side:<13}{phase.round or 'all':>6}{phase.rps:>7.2f}{phase.rps * size / MB:>7.0f}"
            f"{phase.percentile_ms(0.5):>8.0f}{phase.percentile_ms(0.99):>8.0f}{phase.errors:>4}"
            f"  {'':<13}" + "".join(f"{per_gb.get(name, 0.0):>7.2f}" for name in PROCESSES)
            + f"   {'':<13}" + "".join(f"{phase.cpu.get(name, 0.0):>7.0f}"
                                       for name in (*PROCESSES, "others", "idle")))
        if phase is phases[-1]:
            lines.append("-" * len(head))
    stream = next((t for t in totals if t.side == "stream"), None)
    if stream is not None and (base := cpu_seconds_per_gb(stream, size).get("proxy")):
        lines.append("proxy CPU per GB relative to stream: " + ", ".join(
            f"{t.side} {cpu_seconds_per_gb(t, size).get('proxy', 0.0) / base:.3f}" for t in totals))
    result = {
        "object_bytes": size,
        "modes": {t.side: phase_json(t, size) for t in totals},
        "phases": [phase_json(p, size) for p in phases],
    }
    return "\n".join(lines), result


ARRANGEMENT: Final = (
    "processes: moto | imgproxy serve (sources for stream, redirect, accel) | nginx (deploy/nginx.conf "
    "for accel, nginx-stream.conf for stream-nginx; 1 worker, {scheme}) | bench = aiohttp load "
    "generator checking every byte; all on {cpus} CPUs shared with anything else running ('others' "
    "column). Every byte comes from moto in every mode; what differs is who carries it to the "
    "client: the proxy (stream), nobody (redirect: the client reads moto directly), nginx (accel), "
    "the proxy and then nginx (stream-nginx)."
)


# --- main --------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(parser, warmup=3.0, rounds_help="rounds of the modes")
    parser.add_argument("--size-mb", type=float, default=20.0, help="object size in MB of 10^6 bytes (20)")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        help=f"comma-separated, of {','.join(ROUTES)} ({','.join(DEFAULT_MODES)})")
    parser.add_argument("--nginx-tls", action="store_true",
                        help="nginx listens with TLS as shipped (default: the same file, plain HTTP)")
    parser.add_argument("--deploy-dir", type=Path, default=DEPLOY, metavar="DIR",
                        help="where nginx.conf and nginx-stream.conf are, to try a change (deploy/)")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or set(args.modes) - ROUTES.keys() or len(set(args.modes)) != len(args.modes):
        parser.error(f"--modes: a comma-separated subset of {','.join(ROUTES)}")
    if not (0 < args.seconds <= 3600 and 0 <= args.warmup <= 600 and 1 <= args.rounds <= 20
            and 1 <= args.concurrency <= 256 and 0.001 <= args.size_mb <= 500):
        parser.error("an option is out of range")
    return args


def git_state() -> str:
    """HEAD's short hash, and "+dirty" when imgproxy/ or deploy/ differ from it (what was measured)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "imgproxy", "deploy"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    signing_key = secrets.token_urlsafe(32)
    size = round(args.size_mb * MB)
    result: dict[str, Any] = {
        "bench": "imgproxy-delivery", "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "python": platform.python_version(), "aiohttp": aiohttp.__version__,
        "nginx": version_of_nginx(), "git": git_state(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    with ExitStack() as stack:
        moto_proc, endpoint = stack.enter_context(moto(workdir))
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        data = random.Random(20).randbytes(size)  # incompressible, like a photo
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=data, ContentType="image/jpeg")
        proxy_proc, proxy_url = stack.enter_context(
            proxy(workdir, endpoint, signing_key, extra_toml=sources_toml(endpoint)))
        pids: dict[str, int | list[int]] = {"proxy": [proxy_proc.pid, *descendants(proxy_proc.pid)],
                                            "moto": moto_proc.pid, "bench": os.getpid()}
        fronts: dict[str, tuple[str, ssl.SSLContext | None]] = {}  # site file -> (URL, TLS)
        nginx_pids: list[int] = []  # one group: only one of the nginx instances works at a time
        for site in sorted({route.site for name in args.modes if (route := ROUTES[name]).site}):
            nginx_proc, nginx_url, tls = stack.enter_context(
                nginx(workdir, proxy_url, args.deploy_dir / site, args.nginx_tls))
            nginx_pids += [nginx_proc.pid, *descendants(nginx_proc.pid)]
            fronts[site] = nginx_url, tls
        pids["nginx"] = nginx_pids
        modes = []
        for name in args.modes:
            route = ROUTES[name]
            base_url, tls = fronts[route.site] if route.site else (proxy_url, None)
            signer = UrlSigner(signing_key, "bench", base_url)
            modes.append(Mode(name, route.delivery, signer.sign(route.source, KEY, ttl=3600), tls))
        print(ARRANGEMENT.format(cpus=os.cpu_count(), scheme="HTTPS" if args.nginx_tls else "plain HTTP"))
        print(f"{size:,}-byte object, {args.concurrency} clients, {args.rounds} x {args.seconds:g} s "
              f"per mode after {args.warmup:g} s warm-up; load avg at start "
              f"{result['loadavg_start'][0]:.2f}; imgproxy at {result['git']}")
        phases = asyncio.run(measure(modes, data, args, CpuMeter(pids)))
        text, measured = report(phases, size)
        result.update(measured)
        print(text, flush=True)
    result["loadavg_end"] = os.getloadavg()
    return result


def failures(result: dict[str, Any]) -> list[str]:
    found = []
    for name, mode in result.get("modes", {}).items():
        if mode["errors"]:
            found.append(f"{name}: {mode['errors']} failed requests, first: {mode['first_error']}")
        if not mode["requests"]:
            found.append(f"{name}: no request completed")
    return found


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, failures, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
