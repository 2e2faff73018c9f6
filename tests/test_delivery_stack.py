"""Delivery modes through the whole stack: aiohttp -> originals/offload -> aiobotocore -> S3.

The source's endpoint is an ``S3Gate`` in front of moto, so every presigned URL the proxy hands
out is checked as S3 would check it (botocore's signature, X-Amz-Date + X-Amz-Expires against
the test's clock) before moto serves the bytes. The app and the gate share that clock.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from botocore.config import Config as BotoConfig
from PIL import Image
from s3_gate import ManualClock, S3Gate
from support import ACCESS_KEY, DELIVERY_NOW, SECRET_KEY, SIGNING_KEY, TOKEN, ProxyFactory
from yarl import URL

from imgproxy.auth.signing import UrlSigner
from imgproxy.web import appkeys as keys

BEARER = {"Authorization": f"Bearer {TOKEN}"}
T0 = int(DELIVERY_NOW)  # a window start for one-hour windows


def png(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = png()


@pytest.fixture
def gated(proxy: ProxyFactory, s3_gate: S3Gate, clock: ManualClock) -> ProxyFactory:
    """``await gated(delivery={"mode": "redirect"})``: the app with its storage behind the gate,
    its clock the test's."""
    return proxy.preset(source={"endpoint_url": s3_gate.endpoint}, clock=clock)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client, as a browser following the proxy's answers."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


@pytest.fixture
def stored(s3: Any, bucket: str) -> Callable[..., str]:
    def put(key: str = "photo.png", body: bytes = PNG, content_type: str = "image/png") -> str:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        return key

    return put


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[aiohttp.ClientResponse, bytes]:
    async with http.get(URL(url, encoded=True), allow_redirects=False) as response:
        return response, await response.read()


async def location(client: TestClient[Any, Any], key: str = "photo.png") -> str:
    response = await client.get(f"/img/photos/{key}", headers=BEARER, allow_redirects=False)
    assert response.status == 302, await response.text()
    return response.headers["Location"]


# The gate itself: it must accept what S3 accepts and refuse what S3 refuses ------------------------

def botocore_presigned(endpoint: str, bucket: str, key: str) -> str:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY,
                          config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}))
    url: str = client.generate_presigned_url("get_object", ExpiresIn=600, Params={
        "Bucket": bucket, "Key": key, "ResponseCacheControl": "private, max-age=60"})
    return url


async def test_the_gate_serves_a_url_presigned_by_botocore(s3_gate: S3Gate, clock: ManualClock, bucket: str,
                                                           stored: Callable[..., str],
                                                           http: aiohttp.ClientSession) -> None:
    clock.now = time.time()  # botocore signs with the real time
    response, body = await fetch(http, botocore_presigned(s3_gate.endpoint, bucket, stored("a b+c.png")))
    assert (response.status, body) == (200, PNG)
    assert s3_gate.accepted == [f"GET /{bucket}/a%20b%2Bc.png"]


async def test_the_gate_refuses_a_tampered_presigned_url(s3_gate: S3Gate, clock: ManualClock, bucket: str,
                                                         stored: Callable[..., str],
                                                         http: aiohttp.ClientSession) -> None:
    clock.now = time.time()
    url = botocore_presigned(s3_gate.endpoint, bucket, stored()).replace("max-age%3D60", "max-age%3D99999")
    response, body = await fetch(http, url)
    assert response.status == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in body


# stream ------------------------------------------------------------------------------------------

async def test_stream_mode_never_redirects_large_or_hot_objects(gated: ProxyFactory,
                                                                stored: Callable[..., str]) -> None:
    client = await gated(delivery={"mode": "stream", "redirect_min_bytes": 1, "hot_requests": 1})
    stored()
    for _ in range(4):
        response = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
        assert response.status == 200
        assert response.headers["X-Delivery"] == "stream"
        assert await response.read() == PNG
        assert re.fullmatch(r"delivery;desc=stream, storage;dur=[0-9.]+", response.headers["Server-Timing"])


# redirect ----------------------------------------------------------------------------------------

async def test_redirect_mode_answers_302_to_a_presigned_url_at_the_sources_endpoint(
        gated: ProxyFactory, stored: Callable[..., str], s3_gate: S3Gate, bucket: str) -> None:
    client = await gated(delivery={"mode": "redirect"})
    stored()
    response = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
    assert response.status == 302
    url = response.headers["Location"]
    assert url.startswith(f"{s3_gate.endpoint}/{bucket}/photo.png?")
    assert "X-Amz-Signature=" in url


async def test_redirect_status_is_307_when_configured(gated: ProxyFactory,
                                                      stored: Callable[..., str]) -> None:
    client = await gated(delivery={"mode": "redirect", "redirect_status": 307})
    stored()
    response = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
    assert response.status == 307
    assert "X-Amz-Signature=" in response.headers["Location"]


async def test_a_redirect_may_be_cached_privately_for_the_rest_of_its_window(
        gated: ProxyFactory, stored: Callable[..., str], clock: ManualClock) -> None:
    client = await gated(delivery={"mode": "redirect", "presign_window": "1h", "presign_ttl": "2h"})
    stored()
    clock.advance(1000)
    response = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
    assert response.headers["Cache-Control"] == "private, max-age=2600"
    # The HEAD that proved the object exists is the only storage time.
    assert re.fullmatch(r"delivery;desc=redirect, storage;dur=[0-9.]+", response.headers["Server-Timing"])


async def test_following_the_redirect_downloads_the_exact_bytes_from_s3(
        gated: ProxyFactory, stored: Callable[..., str], s3_gate: S3Gate, http: aiohttp.ClientSession,
        bucket: str) -> None:
    client = await gated(delivery={"mode": "redirect"})
    body = bytes(range(256)) * 4096  # 1 MiB: many chunks through the gate
    stored(body=body)
    response, received = await fetch(http, await location(client))
    assert (response.status, received) == (200, body)
    # Checked by the gate, not waved through: the proxy's HEAD, then the client's GET.
    assert s3_gate.accepted == [f"HEAD /{bucket}/photo.png", f"GET /{bucket}/photo.png"]


async def test_a_key_with_unusual_characters_downloads_through_its_presigned_url(
        gated: ProxyFactory, stored: Callable[..., str], http: aiohttp.ClientSession) -> None:
    client = await gated(delivery={"mode": "redirect"})
    key = stored("dir/Zoë b+c (1)=%~*.png")
    response, body = await fetch(http, await location(client, quote(key, safe="/")))
    assert (response.status, body) == (200, PNG)


async def test_a_presigned_url_from_session_credentials_signs_the_token(
        gated: ProxyFactory, stored: Callable[..., str], http: aiohttp.ClientSession) -> None:
    client = await gated(delivery={"mode": "redirect"}, source={"session_token": "session/token+="})
    stored()
    url = await location(client)
    assert parse_qs(urlsplit(url).query)["X-Amz-Security-Token"] == ["session/token+="]
    response, body = await fetch(http, url)
    assert (response.status, body) == (200, PNG)


@pytest.fixture
async def container_credentials(aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch,
                                clock: ManualClock) -> float:
    """Temporary credentials from the standard AWS chain (a container-credentials endpoint, as
    ECS serves them), expiring 30 minutes from now; returns their expiry (unix seconds).

    botocore compares expiry with the real time, so the test's clock is the real time here."""
    clock.now = time.time()
    expires = int(clock.now) + 1800

    async def serve(request: web.Request) -> web.Response:
        return web.json_response({
            "AccessKeyId": ACCESS_KEY, "SecretAccessKey": SECRET_KEY, "Token": "container-session-token",
            "Expiration": datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})

    app = web.Application()
    app.router.add_get("/credentials", serve)
    server = await aiohttp_server(app)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", str(server.make_url("/credentials")))
    return expires


async def temporary_credentials_proxy(gated: ProxyFactory) -> TestClient[Any, Any]:
    return await gated(delivery={"mode": "redirect", "presign_window": "1h", "presign_ttl": "2h"},
                       source={"access_key_id": None, "secret_access_key": None})


async def test_a_url_signed_with_temporary_credentials_expires_with_them(
        gated: ProxyFactory, stored: Callable[..., str], clock: ManualClock,
        container_credentials: float) -> None:
    client = await temporary_credentials_proxy(gated)
    stored()
    response = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["X-Amz-Security-Token"] == ["container-session-token"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    assert signed_at + int(query["X-Amz-Expires"][0]) == container_credentials
    max_age = int(response.headers["Cache-Control"].rpartition("=")[2])
    assert 0 < max_age <= container_credentials - clock()


async def test_a_url_signed_with_temporary_credentials_works_until_they_expire(
        gated: ProxyFactory, stored: Callable[..., str], clock: ManualClock, http: aiohttp.ClientSession,
        container_credentials: float) -> None:
    client = await temporary_credentials_proxy(gated)
    stored()
    url = await location(client)
    clock.now = container_credentials - 1
    assert (await fetch(http, url))[0].status == 200
    clock.now = container_credentials + 1
    assert (await fetch(http, url))[0].status == 403


async def test_s3_answers_the_redirect_with_the_sources_cache_control(
        gated: ProxyFactory, stored: Callable[..., str], http: aiohttp.ClientSession) -> None:
    client = await gated(delivery={"mode": "redirect"}, source={"cache_control": "private, max-age=1234"})
    stored()
    response, _ = await fetch(http, await location(client))
    assert response.headers["Cache-Control"] == "private, max-age=1234"


async def test_s3_answers_the_redirect_with_the_stored_image_type_inline(
        gated: ProxyFactory, stored: Callable[..., str], http: aiohttp.ClientSession) -> None:
    client = await gated(delivery={"mode": "redirect"})
    stored()
    response, _ = await fetch(http, await location(client))
    assert response.headers["Content-Type"] == "image/png"
    assert "Content-Disposition" not in response.headers


async def test_an_html_object_comes_from_s3_as_an_octet_stream_attachment(
        gated: ProxyFactory, stored: Callable[..., str], http: aiohttp.ClientSession) -> None:
    client = await gated(delivery={"mode": "redirect"})
    stored("page.png", b"<html><script>alert(1)</script></html>", "text/html")
    response, _ = await fetch(http, await location(client, "page.png"))
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"] == "attachment"


async def test_two_requests_in_the_same_window_get_byte_identical_locations(
        gated: ProxyFactory, stored: Callable[..., str], clock: ManualClock) -> None:
    client = await gated(delivery={"mode": "redirect", "presign_window": "1h", "presign_ttl": "2h"})
    stored()
    clock.advance(5)
    first = await location(client)
    clock.advance(3590)  # T0 + 3595: the same hour
    assert await location(client) == first


async def test_a_window_boundary_changes_the_location(gated: ProxyFactory, stored: Callable[..., str],
                                                      clock: ManualClock) -> None:
    client = await gated(delivery={"mode": "redirect", "presign_window": "1h", "presign_ttl": "2h"})
    stored()
    clock.advance(3599)
    first = await location(client)
    clock.advance(1)  # T0 + 3600: the next hour
    second = await location(client)
    assert second != first
    assert parse_qs(urlsplit(second).query)["X-Amz-Date"] == ["20270115T090000Z"]


async def test_the_presigned_url_still_works_a_second_before_it_expires(
        gated: ProxyFactory, stored: Callable[..., str], clock: ManualClock,
        http: aiohttp.ClientSession) -> None:
    client = await gated(delivery={"mode": "redirect", "presign_window": "1h", "presign_ttl": "2h"})
    stored()
    clock.advance(3599)
    url = await location(client)
    clock.now = T0 + 7199  # signed at T0, valid for 7200 s
    response, body = await fetch(http, url)
    assert (response.status, body) == (200, PNG)


async def test_the_presigned_url_is_refused_after_it_expires(
        gated: ProxyFactory, stored: Callable[..., str], clock: ManualClock, http: aiohttp.ClientSession,
        s3_gate: S3Gate) -> None:
    client = await gated(delivery={"mode": "redirect", "presign_window": "1h", "presign_ttl": "2h"})
    stored()
    url = await location(client)
    clock.now = T0 + 7201
    response, body = await fetch(http, url)
    assert response.status == 403
    assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in body
    assert s3_gate.refused == ["AccessDenied"]


async def test_a_transformed_variant_is_never_redirected(gated: ProxyFactory,
                                                         stored: Callable[..., str]) -> None:
    client = await gated(delivery={"mode": "redirect"})
    stored()
    response = await client.get("/img/photos/photo.png?w=8", headers=BEARER, allow_redirects=False)
    assert response.status == 200
    assert response.headers["X-Delivery"] == "stream"
    assert Image.open(io.BytesIO(await response.read())).width == 8


async def test_if_none_match_with_the_objects_etag_is_304_from_the_proxy_in_redirect_mode(
        gated: ProxyFactory, stored: Callable[..., str], s3: Any, bucket: str) -> None:
    client = await gated(delivery={"mode": "redirect"})
    etag = s3.head_object(Bucket=bucket, Key=stored())["ETag"]
    response = await client.get("/img/photos/photo.png", headers={**BEARER, "If-None-Match": etag},
                                allow_redirects=False)
    assert response.status == 304
    assert "Location" not in response.headers
    assert response.headers["ETag"] == etag


@pytest.mark.parametrize("mode", ["redirect", "accel"])
async def test_a_missing_object_is_404_not_an_offload_to_a_404(gated: ProxyFactory, mode: str) -> None:
    client = await gated(delivery={"mode": mode})
    response = await client.get("/img/photos/nothing-here.png", headers=BEARER, allow_redirects=False)
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
    assert "Location" not in response.headers
    assert "X-Accel-Redirect" not in response.headers


# auto --------------------------------------------------------------------------------------------

async def test_auto_streams_the_first_request_for_a_large_object_and_redirects_once_its_size_is_known(
        gated: ProxyFactory, stored: Callable[..., str]) -> None:
    client = await gated(delivery={"mode": "auto", "redirect_min_bytes": len(PNG) - 1})
    stored()
    first = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
    assert (first.status, first.headers["X-Delivery"], await first.read()) == (200, "stream", PNG)
    second = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
    assert (second.status, second.headers["X-Delivery"]) == (302, "redirect")


async def test_auto_keeps_streaming_an_object_no_larger_than_redirect_min_bytes(
        gated: ProxyFactory, stored: Callable[..., str]) -> None:
    client = await gated(delivery={"mode": "auto", "redirect_min_bytes": len(PNG)})
    stored()
    for _ in range(3):
        response = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
        assert (response.status, response.headers["X-Delivery"]) == (200, "stream")


async def test_auto_redirects_an_object_requested_more_than_hot_requests_times(
        gated: ProxyFactory, stored: Callable[..., str]) -> None:
    client = await gated(delivery={"mode": "auto", "hot_requests": 3, "hot_window": "1h"})
    stored()
    statuses = []
    for _ in range(5):
        response = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
        statuses.append(response.status)
    assert statuses == [200, 200, 200, 302, 302]


async def test_hot_counters_stay_bounded_whatever_the_key_space(gated: ProxyFactory) -> None:
    client = await gated(delivery={"mode": "auto", "hot_entries": 5})
    for i in range(40):
        response = await client.get(f"/img/photos/missing-{i}.png", headers=BEARER)
        assert response.status == 404
    assert 0 < len(client.app[keys.HOT]) <= 5


# accel -------------------------------------------------------------------------------------------

async def test_accel_mode_hands_nginx_an_internal_location_and_a_presigned_upstream(
        gated: ProxyFactory, stored: Callable[..., str], s3_gate: S3Gate, bucket: str) -> None:
    client = await gated(delivery={"mode": "accel", "accel_location": "/internal/s3"})
    stored()
    response = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
    assert response.status == 200
    assert response.headers["X-Accel-Redirect"] == "/internal/s3"
    assert response.headers["X-Imgproxy-Upstream"].startswith(f"{s3_gate.endpoint}/{bucket}/photo.png?")
    assert await response.read() == b""  # nginx moves the bytes, not Python


async def test_the_accel_upstream_url_downloads_the_object(gated: ProxyFactory, stored: Callable[..., str],
                                                           http: aiohttp.ClientSession) -> None:
    client = await gated(delivery={"mode": "accel"})
    stored()
    response = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
    upstream, body = await fetch(http, response.headers["X-Imgproxy-Upstream"])
    assert (upstream.status, body) == (200, PNG)


# per-source mode ---------------------------------------------------------------------------------

async def test_a_sources_stream_mode_overrides_a_global_redirect(gated: ProxyFactory,
                                                                 stored: Callable[..., str]) -> None:
    client = await gated(delivery={"mode": "redirect"}, source={"delivery": {"mode": "stream"}})
    stored()
    response = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
    assert (response.status, response.headers["X-Delivery"]) == (200, "stream")


async def test_a_sources_redirect_mode_overrides_a_global_stream(gated: ProxyFactory,
                                                                 stored: Callable[..., str]) -> None:
    client = await gated(delivery={"mode": "stream"}, source={"delivery": {"mode": "redirect"}})
    stored()
    response = await client.get("/img/photos/photo.png", headers=BEARER, allow_redirects=False)
    assert (response.status, response.headers["X-Delivery"]) == (302, "redirect")


# observability -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "query", "status", "delivery"), [
    ("stream", "", 200, "stream"),
    ("redirect", "", 302, "redirect"),
    ("accel", "", 200, "accel"),
    ("auto", "", 200, "stream"),
    ("redirect", "?w=8", 200, "stream"),
])
async def test_every_image_response_says_how_it_was_delivered(
        gated: ProxyFactory, stored: Callable[..., str], mode: str, query: str, status: int,
        delivery: str) -> None:
    client = await gated(delivery={"mode": mode})
    stored()
    response = await client.get(f"/img/photos/photo.png{query}", headers=BEARER, allow_redirects=False)
    assert (response.status, response.headers["X-Delivery"]) == (status, delivery)


@pytest.mark.parametrize("mode", ["stream", "redirect", "accel"])
async def test_the_access_log_records_the_delivery_and_no_signature(
        gated: ProxyFactory, stored: Callable[..., str], clock: ManualClock, caplog: pytest.LogCaptureFixture,
        mode: str) -> None:
    client = await gated(delivery={"mode": mode})
    stored()
    url = UrlSigner(SIGNING_KEY, "k1").sign("photos", "photo.png", now=clock())
    with caplog.at_level(logging.DEBUG, logger="imgproxy"):
        response = await client.get(url, allow_redirects=False)
        await response.read()
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("imgproxy"))
    [line] = [r.getMessage() for r in caplog.records if r.name == "imgproxy.access"]
    assert f" delivery={mode}" in line
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    offloaded = response.headers.get("Location", "") + response.headers.get("X-Imgproxy-Upstream", "")
    amz_signature = re.search(r"X-Amz-Signature=(\w+)", offloaded)
    assert "X-Amz-" not in ours
    assert sig not in ours
    assert amz_signature is None or amz_signature.group(1) not in ours
