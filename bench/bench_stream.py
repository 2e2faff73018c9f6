#!/usr/bin/env python3
"""Benchmark: imgproxy vs direct presigned S3 reads, and the proxy's memory while streaming 1 GiB.

Not a test. It measures and prints; it exits non-zero only when something *failed* (a process
would not start, a request errored, bytes came back wrong), never because a target was missed.

Three processes on 127.0.0.1, so no one's CPU is hidden inside another's:
  moto      S3-compatible server (ThreadedMotoServer in its own Python process)
  proxy     ``imgproxy serve`` with a temporary TOML config pointing at moto
  bench     this process: seeds the bucket, then is the aiohttp load generator

(a) ~500 KB JPEG at --concurrency connections for --seconds per phase, sides interleaved
    (direct, proxy, direct, proxy, ...) after a warm-up of each: req/s, p50/p99, and the CPU
    each process used (so a saturated moto or load generator shows), and proxy/direct ratio.
(b) a --big-mib object (multipart upload generated in parts, never whole in memory) downloaded
    through the proxy and discarded; the proxy's VmRSS sampled every 50 ms, VmHWM at the end.

With --s3-tls, S3 is HTTPS for both sides (nginx terminating TLS with a throwaway CA in front of
moto; its CPU is the "tls" column): the proxy's figures then include TLS to S3.

    .venv/bin/python bench/bench_stream.py [--seconds 10] [--skip-big] [--s3-tls]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import platform
import random
import secrets
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from harness import (
    BUCKET,
    MIB,
    SOURCE,
    BenchError,
    CpuMeter,
    Phase,
    S3Server,
    add_load_options,
    add_s3_options,
    expect_size,
    merged,
    note,
    proxy,
    reset_peak_rss,
    run_main,
    run_phase,
    s3_client,
    s3_server,
    session_for,
    status_kib,
)

from imgproxy.auth.signing import UrlSigner

SMALL_KEY: Final = "photos/bench-500k.jpg"
BIG_KEY: Final = "large/bench-big.bin"
PART_BYTES: Final = 64 * 1024 * 1024
RSS_SAMPLE_SECONDS: Final = 0.05
TARGET_RATIO: Final = 0.8
TARGET_GROWTH_MIB: Final = 64.0
# What is measured is the proxy streaming: the default delivery mode ("auto") would answer hot
# and big objects with a redirect to S3.
STREAM_ONLY: Final = '\n[delivery]\nmode = "stream"\n'


# --- seeding S3 ------------------------------------------------------------------------------

def jpeg_near(target_bytes: int) -> bytes:
    """A noise JPEG close to target_bytes (noise barely compresses, like a large photo)."""
    from PIL import Image

    side, data = 800, b""
    for _ in range(4):
        image = Image.merge("RGB", [Image.effect_noise((side, side), 48) for _ in range(3)])
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        data = buffer.getvalue()
        side = max(16, round(side * (target_bytes / len(data)) ** 0.5))
    return data


def upload_big(s3: Any, size: int) -> str:
    """Multipart upload of ``size`` pseudo-random bytes, PART_BYTES at a time; returns sha256."""
    rng, digest = random.Random(1024), hashlib.sha256()
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=BIG_KEY, ContentType="application/octet-stream")
    parts, sent = [], 0
    try:
        for number in range(1, (size + PART_BYTES - 1) // PART_BYTES + 1):
            part = rng.randbytes(min(PART_BYTES, size - sent))
            digest.update(part)
            answer = s3.upload_part(Bucket=BUCKET, Key=BIG_KEY, UploadId=upload["UploadId"],
                                    PartNumber=number, Body=part)
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            sent += len(part)
            del part
        s3.complete_multipart_upload(Bucket=BUCKET, Key=BIG_KEY, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})
    except BaseException:
        s3.abort_multipart_upload(Bucket=BUCKET, Key=BIG_KEY, UploadId=upload["UploadId"])
        raise
    head = s3.head_object(Bucket=BUCKET, Key=BIG_KEY)
    if head["ContentLength"] != size:
        raise BenchError(f"moto holds {head['ContentLength']} bytes of the big object, not {size}")
    return digest.hexdigest()


# --- (a) load generation ---------------------------------------------------------------------

async def throughput(urls: dict[str, str], size: int, args: argparse.Namespace,
                     meter: CpuMeter, storage: S3Server) -> list[Phase]:
    """Warm up each side, then alternate direct/proxy for args.rounds rounds."""
    phases: list[Phase] = []
    async with (session_for(args.concurrency, ssl_context=storage.client_ssl()) as direct,
                session_for(args.concurrency) as via_proxy):
        sessions = {"direct": direct, "proxy": via_proxy}
        for side in sessions:
            warm = await run_phase(sessions[side], Phase(side, 0), [urls[side]], args.warmup,
                                   args.concurrency, meter, expect_size(size))
            note(f"warm-up {side}: {warm.rps:.0f} req/s, {warm.errors} errors")
            if warm.errors:
                raise BenchError(f"{side} warm-up failed: {warm.first_error}")
        for number in range(1, args.rounds + 1):
            for side in sessions:
                phase = await run_phase(sessions[side], Phase(side, number), [urls[side]],
                                        args.seconds, args.concurrency, meter, expect_size(size))
                note(f"round {number} {side}: {phase.rps:.0f} req/s")
                phases.append(phase)
    return phases


# --- (b) streaming a big object --------------------------------------------------------------

@dataclass
class RssSampler:
    """VmRSS of one process every RSS_SAMPLE_SECONDS in a thread; the highest value seen."""

    pid: int
    peak_kib: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
            self.samples += 1
            self._stop.wait(RSS_SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


async def download(url: str) -> tuple[int, str, int | None, float]:
    """GET url, hashing and discarding the body; (bytes, sha256, Content-Length, seconds)."""
    digest, received = hashlib.sha256(), 0
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with (aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session,
                session.get(url, allow_redirects=False) as response):
        if response.status != 200:
            raise BenchError(f"big object through the proxy: HTTP {response.status}")
        for _ in range(1 << 40):  # bounded by the body: readany() returns b"" at its end
            chunk = await response.content.readany()
            if not chunk:
                break
            digest.update(chunk)
            received += len(chunk)
        return received, digest.hexdigest(), response.content_length, time.perf_counter() - started


def stream_big(proxy_pid: int, url: str, size: int, expected_sha: str, at_start_kib: int) -> dict[str, Any]:
    before = status_kib(proxy_pid, "VmRSS")
    hwm_reset = reset_peak_rss(proxy_pid)
    with RssSampler(proxy_pid) as sampler:
        received, sha, length, seconds = asyncio.run(download(url))
    hwm = status_kib(proxy_pid, "VmHWM")
    after = status_kib(proxy_pid, "VmRSS")
    peak = max(sampler.peak_kib, hwm) if hwm_reset else sampler.peak_kib
    return {
        "bytes": received, "expected_bytes": size, "content_length": length,
        "bytes_ok": received == size == length, "sha256_ok": sha == expected_sha,
        "seconds": round(seconds, 2), "mib_per_s": round(received / MIB / seconds, 1),
        "rss_at_start_mib": round(at_start_kib / 1024, 1), "rss_before_mib": round(before / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "rss_after_mib": round(after / 1024, 1), "vmhwm_mib": round(hwm / 1024, 1),
        "vmhwm_reset": hwm_reset, "rss_samples": sampler.samples,
        "growth_mib": round((peak - before) / 1024, 1), "target_growth_mib": TARGET_GROWTH_MIB,
    }


# --- report ----------------------------------------------------------------------------------

def phase_json(phase: Phase, size: int) -> dict[str, Any]:
    return {
        "side": phase.side, "round": phase.round, "seconds": round(phase.wall, 2),
        "requests": phase.requests, "errors": phase.errors, "rps": round(phase.rps, 1),
        "mib_per_s": round(phase.rps * size / MIB, 1), "p50_ms": round(phase.percentile_ms(0.50), 2),
        "p99_ms": round(phase.percentile_ms(0.99), 2), "cpu_pct_of_one_core": phase.cpu,
        "cpu_ms_per_request": phase.cpu_ms_per_request(),
    }


def table_a(phases: list[Phase], size: int) -> tuple[str, dict[str, Any]]:
    rows = [*phases, merged(phases, "direct"), merged(phases, "proxy")]
    tls = any("tls" in phase.cpu for phase in phases)
    head = (f"{'side':<7}{'round':>6}{'req/s':>8}{'MiB/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
            f"   cpu % of one core: {'moto':>5}{'tls' if tls else '':>5}{'proxy':>6}{'bench':>6}"
            f"{'others':>7}{'idle':>5}")
    lines = [head, "-" * len(head)]
    for phase in rows:
        c = phase.cpu
        tls_cell = f"{c.get('tls', 0):.0f}" if tls else ""
        lines.append(
            f"{phase.side:<7}{phase.round or 'all':>6}{phase.rps:>8.0f}{phase.rps * size / MIB:>8.1f}"
            f"{phase.percentile_ms(0.5):>8.1f}{phase.percentile_ms(0.99):>8.1f}{phase.errors:>7}"
            f"   {'':<19}{c.get('moto', 0):>5.0f}{tls_cell:>5}{c.get('proxy', 0):>6.0f}"
            f"{c.get('bench', 0):>6.0f}{c.get('others', 0):>7.0f}{c.get('idle', 0):>5.0f}")
    direct, via = rows[-2], rows[-1]
    ratio = via.rps / direct.rps if direct.rps else 0.0
    per_round = [
        round(p.rps / d.rps, 3) if d.rps else 0.0
        for d, p in zip([x for x in phases if x.side == "direct"],
                        [x for x in phases if x.side == "proxy"], strict=True)
    ]
    for total in (direct, via):
        per = total.cpu_ms_per_request()
        lines.append(f"CPU ms per request, {total.side}: "
                     + ", ".join(f"{name} {ms:.2f}" for name, ms in per.items() if ms >= 0.01))
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    lines.append(f"proxy/direct throughput: {ratio:.3f} (per round: "
                 f"{', '.join(f'{r:.3f}' for r in per_round)}) - {verdict} target >= {TARGET_RATIO}")
    result = {
        "object_bytes": size, "ratio": round(ratio, 3), "ratio_per_round": per_round,
        "target_ratio": TARGET_RATIO, "direct": phase_json(direct, size), "proxy": phase_json(via, size),
        "phases": [phase_json(p, size) for p in phases],
    }
    return "\n".join(lines), result


def table_b(big: dict[str, Any]) -> str:
    verdict = "meets" if big["growth_mib"] < TARGET_GROWTH_MIB else "ABOVE"
    return "\n".join([
        f"{big['bytes'] / MIB:.0f} MiB through the proxy in {big['seconds']:.1f} s "
        f"({big['mib_per_s']:.0f} MiB/s); byte count {'ok' if big['bytes_ok'] else 'WRONG'}, "
        f"sha256 {'ok' if big['sha256_ok'] else 'WRONG'}",
        f"proxy RSS: at start-up {big['rss_at_start_mib']:.1f} MiB; before {big['rss_before_mib']:.1f} MiB, "
        f"peak {big['rss_peak_mib']:.1f} MiB "
        f"({big['rss_samples']} samples every {RSS_SAMPLE_SECONDS * 1000:.0f} ms"
        f"{', VmHWM reset before' if big['vmhwm_reset'] else ''}: {big['vmhwm_mib']:.1f}), "
        f"after {big['rss_after_mib']:.1f} MiB",
        f"RSS growth: {big['growth_mib']:.1f} MiB - {verdict} target < {TARGET_GROWTH_MIB:.0f} MiB",
    ])


ARRANGEMENT: Final = (
    "processes: moto (own process) | imgproxy serve (own process) | bench = aiohttp load generator "
    "(this process); all on {cpus} CPUs shared with anything else running ('others' column). "
    "The proxy side runs 3 busy processes where the direct side runs 2, and moto competes with the "
    "proxy for CPU here (a real S3 would not), so when CPU-bound the ratio is a lower bound."
)


# --- main ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(parser, warmup=2.0, rounds_help="direct+proxy rounds")
    add_s3_options(parser)
    parser.add_argument("--size-kb", type=int, default=500, help="image size in KB (500)")
    parser.add_argument("--big-mib", type=int, default=1024, help="big object size in MiB (1024)")
    parser.add_argument("--skip-big", action="store_true", help="skip part (b)")
    parser.add_argument("--profile-proxy", type=Path, metavar="PATH",
                        help="run the proxy under cProfile, stats to PATH (slows the proxy side)")
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 3600 and 0 <= args.warmup <= 600 and 1 <= args.rounds <= 20
            and 1 <= args.concurrency <= 1024 and 1 <= args.size_kb <= 100_000
            and 1 <= args.big_mib <= 16_384):
        parser.error("an option is out of range")
    return args


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    signing_key = secrets.token_urlsafe(32)
    result: dict[str, Any] = {
        "bench": "imgproxy-stream", "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "python": platform.python_version(), "aiohttp": aiohttp.__version__,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    with ExitStack() as stack:
        storage = stack.enter_context(s3_server(workdir, tls=args.s3_tls))
        s3 = s3_client(storage.endpoint, storage.ca_bundle)
        s3.create_bucket(Bucket=BUCKET)
        image = jpeg_near(args.size_kb * 1000)
        s3.put_object(Bucket=BUCKET, Key=SMALL_KEY, Body=image, ContentType="image/jpeg")
        proxy_proc, base_url = stack.enter_context(
            proxy(workdir, storage.endpoint, signing_key, args.profile_proxy, extra_toml=STREAM_ONLY,
                  ca_bundle=storage.ca_bundle))
        signer = UrlSigner(signing_key, "bench", base_url)
        urls = {
            "direct": s3.generate_presigned_url("get_object", ExpiresIn=3600,
                                                Params={"Bucket": BUCKET, "Key": SMALL_KEY}),
            "proxy": signer.sign(SOURCE, SMALL_KEY, ttl=3600),
        }
        pids: dict[str, int | tuple[int, ...]] = {"moto": storage.moto_pid, "proxy": proxy_proc.pid,
                                                  "bench": os.getpid()}
        if storage.tls_pids:
            pids["tls"] = storage.tls_pids
        rss_at_start = status_kib(proxy_proc.pid, "VmRSS")
        print(ARRANGEMENT.format(cpus=os.cpu_count()))
        kind = "HTTPS: nginx terminating TLS in front of moto" if storage.ca_bundle else "moto, plain HTTP"
        print(f"S3: {storage.endpoint} ({kind})")
        print(f"(a) {len(image):,}-byte JPEG, {args.concurrency} connections, {args.rounds} x "
              f"{args.seconds:g} s per side after {args.warmup:g} s warm-up; load avg at start "
              f"{result['loadavg_start'][0]:.2f}")
        phases = asyncio.run(throughput(urls, len(image), args, CpuMeter(pids), storage))
        text, result["a"] = table_a(phases, len(image))
        print(text, flush=True)
        if not args.skip_big:
            size = args.big_mib * MIB
            note(f"uploading {args.big_mib} MiB to moto in {PART_BYTES // MIB} MiB parts")
            sha = upload_big(s3, size)
            note("streaming it through the proxy")
            result["b"] = stream_big(proxy_proc.pid, signer.sign(SOURCE, BIG_KEY, ttl=3600), size, sha,
                                     rss_at_start)
            print(f"(b) {args.big_mib} MiB object streamed through the proxy, read and discarded")
            print(table_b(result["b"]), flush=True)
    result["loadavg_end"] = os.getloadavg()
    return result


def failures(result: dict[str, Any]) -> list[str]:
    found = []
    for side in ("direct", "proxy"):
        if result.get("a", {}).get(side, {}).get("errors"):
            found.append(f"{side}: {result['a'][side]['errors']} failed requests")
    big = result.get("b")
    if big and not (big["bytes_ok"] and big["sha256_ok"]):
        found.append(f"big object: {big['bytes']} bytes, sha256 ok={big['sha256_ok']}")
    return found


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, failures, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
