"""When storage is down, slow, refuses, or the client leaves: real sockets, real timeouts.

A closed port stands for an outage, a ``Blackhole`` for a storage that accepts and never
answers, a nonexistent bucket for storage refusing the proxy, and a ``TcpRelay`` watches the
proxy's connection to moto when a client disconnects or the storage stalls mid-body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from processes import free_port
from support import ACCESS_KEY, SECRET_KEY, ProxyFactory
from tcp_relay import Blackhole, TcpRelay

from imgproxy.auth.signing import UrlSigner
from imgproxy.web.appkeys import METRICS

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 1000
MISSING_BUCKET = "no-such-bucket-5e3c1a"


async def timed(request: Any) -> tuple[aiohttp.ClientResponse, dict[str, Any], float]:
    started = time.monotonic()
    response = await request
    raw = await response.read()
    elapsed = time.monotonic() - started
    return response, json.loads(raw) if raw else {}, elapsed


# --- Endpoint down -----------------------------------------------------------------------------

@pytest.fixture
async def down(proxy: ProxyFactory) -> TestClient[Any, Any]:
    """A source whose endpoint is a loopback port nothing listens on."""
    return await proxy(source={"endpoint_url": f"http://127.0.0.1:{free_port()}"})


async def test_storage_down_is_502_storage_error(down: TestClient[Any, Any], signer: UrlSigner) -> None:
    response, body, _ = await timed(down.get(signer.sign("photos", "a.jpg")))
    assert response.status == 502
    assert body["error"] == "storage_error"


async def test_storage_down_answers_quickly(down: TestClient[Any, Any], signer: UrlSigner) -> None:
    _, _, elapsed = await timed(down.get(signer.sign("photos", "a.jpg")))
    assert elapsed < 5


async def test_storage_down_on_head_is_502(down: TestClient[Any, Any], signer: UrlSigner) -> None:
    response = await down.head(signer.sign("photos", "a.jpg"))
    assert response.status == 502


async def test_storage_down_body_names_no_endpoint(down: TestClient[Any, Any], signer: UrlSigner) -> None:
    response = await down.get(signer.sign("photos", "a.jpg"))
    text = await response.text()
    assert "127.0.0.1" not in text
    assert "Traceback" not in text


# --- Slow storage ------------------------------------------------------------------------------

@pytest.fixture
async def hanging(proxy: ProxyFactory, blackhole: Blackhole) -> TestClient[Any, Any]:
    """A source whose endpoint accepts connections and never answers (read_timeout=1)."""
    return await proxy(source={"endpoint_url": blackhole.endpoint, "read_timeout": 1, "connect_timeout": 0.5})


@pytest.mark.slow
async def test_slow_storage_is_504_storage_timeout(hanging: TestClient[Any, Any], signer: UrlSigner,
                                                  blackhole: Blackhole) -> None:
    response, body, _ = await timed(hanging.get(signer.sign("photos", "a.jpg")))
    assert response.status == 504
    assert body["error"] == "storage_timeout"
    assert blackhole.accepted >= 1


@pytest.mark.slow
async def test_slow_storage_answers_at_the_configured_timeout(hanging: TestClient[Any, Any],
                                                              signer: UrlSigner) -> None:
    _, _, elapsed = await timed(hanging.get(signer.sign("photos", "a.jpg")))
    assert 0.9 <= elapsed < 3.5


@pytest.mark.slow
async def test_slow_storage_on_head_is_504(hanging: TestClient[Any, Any], signer: UrlSigner) -> None:
    response, body, elapsed = await timed(hanging.head(signer.sign("photos", "a.jpg")))
    assert response.status == 504
    assert elapsed < 3.5
    assert body == {}  # HEAD: the status says it all, no body


# --- Storage refuses -----------------------------------------------------------------------------

@pytest.fixture
async def refused(proxy: ProxyFactory) -> TestClient[Any, Any]:
    """A source naming a bucket that does not exist: storage refuses every read."""
    return await proxy(source={"bucket": MISSING_BUCKET})


async def test_storage_refusing_is_502_storage_error(refused: TestClient[Any, Any],
                                                     signer: UrlSigner) -> None:
    response = await refused.get(signer.sign("photos", "a.jpg"))
    assert response.status == 502
    assert (await response.json())["error"] == "storage_error"


async def test_storage_refusing_is_logged_with_its_reason(refused: TestClient[Any, Any], signer: UrlSigner,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        await refused.get(signer.sign("photos", "a.jpg"))
    storage_errors = [r for r in caplog.records
                      if r.name == "imgproxy.storage" and r.levelno == logging.ERROR]
    assert any("bucket does not exist" in r.getMessage() for r in storage_errors)
    assert any("source=photos" in r.getMessage() for r in storage_errors)


async def test_storage_refusing_tells_the_client_nothing_internal(refused: TestClient[Any, Any],
                                                                  signer: UrlSigner) -> None:
    response = await refused.get(signer.sign("photos", "a.jpg"))
    text = await response.text()
    assert MISSING_BUCKET not in text
    assert "NoSuchBucket" not in text
    assert set(await response.json()) == {"error", "message", "request_id"}


async def test_storage_errors_never_log_the_proxys_credentials(refused: TestClient[Any, Any],
                                                               signer: UrlSigner,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="imgproxy"):
        await refused.get(signer.sign("photos", "a.jpg"))
    imgproxy_text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("imgproxy"))
    assert "source=photos" in imgproxy_text
    assert SECRET_KEY not in imgproxy_text
    assert ACCESS_KEY not in imgproxy_text


# --- Mid-stream: the client leaves, or the storage stalls --------------------------------------------

BIG = 24 * 1024 * 1024


@pytest.fixture
async def streaming(proxy: ProxyFactory, relay: TcpRelay, s3: Any, bucket: str,
                    signer: UrlSigner) -> tuple[TestClient[Any, Any], str]:
    s3.put_object(Bucket=bucket, Key="big.jpg", Body=os.urandom(BIG), ContentType="image/jpeg")
    client = await proxy(source={"endpoint_url": relay.endpoint, "read_timeout": 1})
    return client, signer.sign("photos", "big.jpg")


@pytest.mark.slow
async def test_a_client_leaving_mid_stream_closes_the_s3_connection_promptly(
    streaming: tuple[TestClient[Any, Any], str], relay: TcpRelay
) -> None:
    client, url = streaming
    response = await client.get(url)
    assert response.status == 200
    await response.content.readexactly(256 * 1024)
    await asyncio.sleep(0.3)  # let buffers along the way fill: the upstream is now throttled
    [link] = relay.open_links()
    response.close()  # the client hangs up with most of the object unsent
    left_at = time.monotonic()
    closed_at = await relay.wait_until_closed(link, timeout=5)
    assert closed_at is not None, "the proxy kept its S3 connection open after the client left"
    assert closed_at - left_at < 2
    assert link.from_upstream < BIG


@pytest.mark.slow
async def test_a_client_leaving_mid_stream_does_not_break_the_next_request(
    streaming: tuple[TestClient[Any, Any], str], relay: TcpRelay, s3: Any, bucket: str, signer: UrlSigner
) -> None:
    client, url = streaming
    response = await client.get(url)
    await response.content.readexactly(64 * 1024)
    response.close()
    s3.put_object(Bucket=bucket, Key="small.jpg", Body=JPEG, ContentType="image/jpeg")
    after = await client.get(signer.sign("photos", "small.jpg"))
    assert after.status == 200
    assert await after.read() == JPEG


@pytest.mark.slow
async def test_storage_stalling_mid_stream_cuts_the_response_short(
    streaming: tuple[TestClient[Any, Any], str], relay: TcpRelay
) -> None:
    client, url = streaming
    relay.stall_after = 512 * 1024  # headers and the first half MiB, then silence
    started = time.monotonic()
    response = await client.get(url)
    assert response.status == 200  # headers were already sent when the storage stalled
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert time.monotonic() - started < 4


@pytest.mark.slow
async def test_storage_stalling_mid_stream_releases_the_s3_connection(
    streaming: tuple[TestClient[Any, Any], str], relay: TcpRelay
) -> None:
    client, url = streaming
    relay.stall_after = 512 * 1024
    response = await client.get(url)
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    [link] = [link for link in relay.links if link.from_upstream >= 512 * 1024]
    assert await relay.wait_until_closed(link, timeout=2) is not None


@pytest.mark.slow
async def test_storage_failing_mid_stream_is_counted_and_logged(
    streaming: tuple[TestClient[Any, Any], str], relay: TcpRelay, caplog: pytest.LogCaptureFixture
) -> None:
    client, url = streaming
    relay.stall_after = 512 * 1024
    caplog.set_level(logging.INFO, logger="imgproxy.access")
    response = await client.get(url)
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    scrape = client.app[METRICS].exposition().decode()
    assert 'imgproxy_s3_errors_total{code="interrupted",operation="get"} 1.0' in scrape
    [line] = [r.getMessage() for r in caplog.records if r.name == "imgproxy.access"]
    assert "aborted=storage_failed" in line
