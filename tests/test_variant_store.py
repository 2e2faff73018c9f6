"""The shared variant store (``[cache.store]``): replicas share rendered variants through S3.

Two apps (and, once, two ``imgproxy serve`` processes) share one moto bucket as their store.
"Served without a transform" is read from the worker pool's own counter or the metrics; "the
response does not wait for the write" uses a fake store that holds every PUT until released.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image
from processes import Process, command, free_port, http_get, write_config
from support import SIGNING_KEY, ProxyFactory, config_data, merged, source_table

from imgproxy.auth.signing import UrlSigner
from imgproxy.config import ConfigError, parse_config
from imgproxy.storage.variant_store import VariantStore
from imgproxy.web import appkeys as keys
from imgproxy.web.appkeys import METRICS

KEY = "employees/ada.jpg"
PARAMS = {"w": "120"}


def jpeg(width: int = 400, height: int = 300) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@dataclass(frozen=True)
class Buckets:
    source: str
    store: str


@pytest.fixture
def buckets(s3: Any) -> Buckets:
    source, store = f"test-src-{uuid.uuid4().hex[:12]}", f"test-store-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=store)
    s3.put_object(Bucket=source, Key=KEY, Body=jpeg(), ContentType="image/jpeg")
    return Buckets(source, store)


def store_table(moto_endpoint: str, buckets: Buckets, **overrides: Any) -> dict[str, Any]:
    """``[cache.store]``: the store bucket, under ``variants/``."""
    return source_table(moto_endpoint, buckets.store, prefix="variants", **overrides)


ONE_WORKER = {"workers": 1, "prestart_workers": True}  # started with the app


def store_data(moto_endpoint: str, buckets: Buckets, **store: Any) -> dict[str, Any]:
    """A replica's whole config (for ``imgproxy serve`` and config tests)."""
    return merged(config_data(moto_endpoint, buckets.source),
                  {"transform": ONE_WORKER, "cache": {"store": store_table(moto_endpoint, buckets, **store)}})


@pytest.fixture
def replica(proxy: ProxyFactory, moto_endpoint: str, buckets: Buckets) -> ProxyFactory:
    """``await replica()``: an app on the source bucket sharing variants through the store bucket
    (``replica(cache={"store": store_table(...)})`` for another store), with one worker."""
    return proxy.preset(source={"bucket": buckets.source}, transform=ONE_WORKER,
                        cache={"store": store_table(moto_endpoint, buckets)})


def app_of(client: TestClient[Any, Any]) -> web.Application:
    assert isinstance(client.app, web.Application)
    return client.app


def store_of(client: TestClient[Any, Any]) -> VariantStore:
    return app_of(client)[keys.STORE]


def store_count(client: TestClient[Any, Any], operation: str, result: str) -> float:
    value = app_of(client)[METRICS].registry.get_sample_value(
        "imgproxy_variant_store_total", {"operation": operation, "result": result})
    return value or 0.0


def url(signer: UrlSigner) -> str:
    return signer.sign("photos", KEY, params=PARAMS)


# --- two replicas, one store -------------------------------------------------------------------

async def test_a_variant_rendered_by_one_replica_is_served_by_another_from_the_store(
        replica: ProxyFactory, buckets: Buckets, signer: UrlSigner, s3: Any) -> None:
    first = await replica()
    second = await replica()

    rendered = await first.get(url(signer))
    assert rendered.status == 200
    assert rendered.headers["X-Cache"] == "MISS"
    await store_of(first).drain()
    listed = s3.list_objects_v2(Bucket=buckets.store)["Contents"]
    assert [obj["Key"].startswith("variants/") for obj in listed] == [True]

    shared = await second.get(url(signer))
    assert shared.status == 200
    assert shared.headers["X-Cache"] == "STORE"
    assert await shared.read() == await rendered.read()
    assert shared.headers["ETag"] == rendered.headers["ETag"]
    assert shared.headers["Content-Type"] == "image/jpeg"
    assert app_of(second)[keys.VARIANTS].pool.completed == 0
    assert store_count(second, "get", "hit") == 1

    again = await second.get(url(signer))
    assert again.headers["X-Cache"] == "HIT"  # now in the second replica's memory too


async def test_a_stored_object_over_the_size_limit_is_not_read_but_rendered(
        replica: ProxyFactory, buckets: Buckets, signer: UrlSigner, s3: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    first = await replica(transform={"max_source_bytes": 1024 * 1024})
    second = await replica(transform={"max_source_bytes": 1024 * 1024})
    assert (await first.get(url(signer))).status == 200
    await store_of(first).drain()
    [stored] = s3.list_objects_v2(Bucket=buckets.store)["Contents"]
    s3.put_object(Bucket=buckets.store, Key=stored["Key"], Body=b"\0" * (1024 * 1024 + 1),
                  ContentType="image/jpeg", Metadata={"etag": '"x"', "width": "1", "height": "1"})

    answer = await second.get(url(signer))
    assert answer.status == 200
    assert answer.headers["X-Cache"] == "MISS"
    assert app_of(second)[keys.VARIANTS].pool.completed == 1
    assert store_count(second, "get", "error") == 1
    assert "error=StoredVariantTooLarge" in caplog.text


async def test_concurrent_misses_make_one_store_lookup(
        replica: ProxyFactory, signer: UrlSigner) -> None:
    first = await replica()
    second = await replica()
    assert (await first.get(url(signer))).status == 200
    await store_of(first).drain()

    answers = await asyncio.gather(*(second.get(url(signer)) for _ in range(6)))
    assert [a.status for a in answers] == [200] * 6
    assert {a.headers["X-Cache"] for a in answers} == {"STORE"}
    assert store_count(second, "get", "hit") == 1
    assert app_of(second)[keys.VARIANTS].pool.completed == 0


async def test_a_variant_not_in_the_store_is_rendered_and_written_back(
        replica: ProxyFactory, signer: UrlSigner) -> None:
    client = await replica()
    response = await client.get(url(signer))
    assert response.headers["X-Cache"] == "MISS"
    await store_of(client).drain()
    assert store_count(client, "get", "miss") == 1
    assert store_count(client, "put", "stored") == 1


# --- the store fails: the client never notices ----------------------------------------------------

async def test_a_store_that_is_down_degrades_to_rendering_with_a_log_line(
        replica: ProxyFactory, moto_endpoint: str, buckets: Buckets, signer: UrlSigner,
        caplog: pytest.LogCaptureFixture) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    store = store_table(moto_endpoint, buckets, endpoint_url=down, max_attempts=1)
    client = await replica(cache={"store": store})
    with caplog.at_level(logging.WARNING, logger="imgproxy.store"):
        first = await client.get(url(signer))
        await store_of(client).drain()
    assert first.status == 200
    assert first.headers["X-Cache"] == "MISS"
    assert first.headers["Content-Type"] == "image/jpeg"
    failures = [r.getMessage() for r in caplog.records if r.name == "imgproxy.store"]
    assert any("variant store get failed" in line for line in failures)
    assert any("variant store put failed" in line for line in failures)
    assert store_count(client, "get", "error") == 1
    assert store_count(client, "put", "error") == 1

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imgproxy.store"):
        other = await client.get(signer.sign("photos", KEY, params={"w": "80"}))
        await store_of(client).drain()
    assert other.status == 200
    assert [r for r in caplog.records if r.name == "imgproxy.store"] == []  # once per kind per minute
    assert store_count(client, "get", "error") == 2


class HeldStore:
    """A fake S3 store: every GET is "NoSuchKey" at once; every PUT waits for ``release``."""

    def __init__(self) -> None:
        self.put_received = asyncio.Event()
        self.release = asyncio.Event()
        self.puts_answered = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if request.method == "PUT":
            self.put_received.set()
            await self.release.wait()
            self.puts_answered += 1
            return web.Response(headers={"ETag": '"0"'})
        return web.Response(status=404, content_type="application/xml",
                            text="<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code>"
                                 "<Message>The specified key does not exist.</Message></Error>")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def held_store() -> AsyncIterator[HeldStore]:
    store = HeldStore()
    try:
        yield store
    finally:
        store.release.set()
        if store.runner is not None:
            await store.runner.cleanup()


async def test_the_response_does_not_wait_for_the_store_write(
        replica: ProxyFactory, moto_endpoint: str, buckets: Buckets, signer: UrlSigner,
        held_store: HeldStore) -> None:
    store = store_table(moto_endpoint, buckets, endpoint_url=await held_store.start(), read_timeout=30)
    client = await replica(cache={"store": store})
    response = await client.get(url(signer))
    assert response.status == 200
    assert response.headers["X-Cache"] == "MISS"
    await response.read()
    await asyncio.wait_for(held_store.put_received.wait(), 10)
    assert held_store.puts_answered == 0  # the response is complete; its write is still held
    assert store_of(client).pending == 1

    held_store.release.set()
    await store_of(client).drain()
    assert held_store.puts_answered == 1
    assert store_count(client, "put", "stored") == 1


# --- configuration -------------------------------------------------------------------------------

def test_without_a_store_table_there_is_no_store(proxy: ProxyFactory, buckets: Buckets) -> None:
    config = proxy.config(source={"bucket": buckets.source})
    assert config.cache.store is None
    assert keys.STORE not in proxy.app(source={"bucket": buckets.source})


def test_the_store_table_reads_like_a_source(moto_endpoint: str, buckets: Buckets) -> None:
    config = parse_config(store_data(moto_endpoint, buckets), environ={})
    assert config.cache.store is not None
    assert config.cache.store.bucket == buckets.store
    assert config.cache.store.prefix == "variants/"
    assert "testing" not in repr(config.cache.store)  # credentials stay masked


def test_the_store_table_rejects_keys_only_sources_have(moto_endpoint: str, buckets: Buckets) -> None:
    data = store_data(moto_endpoint, buckets, cache_control="public")
    with pytest.raises(ConfigError, match=r"cache\.store\.cache_control"):
        parse_config(data, environ={})


# --- two real processes --------------------------------------------------------------------------

def scrape(port: int, name: str) -> float:
    text = http_get(f"http://127.0.0.1:{port}/metrics").body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_serve_processes_share_variants_through_the_store(
        tmp_path: Path, moto_endpoint: str, buckets: Buckets, s3: Any) -> None:
    started: list[tuple[Process, int, int]] = []
    try:
        for n in range(2):
            port, metrics_port = free_port(), free_port()
            data = store_data(moto_endpoint, buckets)
            data["server"].update(port=port)
            data["metrics"] = {"port": metrics_port}
            path = write_config(tmp_path, data, f"config-{n}.toml")
            process = Process(command("serve", "--config", str(path)), tmp_path / f"serve-{n}",
                              {"TMPDIR": str(tmp_path)})
            started.append((process, port, metrics_port))
            process.wait_until_healthy(f"http://127.0.0.1:{port}")
        (_, port_a, _), (_, port_b, metrics_b) = started

        first = http_get(UrlSigner(SIGNING_KEY, "k1", f"http://127.0.0.1:{port_a}").sign(
            "photos", KEY, params=PARAMS))
        assert (first.status, first.headers["X-Cache"]) == (200, "MISS")
        deadline = time.monotonic() + 10
        while not s3.list_objects_v2(Bucket=buckets.store).get("KeyCount", 0):
            assert time.monotonic() < deadline, "the first process never wrote the variant"
            time.sleep(0.05)

        second = http_get(UrlSigner(SIGNING_KEY, "k1", f"http://127.0.0.1:{port_b}").sign(
            "photos", KEY, params=PARAMS))
        assert (second.status, second.headers["X-Cache"]) == (200, "STORE")
        assert second.body == first.body
        assert scrape(metrics_b, "imgproxy_transform_duration_seconds_count") == 0
        assert scrape(metrics_b, 'imgproxy_variant_store_total{operation="get",result="hit"}') == 1
        assert [process.stop() for process, _, _ in started] == [0, 0]
    finally:
        for process, _, _ in started:
            process.kill()
