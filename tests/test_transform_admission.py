"""Transform admission before the download (issue 10, point 4): a refused job reads nothing from
S3, and of the admitted ones at most two per worker are handed to the workers at once (each
worker reads its job's source itself: the serving process holds none)."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from PIL import Image
from support import ProxyFactory, RelayFactory, empty_bucket

from imgproxy.auth.signing import UrlSigner
from imgproxy.web import appkeys as keys

KEY = "scans/noise.jpg"


def noisy_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((1600, 1200), 80).convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


SOURCE = noisy_jpeg()  # ~1.5 MB, so the bytes S3 sent say how many downloads happened


@pytest.fixture(scope="module")
def source_bucket(s3: Any) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key=KEY, Body=SOURCE, ContentType="image/jpeg")
    yield name
    empty_bucket(s3, name)


@pytest.fixture
def one_worker(proxy: ProxyFactory, source_bucket: str) -> ProxyFactory:
    """The source bucket's proxy: one worker (started with the app), no variant cache."""
    return proxy.preset(source={"bucket": source_bucket}, transform={"workers": 1, "prestart_workers": True},
                        cache={"variant_bytes": 0})


async def burst(client: TestClient[Any, Any], signer: UrlSigner, count: int) -> list[int]:
    """``count`` distinct renders at once (distinct widths: nothing to coalesce or cache)."""
    async def one(width: int) -> int:
        async with client.get(signer.sign("photos", KEY, params={"w": str(width), "fmt": "png"})) as r:
            await r.read()
            if r.status == 503:
                assert r.headers[hdrs.RETRY_AFTER] == "1"
                assert (await r.json())["error"] == "overloaded"
            return r.status
    return await asyncio.gather(*(one(1500 - i) for i in range(count)))


async def test_a_refused_transform_reads_nothing_from_s3(
        one_worker: ProxyFactory, relay_to: RelayFactory, moto_endpoint: str, signer: UrlSigner) -> None:
    relay = await relay_to(moto_endpoint)
    client = await one_worker(source={"endpoint_url": relay.endpoint}, transform={"queue_size": 0})
    statuses = await burst(client, signer, 8)
    admitted = statuses.count(200)
    assert admitted >= 1
    assert statuses.count(503) == 8 - admitted
    assert statuses.count(503) >= 4
    # Every refused job was refused before its GET: S3 sent one body per admitted job (plus
    # the HEADs' headers), not one per request.
    assert relay.bytes_from_upstream < (admitted + 0.5) * len(SOURCE)


async def test_queued_transforms_hold_no_source_in_memory(
        one_worker: ProxyFactory, signer: UrlSigner) -> None:
    client = await one_worker(transform={"queue_size": 10})
    statuses = await burst(client, signer, 11)  # one worker plus ten in the queue: all admitted
    assert statuses == [200] * 11
    assert client.app is not None
    pool = client.app[keys.VARIANTS].pool
    assert pool.peak_loaded == pool.in_memory == 2  # one rendering, one next in line
    assert pool.loaded == 0
    assert pool.active == 0
