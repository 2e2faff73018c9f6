"""HEAD on a transform URL: answered without a render when the variant's size is already known.

The variant cache (this process's memory) or the shared store (a HEAD of the stored object, its
bytes unread) may know it; only then is a render skipped. A HEAD whose variant nobody knows
still renders, so its headers are a GET's (Content-Length included). Renders are counted by the
``imgproxy_transform_renders_total`` metric, read from the real scrape endpoint over HTTP; the
last test does the same against an ``imgproxy serve`` process.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import ClientResponse, hdrs
from PIL import Image
from processes import Process, Reply, command, free_port, http_get, write_config
from prometheus_client.parser import text_string_to_metric_families
from support import SIGNING_KEY, ProxyClient, ProxyFactory, config_data, source_table

from imgproxy.auth.signing import UrlSigner
from imgproxy.web import appkeys as keys

KEY: Final = "employees/ada.jpg"
RENDERS: Final = "imgproxy_transform_renders_total"
# What differs between any two answers, whatever they are: not part of "the same headers".
PER_REQUEST: Final = frozenset({"date", "x-request-id", "server-timing"})


def jpeg(width: int = 800, height: int = 600) -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((width, height)).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def headers_of(response: ClientResponse | Reply, *, keep_cache: bool = True) -> list[tuple[str, str]]:
    """The answer's headers, sorted, without the per-request ones (and without X-Cache if asked)."""
    drop = PER_REQUEST if keep_cache else PER_REQUEST | {"x-cache"}
    return sorted((name.lower(), value) for name, value in response.headers.items()
                  if name.lower() not in drop)


@dataclass
class Proxy:
    client: ProxyClient
    signer: UrlSigner

    def url(self, **params: str) -> str:
        return self.signer.sign("photos", KEY, params=params or {"w": "200"})

    async def request(self, method: str, headers: dict[str, str] | None = None,
                      **params: str) -> tuple[ClientResponse, bytes]:
        async with self.client.request(method, self.url(**params), headers=headers or {}) as response:
            return response, await response.read()

    async def renders(self) -> float:
        """The render counter, from the metrics endpoint over HTTP."""
        assert self.client.app is not None
        async with self.client.session.get(self.client.app[keys.METRICS_URL]) as response:
            text = await response.text()
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples if sample.name == RENDERS)

    async def store_drained(self) -> None:
        assert self.client.app is not None
        await self.client.app[keys.STORE].drain()

    def store_calls(self, operation: str, result: str) -> float:
        assert self.client.app is not None
        value = self.client.app[keys.METRICS].registry.get_sample_value(
            "imgproxy_variant_store_total", {"operation": operation, "result": result})
        return value or 0.0


MakeProxy = Callable[..., Awaitable[Proxy]]


@pytest.fixture
def store_bucket(s3: Any) -> str:
    name = f"test-store-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_proxy(proxy: ProxyFactory, moto_endpoint: str, bucket: str, store_bucket: str, s3: Any,
               signer: UrlSigner) -> MakeProxy:
    """``await make_proxy(variant_bytes=..., store=True)``: a proxy on the test bucket (holding
    KEY), optionally with the shared store; proxies made by one test share bucket and store."""
    s3.put_object(Bucket=bucket, Key=KEY, Body=jpeg(), ContentType="image/jpeg")

    async def build(*, variant_bytes: int | None = None, store: bool = False) -> Proxy:
        cache: dict[str, Any] = {}
        if variant_bytes is not None:
            cache["variant_bytes"] = variant_bytes
        if store:
            cache["store"] = source_table(moto_endpoint, store_bucket, prefix="variants")
        return Proxy(await proxy(transform={"workers": 1}, cache=cache), signer)

    return build


# --- the variant cache knows it ----------------------------------------------------------------------

async def test_a_head_after_a_get_renders_nothing_and_has_the_gets_headers(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    got, body = await proxy.request("GET")
    before = await proxy.renders()
    head, empty = await proxy.request("HEAD")
    assert (got.status, head.status) == (200, 200)
    assert await proxy.renders() == before
    assert empty == b""
    assert head.headers[hdrs.CONTENT_LENGTH] == str(len(body))
    assert head.headers["X-Cache"] == "HIT"
    assert headers_of(head, keep_cache=False) == headers_of(got, keep_cache=False)
    again, _ = await proxy.request("GET")
    assert headers_of(head) == headers_of(again)  # and a GET now says HIT too


async def test_a_head_for_fmt_auto_varies_by_accept_like_the_get(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    accept: dict[str, str] = {hdrs.ACCEPT: "image/webp"}
    got, _ = await proxy.request("GET", accept, w="160", fmt="auto")
    before = await proxy.renders()
    head, _ = await proxy.request("HEAD", accept, w="160", fmt="auto")
    assert await proxy.renders() == before
    assert (head.headers[hdrs.VARY], head.headers[hdrs.CONTENT_TYPE]) == ("Accept", "image/webp")
    assert headers_of(head, keep_cache=False) == headers_of(got, keep_cache=False)
    other, _ = await proxy.request("HEAD", {hdrs.ACCEPT: "image/jpeg"}, w="160", fmt="auto")
    assert other.headers[hdrs.CONTENT_TYPE] == "image/jpeg"  # another variant: rendered
    assert await proxy.renders() == before + 1


async def test_a_head_with_the_variant_etag_is_304_without_a_render(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(variant_bytes=0)
    got, _ = await proxy.request("GET")
    before = await proxy.renders()
    head, _ = await proxy.request("HEAD", {hdrs.IF_NONE_MATCH: got.headers[hdrs.ETAG]})
    assert head.status == 304
    assert await proxy.renders() == before


# --- nobody knows it: a HEAD renders, and answers what a GET answers ---------------------------------

async def test_a_first_head_renders_once_and_its_headers_equal_a_first_gets(make_proxy: MakeProxy) -> None:
    heads, gets = await make_proxy(), await make_proxy()
    head, empty = await heads.request("HEAD")
    got, body = await gets.request("GET")
    assert (head.status, got.status, empty) == (200, 200, b"")
    assert (await heads.renders(), await gets.renders()) == (1, 1)
    assert (head.headers["X-Cache"], got.headers["X-Cache"]) == ("MISS", "MISS")
    assert head.headers[hdrs.CONTENT_LENGTH] == str(len(body))
    assert headers_of(head) == headers_of(got)
    # What the HEAD rendered is kept: the GET that follows it renders nothing.
    after, same = await heads.request("GET")
    assert (after.headers["X-Cache"], same) == ("HIT", body)
    assert await heads.renders() == 1


async def test_with_the_variant_cache_off_and_no_store_every_head_renders(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(variant_bytes=0)
    got, body = await proxy.request("GET")
    head, _ = await proxy.request("HEAD")
    assert head.headers["X-Cache"] == "MISS"
    assert head.headers[hdrs.CONTENT_LENGTH] == str(len(body))
    assert await proxy.renders() == 2
    assert headers_of(head) == headers_of(got)


# --- the shared store knows it -------------------------------------------------------------------------

async def test_a_head_is_answered_from_a_head_of_the_stored_variant_without_reading_it(
        make_proxy: MakeProxy) -> None:
    renderer = await make_proxy(store=True)
    rendered, body = await renderer.request("GET")
    await renderer.store_drained()
    replica = await make_proxy(variant_bytes=0, store=True)  # it cannot keep the variant in memory

    head, _ = await replica.request("HEAD")
    assert head.status == 200
    assert await replica.renders() == 0
    assert replica.store_calls("head", "hit") == 1
    assert replica.store_calls("get", "hit") + replica.store_calls("get", "miss") == 0  # no bytes read
    assert head.headers["X-Cache"] == "STORE"
    assert head.headers[hdrs.CONTENT_LENGTH] == str(len(body))
    got, same = await replica.request("GET")
    assert (got.headers["X-Cache"], same) == ("STORE", body)
    assert headers_of(head) == headers_of(got)
    assert headers_of(head, keep_cache=False) == headers_of(rendered, keep_cache=False)


async def test_a_head_the_store_does_not_know_renders_and_asks_the_store_once(
        make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(store=True)
    head, _ = await proxy.request("HEAD")
    assert head.headers["X-Cache"] == "MISS"
    assert await proxy.renders() == 1
    assert proxy.store_calls("head", "miss") == 1
    assert proxy.store_calls("get", "miss") == 0  # not asked again for the bytes it lacks
    await proxy.store_drained()
    assert proxy.store_calls("put", "stored") == 1  # what a HEAD renders is shared too


# --- an imgproxy serve process -------------------------------------------------------------------------

def scrape_renders(metrics_port: int) -> float:
    text = http_get(f"http://127.0.0.1:{metrics_port}/metrics").body.decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == RENDERS)


def test_serve_counts_renders_and_a_head_after_a_get_adds_none(tmp_path: Path, moto_endpoint: str,
                                                               bucket: str, s3: Any) -> None:
    s3.put_object(Bucket=bucket, Key=KEY, Body=jpeg(), ContentType="image/jpeg")
    port, metrics_port = free_port(), free_port()
    data = config_data(moto_endpoint, bucket)
    data["server"]["port"] = port
    data["metrics"] = {"port": metrics_port}
    data["transform"] = {"workers": 1}
    process = Process(command("serve", "--config", str(write_config(tmp_path, data))), tmp_path / "serve")
    try:
        base = f"http://127.0.0.1:{port}"
        process.wait_until_healthy(base)
        url = UrlSigner(SIGNING_KEY, "k1", base).sign("photos", KEY, params={"w": "240"})
        head = http_get(url, method="HEAD")
        assert (head.status, head.headers["X-Cache"], scrape_renders(metrics_port)) == (200, "MISS", 1)
        got = http_get(url)
        assert (got.status, got.headers["X-Cache"]) == (200, "HIT")
        assert head.headers["Content-Length"] == str(len(got.body))
        assert headers_of(head, keep_cache=False) == headers_of(got, keep_cache=False)
        again = http_get(url, method="HEAD")
        assert (again.status, again.body, again.headers["X-Cache"]) == (200, b"", "HIT")
        assert scrape_renders(metrics_port) == 1
        assert process.stop() == 0
    finally:
        process.kill()
