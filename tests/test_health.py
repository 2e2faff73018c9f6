"""Liveness and readiness over HTTP: /healthz never touches S3, /readyz probes it, briefly cached.

The probes are counted on the wire with a ``TcpRelay``; the readiness cache's clock is the one
given to the app (``proxy(clock=...)``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from processes import free_port
from support import ProxyFactory, RelayFactory, source_table
from tcp_relay import TcpRelay

from imgproxy.web.appkeys import METRICS_URL

CACHE_SECONDS = 5.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- /healthz ----------------------------------------------------------------------------------

async def test_healthz_is_200(client: TestClient[Any, Any]) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_healthz_is_not_cacheable(client: TestClient[Any, Any]) -> None:
    response = await client.get("/healthz")
    assert response.headers[hdrs.CACHE_CONTROL] == "no-store"


async def test_healthz_is_200_while_storage_is_down(proxy: ProxyFactory) -> None:
    client = await proxy(source={"endpoint_url": f"http://127.0.0.1:{free_port()}"})
    response = await client.get("/healthz")
    assert response.status == 200


async def test_healthz_never_touches_storage(proxy: ProxyFactory, relay: TcpRelay) -> None:
    client = await proxy(source={"endpoint_url": relay.endpoint})
    for _ in range(3):
        assert (await client.get("/healthz")).status == 200
    assert relay.requests_sent() == 0


async def test_healthz_needs_no_credentials_and_carries_a_request_id(client: TestClient[Any, Any]) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert response.headers["X-Request-Id"]


# --- /readyz -----------------------------------------------------------------------------------

async def test_readyz_is_200_and_names_no_source_when_storage_is_up(client: TestClient[Any, Any]) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}


async def operators_readyz(client: TestClient[Any, Any]) -> tuple[int, Any]:
    """The detailed report, from the metrics address."""
    assert client.app is not None
    url = client.app[METRICS_URL].removesuffix("/metrics") + "/readyz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_the_metrics_address_lists_every_source_state(client: TestClient[Any, Any]) -> None:
    assert await operators_readyz(client) == (200, {"status": "ready", "sources": {"photos": "ok"}})


async def test_readyz_is_not_cacheable(client: TestClient[Any, Any]) -> None:
    response = await client.get("/readyz")
    assert response.headers[hdrs.CACHE_CONTROL] == "no-store"


async def test_readyz_is_503_not_ready_when_a_source_is_down(proxy: ProxyFactory) -> None:
    client = await proxy(source={"endpoint_url": f"http://127.0.0.1:{free_port()}"})
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["error"] == "not_ready"
    assert set(body) == {"error", "message", "request_id"}


async def test_readyz_is_503_when_a_bucket_is_missing(proxy: ProxyFactory) -> None:
    client = await proxy(source={"bucket": "no-such-bucket-for-readyz"})
    response = await client.get("/readyz")
    assert response.status == 503


async def test_readyz_names_the_failing_source_only_on_the_metrics_address(
        proxy: ProxyFactory, moto_endpoint: str, bucket: str) -> None:
    archive = source_table(moto_endpoint, bucket, endpoint_url=f"http://127.0.0.1:{free_port()}")
    client = await proxy(sources={"archive": archive})
    response = await client.get("/readyz")
    text = await response.text()
    assert response.status == 503
    assert "archive" not in text
    assert "photos" not in text
    status, body = await operators_readyz(client)
    assert status == 503
    assert body == {"status": "not_ready", "sources": {"photos": "ok", "archive": "storage_error"}}


async def test_readyz_tells_nothing_internal(proxy: ProxyFactory, moto_endpoint: str) -> None:
    client = await proxy(source={"bucket": "no-such-bucket-for-readyz"})
    text = await (await client.get("/readyz")).text()
    assert "no-such-bucket-for-readyz" not in text
    assert moto_endpoint not in text


# --- Readiness is cached -------------------------------------------------------------------------

@pytest.fixture
async def cached(proxy: ProxyFactory, relay_to: RelayFactory,
                 moto_endpoint: str) -> tuple[TestClient[Any, Any], TcpRelay, Clock]:
    """Readiness cached for ``CACHE_SECONDS`` on a hand-moved clock, probed through a relay."""
    relay = await relay_to(moto_endpoint)
    clock = Clock()
    client = await proxy(source={"endpoint_url": relay.endpoint},
                         server={"ready_cache_seconds": CACHE_SECONDS}, clock=clock)
    return client, relay, clock


async def test_the_first_readyz_probes_storage(cached: tuple[TestClient[Any, Any], TcpRelay, Clock]) -> None:
    client, relay, _ = cached
    assert relay.requests_sent() == 0
    assert (await client.get("/readyz")).status == 200
    assert relay.requests_sent() == 1


async def test_readyz_is_not_probed_again_within_the_cache_window(
    cached: tuple[TestClient[Any, Any], TcpRelay, Clock]
) -> None:
    client, relay, clock = cached
    await client.get("/readyz")
    clock.now += CACHE_SECONDS - 0.1
    for _ in range(3):
        assert (await client.get("/readyz")).status == 200
    assert relay.requests_sent() == 1


async def test_readyz_is_probed_again_once_the_window_has_passed(
    cached: tuple[TestClient[Any, Any], TcpRelay, Clock]
) -> None:
    client, relay, clock = cached
    await client.get("/readyz")
    clock.now += CACHE_SECONDS
    assert (await client.get("/readyz")).status == 200
    assert relay.requests_sent() == 2


async def test_concurrent_readyz_requests_share_one_probe(
    cached: tuple[TestClient[Any, Any], TcpRelay, Clock]
) -> None:
    client, relay, _ = cached
    responses = await asyncio.gather(*(client.get("/readyz") for _ in range(5)))
    assert [r.status for r in responses] == [200] * 5
    assert relay.requests_sent() == 1


async def test_a_cached_failure_lasts_only_the_window(
    proxy: ProxyFactory, relay_to: RelayFactory, moto_endpoint: str, s3: Any,
) -> None:
    relay = await relay_to(moto_endpoint)
    name = "readyz-created-later"
    clock = Clock()
    client = await proxy(source={"endpoint_url": relay.endpoint, "bucket": name},
                         server={"ready_cache_seconds": CACHE_SECONDS}, clock=clock)
    assert (await client.get("/readyz")).status == 503
    s3.create_bucket(Bucket=name)  # storage recovers
    try:
        assert (await client.get("/readyz")).status == 503  # still the cached answer
        clock.now += CACHE_SECONDS
        assert (await client.get("/readyz")).status == 200
    finally:
        s3.delete_bucket(Bucket=name)
