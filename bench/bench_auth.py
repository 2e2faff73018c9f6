#!/usr/bin/env python3
"""Benchmark: what each way of authorizing costs a small streamed original, as req/s against a
signed URL's in the same run.

Not a test. Rows (one function each in ``ROWS``: add one to measure another credential):

  signature         a signed URL (the baseline)
  jwt               ``Authorization: Bearer <JWT>`` of a local IdP (its keys fetched once, cached)
  grant             a cookie grant (``POST /session`` with that JWT, once): a plain URL with ``Cookie``
  webhook-cached    the same JWT on a server with ``[auth.webhook]``, decisions cached (60 s)
  webhook-uncached  the same, ``cache_ttl = 0``: one webhook call per request

Three ``imgproxy serve`` processes on one moto: ``plain`` (signature, jwt, grant), ``cached`` and
``uncached`` (the webhook rows); the fake webhook (aiohttp, ``{"result": true}``) is a process
of its own on loopback, and the IdP a thread of this one (asked once per server). Each row is
the same small JPEG (``delivery.mode = "stream"``) at --concurrency connections; the rows
alternate (signature, jwt, ..., signature, jwt, ...) after a warm-up of each, so drift shows.
Reported per row: req/s, p50/p99, the serving proxy's CPU per request (and the webhook's), and
the ratio to the signature row's req/s (target: jwt, grant and webhook-cached >= 0.90).

    .venv/bin/python bench/bench_auth.py [--seconds 5] [--rounds 2] [--size-kb 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web
from bench_stream import jpeg_near
from harness import (
    BUCKET,
    HOST,
    SOURCE,
    BenchError,
    Check,
    CpuMeter,
    Exchange,
    Phase,
    add_load_options,
    code_state,
    expect_size,
    free_port,
    merged,
    moto,
    note,
    proxy,
    receive,
    run_exchanges,
    run_main,
    s3_client,
    session_for,
    spawned,
)

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from idp import AUDIENCE, FakeIdp

from imgproxy.auth.signing import UrlSigner

KEY: Final = "people/ada lovelace.jpg"
TARGET_RATIO: Final = 0.90
STREAM_ONLY: Final = '\n[delivery]\nmode = "stream"\n'
BASELINE: Final = "signature"


@dataclass(frozen=True)
class Servers:
    """What a row needs to build its requests: each server's base URL, the signing key, the IdP."""

    base: Mapping[str, str]  # server name (plain, cached, uncached) -> http://127.0.0.1:PORT
    signing_key: str
    idp: FakeIdp
    now: float


@dataclass(frozen=True)
class Row:
    server: str  # whose CPU is this row's
    exchanges: Callable[[Servers, Check], list[Exchange]]


def get_with(url: str, headers: Mapping[str, str], check: Check) -> Exchange:
    """GET ``url`` with ``headers``, read the whole body, ``check`` it."""
    async def exchange(session: aiohttp.ClientSession) -> tuple[str, str | None]:
        async with session.get(url, headers=headers, allow_redirects=False) as response:
            return check(response, await response.read()), None
    return exchange


def image_url(servers: Servers, server: str) -> str:
    return f"{servers.base[server]}/img/{SOURCE}/{KEY.replace(' ', '%20')}"


def signature_row(servers: Servers, check: Check) -> list[Exchange]:
    signer = UrlSigner(servers.signing_key, "bench", servers.base["plain"])
    return [get_with(signer.sign(SOURCE, KEY, ttl=3600), {}, check)]


def jwt_exchanges(server: str) -> Callable[[Servers, Check], list[Exchange]]:
    def build(servers: Servers, check: Check) -> list[Exchange]:
        token = servers.idp.token(servers.now, exp=int(servers.now) + 3600)
        return [get_with(image_url(servers, server), {"Authorization": f"Bearer {token}"}, check)]
    return build


def grant_row(servers: Servers, check: Check) -> list[Exchange]:
    """``POST /session`` once with the JWT; then plain URLs carrying the cookie it set."""
    token = servers.idp.token(servers.now, exp=int(servers.now) + 3600)
    request = urllib.request.Request(  # noqa: S310 - our loopback server
        servers.base["plain"] + "/session", data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our loopback server
        cookie = response.headers["Set-Cookie"].split(";")[0]
    return [get_with(image_url(servers, "plain"), {"Cookie": cookie}, check)]


ROWS: Final[dict[str, Row]] = {
    BASELINE: Row("plain", signature_row),
    "jwt": Row("plain", jwt_exchanges("plain")),
    "grant": Row("plain", grant_row),
    "webhook-cached": Row("cached", jwt_exchanges("cached")),
    "webhook-uncached": Row("uncached", jwt_exchanges("uncached")),
}


def auth_toml(secret: str, idp: FakeIdp, webhook: str | None, cache_ttl: str) -> str:
    q = json.dumps
    lines = ["[auth]", 'max_ttl = "1d"', f"keys = {{ bench = {q(secret)} }}", "",
             "[auth.oidc.bench]", f"issuer = {q(idp.issuer)}", f"audience = {q(AUDIENCE)}", "",
             "[[auth.oidc.bench.rules]]", f'scopes = ["{SOURCE}:people/*"]', "",
             "[auth.grants]", 'ttl = "8h"', ""]
    if webhook is not None:
        lines += ["[auth.webhook]", f"url = {q(webhook)}", f"cache_ttl = {q(cache_ttl)}",
                  'timeout = "1s"', ""]
    return "\n".join(lines)


def webhook_main(conn: Connection, port: int) -> None:
    """The fake webhook's process: allow everything, until the pipe says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(serve_webhook(conn, port))


async def serve_webhook(conn: Connection, port: int) -> None:
    async def allow(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"result": true}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/allow", allow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    conn.send("ready")
    await asyncio.get_running_loop().run_in_executor(None, receive, conn)
    await runner.cleanup()


async def alternate(rows: dict[str, list[Exchange]], args: argparse.Namespace,
                    meter: CpuMeter) -> list[Phase]:
    phases: list[Phase] = []
    async with session_for(args.concurrency) as session:
        for name, exchanges in rows.items():
            warm = await run_exchanges(session, Phase(name, 0), exchanges, args.warmup, args.concurrency,
                                       meter)
            note(f"warm-up {name}: {warm.rps:.0f} req/s, {warm.errors} errors")
            if warm.errors:
                raise BenchError(f"{name} warm-up failed: {warm.first_error}")
        for number in range(1, args.rounds + 1):
            for name, exchanges in rows.items():
                phase = await run_exchanges(session, Phase(name, number), exchanges, args.seconds,
                                            args.concurrency, meter)
                note(f"round {number} {name}: {phase.rps:.0f} req/s")
                phases.append(phase)
    return phases


def table(phases: list[Phase]) -> tuple[str, dict[str, Any]]:
    totals = {name: merged(phases, name) for name in ROWS}
    base = totals[BASELINE].rps
    head = (f"{'row':<18}{'req/s':>8}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
            f"   proxy CPU ms/req  webhook CPU ms/req   cpu %: others idle")
    lines = [head, "-" * len(head)]
    result: dict[str, Any] = {"target_ratio": TARGET_RATIO, "rows": {}}
    for name, total in totals.items():
        per = total.cpu_ms_per_request()
        ratio = total.rps / base if base else 0.0
        proxy_ms, hook_ms = per.get(ROWS[name].server, 0.0), per.get("webhook", 0.0)
        lines.append(f"{name:<18}{total.rps:>8.0f}{ratio:>7.3f}{total.percentile_ms(0.5):>8.1f}"
                     f"{total.percentile_ms(0.99):>8.1f}{total.errors:>7}   {proxy_ms:>16.3f}"
                     f"  {hook_ms:>18.3f}   {'':>6}{total.cpu.get('others', 0):>7.0f}"
                     f"{total.cpu.get('idle', 0):>5.0f}")
        result["rows"][name] = {"rps": round(total.rps, 1), "ratio": round(ratio, 3), "errors": total.errors,
                                "p50_ms": round(total.percentile_ms(0.5), 2),
                                "p99_ms": round(total.percentile_ms(0.99), 2),
                                "proxy_cpu_ms": proxy_ms, "webhook_cpu_ms": hook_ms,
                                "others_pct": total.cpu.get("others", 0),
                                "idle_pct": total.cpu.get("idle", 0)}
    for name in ("jwt", "grant", "webhook-cached"):
        ratio = result["rows"][name]["ratio"]
        lines.append(f"{name}/signature: {ratio:.3f} - {'meets' if ratio >= TARGET_RATIO else 'BELOW'} "
                     f"target >= {TARGET_RATIO}")
    result["rounds"] = [{"row": p.side, "round": p.round, "rps": round(p.rps, 1)} for p in phases]
    return "\n".join(lines), result


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    secret = secrets.token_urlsafe(32)
    result: dict[str, Any] = {
        "bench": "imgproxy-auth", "cpus": os.cpu_count(), "code": code_state(),
        "python": platform.python_version(), "aiohttp": aiohttp.__version__,
        "loadavg_start": os.getloadavg(), "options": vars(args),
    }
    idp = FakeIdp()
    try:
        with ExitStack() as stack:
            moto_proc, endpoint = stack.enter_context(moto(workdir))
            s3 = s3_client(endpoint)
            s3.create_bucket(Bucket=BUCKET)
            image = jpeg_near(args.size_kb * 1000)
            s3.put_object(Bucket=BUCKET, Key=KEY, Body=image, ContentType="image/jpeg")
            hook_port = free_port()
            hook_conn, hook_pid = stack.enter_context(spawned(webhook_main, hook_port, name="bench-webhook"))
            if not hook_conn.poll(10) or hook_conn.recv() != "ready":
                raise BenchError("the fake webhook did not start")
            hook_url = f"http://{HOST}:{hook_port}/allow"
            pids, base = {}, {}
            for name, webhook, ttl in (("plain", None, "0s"), ("cached", hook_url, "60s"),
                                       ("uncached", hook_url, "0s")):
                proc, url = stack.enter_context(proxy(workdir, endpoint, secret, extra_toml=STREAM_ONLY,
                                                      name=name, auth=auth_toml(secret, idp, webhook, ttl)))
                pids[name], base[name] = proc.pid, url
            servers = Servers(base, secret, idp, time.time())
            check = expect_size(len(image))
            rows = {name: row.exchanges(servers, check) for name, row in ROWS.items()}
            meter = CpuMeter({"moto": moto_proc.pid, **pids, "webhook": hook_pid, "bench": os.getpid()})
            print(f"{len(image):,}-byte JPEG streamed, {args.concurrency} connections, {args.rounds} x "
                  f"{args.seconds:g} s per row after {args.warmup:g} s warm-up")
            phases = asyncio.run(alternate(rows, args, meter))
            text, result["result"] = table(phases)
            print(text, flush=True)
    finally:
        idp.close()
    result["idp_jwks_fetches"] = idp.jwks_hits
    result["loadavg_end"] = os.getloadavg()
    return result


def failures(result: dict[str, Any]) -> list[str]:
    rows = result.get("result", {}).get("rows", {})
    return [f"{name}: {row['errors']} failed requests" for name, row in rows.items() if row["errors"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(parser, warmup=2.0, rounds_help="measured rounds per row")
    parser.add_argument("--size-kb", type=int, default=20, help="the JPEG's size in kB (20)")
    return run_main(bench, failures, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
