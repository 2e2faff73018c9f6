"""A transform's source is read by the image worker itself (``storage/worker_read.py``), without a
HEAD first when one could find nothing; what can go wrong between the serving process's HEAD and
the worker's GET is answered exactly as when the serving process read it: the same status, error
code, log line and metric.

Each case first lets a request succeed (so the metadata cache knows the object, and the next
request's HEAD is skipped), then breaks the read behind it: the object grows or goes, S3 stalls
or becomes unreachable, or its certificate stops verifying.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from nginx_site import Authority
from PIL import Image
from s3_gate import ManualClock, S3Gate
from support import TOKEN, ProxyFactory, RelayFactory

from imgproxy.auth.signing import UrlSigner
from imgproxy.cache import SourceMeta
from imgproxy.web import appkeys as keys

KEY = "people/ada.jpg"


def noisy_jpeg(size: tuple[int, int] = (1200, 900)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 80).convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


SOURCE = noisy_jpeg()  # ~1 MB: more than the relay lets through before it stalls


def second(signer: UrlSigner) -> str:
    """Another variant of the same object: a render, its source's HEAD skipped."""
    return signer.sign("photos", KEY, params={"w": "120"})


def storage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "imgproxy.storage"]


async def error_of(client: TestClient[Any, Any], url: str) -> tuple[int, str]:
    async with client.get(url) as response:
        return response.status, (await response.json())["error"]


def s3_errors(client: TestClient[Any, Any]) -> str:
    assert client.app is not None
    return "\n".join(line for line in client.app[keys.METRICS].exposition().decode().splitlines()
                     if line.startswith("imgproxy_s3_errors_total"))


BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_cold_thumbnail_is_one_get_and_its_second_view_a_head_and_a_hit(
        proxy: ProxyFactory, s3_gate: S3Gate, clock: ManualClock, s3: Any, bucket: str) -> None:
    """Every presigned request is checked by the gate, which records its method: the first view
    of a never-rendered variant needs no HEAD (nothing cached to look up); the worker's GET tells
    the ETag. The next one must prove the source unchanged (metadata_ttl 0): HEAD, then HIT."""
    s3.put_object(Bucket=bucket, Key=KEY, Body=SOURCE, ContentType="image/jpeg")
    client = await proxy(source={"endpoint_url": s3_gate.endpoint}, clock=clock, cache={"metadata_ttl": 0})
    url = "/img/photos/people/ada.jpg?w=100"
    first = await client.get(url, headers=BEARER)
    assert (first.status, first.headers["X-Cache"]) == (200, "MISS")
    assert s3_gate.accepted == [f"GET /{bucket}/{KEY}"]
    second = await client.get(url, headers=BEARER)
    assert (second.status, second.headers["X-Cache"]) == (200, "HIT")
    assert second.headers["ETag"] == first.headers["ETag"]
    assert await second.read() == await first.read()
    assert s3_gate.accepted[1:] == [f"HEAD /{bucket}/{KEY}"]
    # A client holding an ETag may be current, so a HEAD comes first (this one is not: rendered).
    other = await client.get("/img/photos/people/ada.jpg?w=90", headers={**BEARER, "If-None-Match": '"x"'})
    assert other.status == 200
    assert s3_gate.accepted[2:] == [f"HEAD /{bucket}/{KEY}", f"GET /{bucket}/{KEY}"]


async def test_a_cold_thumbnail_over_the_size_limit_is_413_with_its_body_unread(
        proxy: ProxyFactory, relay_to: RelayFactory, moto_endpoint: str, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key=KEY, Body=SOURCE, ContentType="image/jpeg")
    relay = await relay_to(moto_endpoint)
    relay.stall_after = len(SOURCE) // 4  # a worker reading the body would time out: 504
    client = await proxy(source={"endpoint_url": relay.endpoint, "read_timeout": 2},
                         transform={"max_source_bytes": len(SOURCE) - 1})
    started = time.monotonic()
    response = await client.get("/img/photos/people/ada.jpg?w=100", headers=BEARER)
    assert (response.status, (await response.json())["error"]) == (413, "source_too_large")
    assert time.monotonic() - started < 1.5


@pytest.fixture
def cached(proxy: ProxyFactory) -> ProxyFactory:
    """Metadata cached for a minute (the next request's HEAD is skipped), no variant cache."""
    return proxy.preset(cache={"metadata_ttl": 60, "variant_bytes": 0}, transform={"workers": 1})


async def rendered_once(cached: ProxyFactory, s3: Any, bucket: str, signer: UrlSigner, *,
                        source: dict[str, Any] | None = None,
                        transform: dict[str, Any] | None = None) -> TestClient[Any, Any]:
    """The source stored, the app started (``source``/``transform`` as for ``cached``), and one
    variant of it rendered: the app's metadata cache now knows the object."""
    s3.put_object(Bucket=bucket, Key=KEY, Body=SOURCE, ContentType="image/jpeg")
    client = await cached(source=source or {}, transform=transform or {})
    assert (await client.get(signer.sign("photos", KEY, params={"w": "100"}))).status == 200
    return client


async def test_a_source_that_grew_past_the_limit_since_the_head_is_413_unread(
        cached: ProxyFactory, s3: Any, bucket: str, signer: UrlSigner) -> None:
    client = await rendered_once(cached, s3, bucket, signer, transform={"max_source_bytes": 2 * len(SOURCE)})
    s3.put_object(Bucket=bucket, Key=KEY, Body=SOURCE * 3, ContentType="image/jpeg")
    assert await error_of(client, second(signer)) == (413, "source_too_large")


async def test_a_source_deleted_since_the_head_is_404(
        cached: ProxyFactory, s3: Any, bucket: str, signer: UrlSigner) -> None:
    client = await rendered_once(cached, s3, bucket, signer)
    s3.delete_object(Bucket=bucket, Key=KEY)
    assert await error_of(client, second(signer)) == (404, "not_found")


async def test_a_source_read_that_stalls_is_504_within_the_read_timeout(
        cached: ProxyFactory, relay_to: RelayFactory, moto_endpoint: str, s3: Any, bucket: str,
        signer: UrlSigner, caplog: pytest.LogCaptureFixture) -> None:
    relay = await relay_to(moto_endpoint)
    client = await rendered_once(cached, s3, bucket, signer,
                                 source={"endpoint_url": relay.endpoint, "read_timeout": 0.5})
    relay.stall_after = len(SOURCE) // 2  # per connection: the worker's GET stalls halfway
    with caplog.at_level(logging.ERROR):
        assert await error_of(client, second(signer)) == (504, "storage_timeout")
    assert storage_lines(caplog) == ["storage timed out (source=photos op=get)"]
    assert 'imgproxy_s3_errors_total{code="storage_timeout",operation="get"} 1.0' in s3_errors(client)


async def test_a_source_read_that_cannot_connect_is_502_and_says_so(
        cached: ProxyFactory, relay_to: RelayFactory, moto_endpoint: str, s3: Any, bucket: str,
        signer: UrlSigner, caplog: pytest.LogCaptureFixture) -> None:
    relay = await relay_to(moto_endpoint)
    client = await rendered_once(cached, s3, bucket, signer,
                                 source={"endpoint_url": relay.endpoint, "max_attempts": 1})
    await relay.close()
    with caplog.at_level(logging.ERROR):
        assert await error_of(client, second(signer)) == (502, "storage_error")
    [line] = storage_lines(caplog)
    assert line.startswith("storage unreachable (source=photos op=get): ")


async def test_a_worker_read_whose_certificate_does_not_verify_is_502_naming_the_problem(
        proxy: ProxyFactory, https_endpoint: str, other_authority: Authority, s3: Any, bucket: str,
        signer: UrlSigner, caplog: pytest.LogCaptureFixture) -> None:
    s3.put_object(Bucket=bucket, Key=KEY, Body=SOURCE, ContentType="image/jpeg")
    client = await proxy(source={"endpoint_url": https_endpoint, "ca_bundle": str(other_authority.ca),
                                 "max_attempts": 1}, cache={"metadata_ttl": 60})
    assert client.app is not None
    # What a HEAD over the same (untrusted) connection cannot tell: known from before.
    client.app[keys.METADATA].put("photos", KEY, SourceMeta('"known"', len(SOURCE), "image/jpeg"))
    with caplog.at_level(logging.ERROR):
        async with client.get(signer.sign("photos", KEY, params={"w": "100"})) as response:
            body = await response.read()
    assert response.status == 502
    assert b"certificate" not in body
    [line] = storage_lines(caplog)
    assert line.startswith("storage TLS handshake failed (source=photos op=get): certificate verify failed: ")
    assert "sources.photos.ca_bundle" in line
    assert "X-Amz" not in line
    assert "ada" not in line
