"""GET /meta on a 40 MB original: latency and the bytes read from S3, against /img on the same object.

A benchmark, not a timed test (README "Performance"). moto holds one ~40 MB JPEG (a camera-sized
picture of noise, with a 60 KiB EXIF segment before its frame header); the proxy reaches moto
through a relay (``relay.py``) that counts every byte moto sends it. In one run, sides interleaved:

- ``meta cold``: ``/meta`` with nothing cached (a proxy with ``cache.variant_bytes = 0`` and
  ``metadata_ttl = 0``, so every request reads the header again: the first-view cost);
- ``meta warm``: ``/meta`` on a proxy with the default caches (the header cached);
- ``img head``: ``HEAD /img`` of the original (a presigned HEAD: S3 sends headers only);
- ``img get``: ``GET /img`` of the original, streamed whole (the full download ``/meta`` avoids);
- ``s3 range``: for scale, the same first 64 KiB asked of moto directly (boto3, no proxy): what
  the S3 server itself takes to answer the range ``meta cold`` asks for;
- ``meta placeholder``: once, ``/meta?placeholder=1`` cold: the ThumbHash needs pixels, so the
  image worker reads the whole object (what it costs when a page asks for one).

Per side: the median and p90 latency over ``--repeat`` requests and the bytes moto sent per
request. Target: ``meta cold`` reads far less than the object (no full download).

    .venv/bin/python bench/bench_meta.py              # --repeat 20 --size-mb 40
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Final

import aiohttp
from harness import (
    BUCKET,
    HOST,
    MIB,
    SOURCE,
    BenchError,
    code_state,
    note,
    proxy,
    run_main,
    s3_client,
    s3_server,
)
from relay import RelayProcess, relay_process

from imgproxy.auth.signing import UrlSigner

KEY: Final = "originals/camera.jpg"
SIGNING_KEY: Final = "bench-meta-signing-key-0123456789abcdef-0123"
COLD: Final = '\n[cache]\nvariant_bytes = 0\nmetadata_ttl = 0\n'


def camera_jpeg(size_mb: float) -> bytes:
    """A 4:3 JPEG of about ``size_mb`` MB (under ``transform.max_source_bytes``, 40 MiB, so a
    placeholder can be made of it): colour noise at quality 95, its bytes per pixel measured on a
    sample first; an EXIF segment of 60 KiB before the frame header, as a camera's thumbnail."""
    from PIL import Image

    def noise(width: int, height: int) -> Image.Image:
        return Image.merge("RGB", [Image.effect_noise((width, height), sigma) for sigma in (60, 64, 68)])

    sample = io.BytesIO()
    noise(512, 512).save(sample, "JPEG", quality=95)
    pixels = int(size_mb * 1e6 / (sample.tell() / 512 ** 2))
    width = int((pixels * 4 / 3) ** 0.5)
    image = noise(width, pixels // width)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "x" * 60_000  # ImageDescription: a big APP1, as a thumbnail would make it
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


async def measure(session: aiohttp.ClientSession, relay: RelayProcess, method: str, url: str,
                  ) -> tuple[float, int, int]:
    """One request: (seconds, bytes moto sent for it, the answer's status)."""
    before = relay.received()
    started = time.perf_counter()
    async with session.request(method, url) as response:
        await response.read()
        status = response.status
    seconds = time.perf_counter() - started
    return seconds, relay.received() - before, status


def summary(samples: list[tuple[float, int, int]]) -> dict[str, Any]:
    times = sorted(s for s, _, _ in samples)
    return {"requests": len(samples), "median_ms": round(statistics.median(times) * 1000, 2),
            "p90_ms": round(times[int(0.9 * (len(times) - 1))] * 1000, 2),
            "s3_bytes_per_request": round(statistics.mean(b for _, b, _ in samples)),
            "statuses": sorted({c for _, _, c in samples})}


def direct_range(client: Any) -> tuple[float, int, int]:
    """The first 64 KiB straight from moto: (seconds, bytes, status; a 206 counts as the 200 the
    other sides answer)."""
    started = time.perf_counter()
    answer = client.get_object(Bucket=BUCKET, Key=KEY, Range="bytes=0-65535")
    body = answer["Body"].read()
    status = answer["ResponseMetadata"]["HTTPStatusCode"]
    return time.perf_counter() - started, len(body), 200 if status == 206 else status


async def run_sides(args: argparse.Namespace, relay: RelayProcess, cold_url: str, warm_url: str,
                    size: int, client: Any) -> dict[str, Any]:
    cold, warm = UrlSigner(SIGNING_KEY, "bench", cold_url), UrlSigner(SIGNING_KEY, "bench", warm_url)
    urls = {"meta cold": ("GET", cold.sign(SOURCE, KEY, route="meta")),
            "meta warm": ("GET", warm.sign(SOURCE, KEY, route="meta")),
            "img head": ("HEAD", warm.sign(SOURCE, KEY)),
            "img get": ("GET", warm.sign(SOURCE, KEY))}
    samples: dict[str, list[tuple[float, int, int]]] = {name: [] for name in [*urls, "s3 range"]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for method, url in urls.values():  # warm-up: workers started, connections open, warm cache filled
            await measure(session, relay, method, url)
        for _ in range(args.repeat):
            for name, (method, url) in urls.items():
                samples[name].append(await measure(session, relay, method, url))
            samples["s3 range"].append(await asyncio.to_thread(direct_range, client))
        placeholder = await measure(session, relay, "GET", cold.sign(SOURCE, KEY, params={"placeholder": "1"},
                                                                     route="meta"))
        async with session.get(urls["meta cold"][1]) as response:
            answer = await response.json()
    sides = {name: summary(taken) for name, taken in samples.items()}
    sides["meta placeholder"] = summary([placeholder])
    return {"object_bytes": size, "answer": answer, "sides": sides}


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    note(f"making a {args.size_mb:g} MB JPEG")
    body = camera_jpeg(args.size_mb)
    with s3_server(workdir) as s3, relay_process() as relay:
        relay.point(int(s3.endpoint.rpartition(":")[2]))
        client = s3_client(s3.endpoint)
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key=KEY, Body=body, ContentType="image/jpeg")
        note(f"stored {len(body) / MIB:.1f} MiB as {KEY}")
        with proxy(workdir, relay.endpoint, SIGNING_KEY, name="cold", extra_toml=COLD) as (_, cold_url), \
                proxy(workdir, relay.endpoint, SIGNING_KEY, name="warm") as (_, warm_url):
            result = asyncio.run(run_sides(args, relay, cold_url, warm_url, len(body), client))
    result.update({"code": code_state(), "repeat": args.repeat, "host": HOST})
    return result


def failures(result: dict[str, Any]) -> list[str]:
    sides = result["sides"]
    problems = [f"{name}: statuses {side['statuses']}" for name, side in sides.items()
                if side["statuses"] != [200]]
    if sides["meta cold"]["s3_bytes_per_request"] * 10 > result["object_bytes"]:
        problems.append("meta cold read more than a tenth of the object from S3")
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="requests per side, interleaved (20)")
    parser.add_argument("--size-mb", type=float, default=40.0, help="the original's size in MB (40)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, failures, parse_args(argv))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        note(f"error: {exc}")
        sys.exit(1)
