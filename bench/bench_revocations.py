#!/usr/bin/env python3
"""Benchmark: what 20 scoped keys and 10,000 revocation entries cost a signed original.

Not a test. Two ``imgproxy serve`` processes on the same moto, started side by side:

  plain    one signing key, no scopes, no revocations (what every URL cost before issue 13)
  loaded   20 keys with scopes (the URL's key the last one), and 10,000 revocations of every
           kind: signatures, key prefixes and exact keys of the URL's source, viewers and key
           ids revoked before a time (none of them revokes the measured URLs)

Each serves the same small JPEG as a streamed original (``delivery.mode = "stream"``), signed
URLs that carry ``sub`` and ``iat`` (what the revocation check looks at), at --concurrency
connections. The sides alternate (plain, loaded, plain, loaded, ...) after a warm-up of each,
so drift shows. Reported: req/s and the proxy's CPU per request for each side, and
loaded/plain throughput (target: a change under 5%, i.e. a ratio >= 0.95). Then (b): the
authorization step alone in this process, microseconds per URL for each [auth] (best of 5): the
steadiest figure on a busy host.

    .venv/bin/python bench/bench_revocations.py [--seconds 10] [--rounds 2] [--size-kb 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

import aiohttp
from bench_stream import jpeg_near
from harness import (
    BUCKET,
    SOURCE,
    BenchError,
    CpuMeter,
    Phase,
    add_load_options,
    code_state,
    expect_size,
    merged,
    moto,
    note,
    proxy,
    run_main,
    run_phase,
    s3_client,
    session_for,
)

from imgproxy.auth.signing import UrlSigner

KEY: Final = "people/ada lovelace.jpg"
KEYS: Final = 20
ENTRIES: Final = 10_000
TARGET_RATIO: Final = 0.95
STREAM_ONLY: Final = '\n[delivery]\nmode = "stream"\n'
URLS_PER_SIDE: Final = 64  # distinct signed URLs (distinct sub), so no single one is special


def plain_auth(secret: str) -> str:
    return "\n".join(["[auth]", 'max_ttl = "1d"', "", "[auth.keys]", f"bench = {json.dumps(secret)}", ""])


def loaded_auth(secret: str) -> str:
    """20 keys (the measured one, ``bench``, last) and 10,000 revocations that spare its URLs."""
    q = json.dumps
    lines = ["[auth]", 'max_ttl = "1d"', 'sign_with = "bench"', "revocations = ["]
    quarter = ENTRIES // 4
    lines += [f'  {{sig = "{i:043d}"}},' for i in range(quarter)]
    lines += [f'  {{scope = "{SOURCE}:people/revoked-{i}/*"}},' for i in range(quarter)]
    lines += [f'  {{scope = "{SOURCE}:people/gone-{i}.jpg"}},' for i in range(quarter)]
    lines += [f'  {{sub = "left-{i}@example.com", before = "2026-01-01T00:00:00Z"}},'
              for i in range(quarter - KEYS)]
    lines += [f'  {{kid = "k{i}", before = "2026-01-01T00:00:00Z"}},' for i in range(KEYS)]
    lines += ["]", ""]
    for i in range(KEYS - 1):
        lines += [f"[auth.keys.k{i}]", f"secret = {q(secrets.token_urlsafe(32))}",
                  f'scopes = ["{SOURCE}:team-{i}/*", "{SOURCE}:shared-{i}/*"]', ""]
    lines += ["[auth.keys.bench]", f"secret = {q(secret)}",
              f'scopes = ["{SOURCE}:logos/*", "{SOURCE}:people/*"]', "durable = true", ""]
    return "\n".join(lines)


async def alternate(urls: dict[str, list[str]], size: int, args: argparse.Namespace,
                    meter: CpuMeter) -> list[Phase]:
    phases: list[Phase] = []
    async with session_for(args.concurrency) as session:
        for side in urls:
            warm = await run_phase(session, Phase(side, 0), urls[side], args.warmup, args.concurrency,
                                   meter, expect_size(size))
            note(f"warm-up {side}: {warm.rps:.0f} req/s, {warm.errors} errors")
            if warm.errors:
                raise BenchError(f"{side} warm-up failed: {warm.first_error}")
        for number in range(1, args.rounds + 1):
            for side in urls:
                phase = await run_phase(session, Phase(side, number), urls[side], args.seconds,
                                        args.concurrency, meter, expect_size(size))
                note(f"round {number} {side}: {phase.rps:.0f} req/s")
                phases.append(phase)
    return phases


def table(phases: list[Phase]) -> tuple[str, dict[str, Any]]:
    rows = [*phases, merged(phases, "plain"), merged(phases, "loaded")]
    head = (f"{'side':<8}{'round':>6}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
            f"   cpu %: {'moto':>5}{'plain':>6}{'loaded':>7}{'bench':>6}{'others':>7}{'idle':>5}"
            f"   proxy CPU ms/req")
    lines = [head, "-" * len(head)]
    for phase in rows:
        c = phase.cpu
        per = phase.cpu_ms_per_request().get(phase.side, 0.0)
        lines.append(
            f"{phase.side:<8}{phase.round or 'all':>6}{phase.rps:>8.0f}{phase.percentile_ms(0.5):>8.1f}"
            f"{phase.percentile_ms(0.99):>8.1f}{phase.errors:>7}   {'':<7}{c.get('moto', 0):>5.0f}"
            f"{c.get('plain', 0):>6.0f}{c.get('loaded', 0):>7.0f}{c.get('bench', 0):>6.0f}"
            f"{c.get('others', 0):>7.0f}{c.get('idle', 0):>5.0f}   {per:>8.3f}")
    plain, loaded = rows[-2], rows[-1]
    ratio = loaded.rps / plain.rps if plain.rps else 0.0
    cpu_plain = plain.cpu_ms_per_request().get("plain", 0.0)
    cpu_loaded = loaded.cpu_ms_per_request().get("loaded", 0.0)
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    lines.append(f"loaded/plain throughput: {ratio:.3f} - {verdict} target >= {TARGET_RATIO} "
                 f"(a change under 5%); proxy CPU per request {cpu_plain:.3f} -> {cpu_loaded:.3f} ms")
    result = {
        "ratio": round(ratio, 3), "target_ratio": TARGET_RATIO,
        "plain": {"rps": round(plain.rps, 1), "errors": plain.errors, "proxy_cpu_ms": cpu_plain,
                  "p50_ms": round(plain.percentile_ms(0.5), 2)},
        "loaded": {"rps": round(loaded.rps, 1), "errors": loaded.errors, "proxy_cpu_ms": cpu_loaded,
                   "p50_ms": round(loaded.percentile_ms(0.5), 2)},
        "rounds": [{"side": p.side, "round": p.round, "rps": round(p.rps, 1)} for p in phases],
    }
    return "\n".join(lines), result


def authorize_cost(secret: str, repeat: int = 20_000) -> dict[str, float]:
    """(b) ``principal.authorize`` alone, in this process: microseconds per signed URL with the
    plain and the loaded [auth], the same URLs (with sub and iat) as the load uses."""
    import time
    import tomllib

    from imgproxy.auth.principal import AuthPolicy, authorize
    from imgproxy.auth.signing import parse_query
    from imgproxy.config import parse_config
    from imgproxy.protocol.paths import parse_image_path

    source = f'[sources.{SOURCE}]\nbucket = "{BUCKET}"\n'
    urls = [UrlSigner(secret, "bench").sign(SOURCE, KEY, ttl=3600, sub=f"viewer-{i}@x.org")
            for i in range(URLS_PER_SIDE)]
    parsed = [(parse_image_path(u), parse_query(u.partition("?")[2], 32)) for u in urls]
    now = time.time()
    cost = {}
    for side, auth in (("plain", plain_auth(secret)), ("loaded", loaded_auth(secret))):
        policy = AuthPolicy.from_config(parse_config(tomllib.loads(auth + source), environ={}))
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for i in range(repeat):
                path, params = parsed[i % len(parsed)]
                authorize(path.source, path.key, params, None, policy, now)
            best = min(best, (time.perf_counter() - started) / repeat)
        cost[side] = round(best * 1e6, 2)
    return cost


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    secret = secrets.token_urlsafe(32)
    result: dict[str, Any] = {
        "bench": "imgproxy-revocations", "cpus": os.cpu_count(), "code": code_state(),
        "python": platform.python_version(), "aiohttp": aiohttp.__version__,
        "loadavg_start": os.getloadavg(), "options": vars(args),
    }
    with ExitStack() as stack:
        moto_proc, endpoint = stack.enter_context(moto(workdir))
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        image = jpeg_near(args.size_kb * 1000)
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=image, ContentType="image/jpeg")
        plain_proc, plain_url = stack.enter_context(proxy(
            workdir, endpoint, secret, extra_toml=STREAM_ONLY, name="plain", auth=plain_auth(secret)))
        loaded_proc, loaded_url = stack.enter_context(proxy(
            workdir, endpoint, secret, extra_toml=STREAM_ONLY, name="loaded", auth=loaded_auth(secret)))
        urls = {side: [UrlSigner(secret, "bench", base).sign(SOURCE, KEY, ttl=3600, sub=f"viewer-{i}@x.org")
                       for i in range(URLS_PER_SIDE)]
                for side, base in (("plain", plain_url), ("loaded", loaded_url))}
        meter = CpuMeter({"moto": moto_proc.pid, "plain": plain_proc.pid, "loaded": loaded_proc.pid,
                          "bench": os.getpid()})
        print(f"{len(image):,}-byte JPEG streamed, {args.concurrency} connections, {args.rounds} x "
              f"{args.seconds:g} s per side after {args.warmup:g} s warm-up; loaded: {KEYS} keys, "
              f"{ENTRIES:,} revocation entries")
        phases = asyncio.run(alternate(urls, len(image), args, meter))
        text, result["result"] = table(phases)
        print(text, flush=True)
    cost = result["authorize_us"] = authorize_cost(secret)
    print(f"(b) principal.authorize alone, best of 5 x 20,000 signed URLs: plain {cost['plain']:.1f} us, "
          f"loaded {cost['loaded']:.1f} us per URL (+{cost['loaded'] - cost['plain']:.1f} us)")
    result["loadavg_end"] = os.getloadavg()
    return result


def failures(result: dict[str, Any]) -> list[str]:
    found = []
    for side in ("plain", "loaded"):
        errors = result.get("result", {}).get(side, {}).get("errors")
        if errors:
            found.append(f"{side}: {errors} failed requests")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(parser, warmup=2.0, rounds_help="measured rounds per side")
    parser.add_argument("--size-kb", type=int, default=20, help="the JPEG's size in kB (20)")
    return run_main(bench, failures, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
