"""HTTPS S3 with a private CA: ``sources.NAME.ca_bundle`` and ``verify_tls``, through the stack.

S3 is moto behind a real nginx that terminates TLS on loopback with a server certificate from a
throwaway CA made for the module (``conftest.https_endpoint``, ``nginx_site.make_authority``), as
MinIO or Ceph behind a load balancer with a company CA. The proxy talks to it with its two real
clients: aiobotocore (HEAD, LIST) and the body GETs' aiohttp session. With the right bundle
everything works; without one (the default trust store) or with another CA's, the answer is a
502 with the fixed public message, and the log line names the certificate problem.
"""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import hdrs
from nginx_site import NGINX, Authority
from PIL import Image
from processes import http_get, launch_server
from support import SIGNING_KEY, ProxyFactory, config_data, merged, source_table

from imgproxy.auth.signing import UrlSigner
from imgproxy.errors import StorageError
from imgproxy.web import appkeys as keys

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="the nginx binary is not installed (Debian: apt-get install nginx; .ci/run does)")

KEY: Final = "team/ada.jpg"
PUBLIC_502: Final = {"error": StorageError.code, "message": StorageError.public_message}


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((640, 480)).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


PHOTO: Final = jpeg()


@pytest.fixture(scope="module")
def tls_bucket(s3: Any) -> str:
    """A bucket holding KEY (seeded over moto's own plain endpoint)."""
    name = f"tls-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key=KEY, Body=PHOTO, ContentType="image/jpeg")
    return name


ONE_WORKER: Final = {"workers": 1}


@pytest.fixture
def over_https(proxy: ProxyFactory, https_endpoint: str, tls_bucket: str) -> ProxyFactory:
    """``await over_https(source={...})``: the app with its source on the HTTPS endpoint."""
    return proxy.preset(source={"endpoint_url": https_endpoint, "bucket": tls_bucket}, transform=ONE_WORKER)


def https_config(endpoint: str, bucket: str, **source: Any) -> dict[str, Any]:
    """The same, as a whole config (for ``imgproxy serve``)."""
    return merged(config_data(endpoint, bucket, **source), {"transform": ONE_WORKER})


def signed(**params: str) -> str:
    return UrlSigner(SIGNING_KEY, "k1").sign("photos", KEY, params=params)


# --- the right CA ------------------------------------------------------------------------------------

async def test_with_the_right_ca_bundle_originals_transforms_and_heads_are_served_over_https(
        over_https: ProxyFactory, authority: Authority) -> None:
    client = await over_https(source={"ca_bundle": str(authority.ca)})
    original = await client.get(signed())  # a presigned body GET over aiohttp
    assert (original.status, await original.read()) == (200, PHOTO)
    head = await client.head(signed())  # a HEAD through aiobotocore
    assert (head.status, head.headers[hdrs.CONTENT_LENGTH]) == (200, str(len(PHOTO)))
    variant = await client.get(signed(w="100"))  # HEAD for the source ETag, GET, render
    body = await variant.read()
    assert (variant.status, variant.headers["X-Cache"]) == (200, "MISS"), body
    assert Image.open(io.BytesIO(body)).size == (100, 75)
    variant_head = await client.head(signed(w="120"))
    assert (variant_head.status, variant_head.headers[hdrs.CONTENT_TYPE]) == (200, "image/jpeg")
    assert (await client.get("/readyz")).status == 200  # the LIST probe


async def test_the_shared_store_over_https_uses_its_own_ca_bundle(
        over_https: ProxyFactory, https_endpoint: str, authority: Authority, s3: Any) -> None:
    store = f"tls-store-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=store)
    replica = over_https.preset(
        source={"ca_bundle": str(authority.ca)},
        cache={"store": source_table(https_endpoint, store, prefix="v", ca_bundle=str(authority.ca))})
    first, second = await replica(), await replica()
    assert (await first.get(signed(w="90"))).headers["X-Cache"] == "MISS"
    assert first.app is not None
    await first.app[keys.STORE].drain()
    assert s3.list_objects_v2(Bucket=store)["KeyCount"] == 1
    assert (await second.head(signed(w="90"))).headers["X-Cache"] == "STORE"  # HEAD of the object
    assert (await second.get(signed(w="90"))).headers["X-Cache"] == "STORE"  # GET of its bytes


# --- no CA, or the wrong one: 502, and the log says why -----------------------------------------------

@pytest.mark.parametrize("trust", ["default-trust-store", "another-ca"])
@pytest.mark.parametrize(("method", "params"), [
    ("GET", {}),  # the original's body: aiohttp
    ("HEAD", {}),  # the original's HEAD: aiobotocore
    ("GET", {"w": "100"}),  # a transform: aiobotocore's HEAD comes first
], ids=["get-original", "head-original", "get-transform"])
async def test_a_certificate_that_does_not_verify_is_a_502_naming_the_problem_in_the_log(
        over_https: ProxyFactory, other_authority: Authority, caplog: pytest.LogCaptureFixture,
        trust: str, method: str, params: dict[str, str]) -> None:
    source = {"ca_bundle": str(other_authority.ca)} if trust == "another-ca" else {}
    client = await over_https(source={"max_attempts": 1, **source})
    with caplog.at_level(logging.ERROR):
        response = await client.request(method, signed(**params))
        body = await response.read()
    assert response.status == 502
    if method == "GET":
        answer = await response.json()
        assert {k: answer[k] for k in PUBLIC_502} == PUBLIC_502
        assert b"certificate" not in body
        assert b"127.0.0.1" not in body
    [line] = [r.getMessage() for r in caplog.records if r.name == "imgproxy.storage"]
    assert "storage TLS handshake failed (source=photos" in line
    assert "certificate verify failed: unable to get local issuer certificate" in line
    assert "sources.photos.ca_bundle" in line
    assert "ada" not in line  # botocore's error text names the URL (and key): not kept


async def test_readiness_fails_with_the_certificate_problem_in_the_log(
        over_https: ProxyFactory, caplog: pytest.LogCaptureFixture) -> None:
    client = await over_https(source={"max_attempts": 1})
    with caplog.at_level(logging.ERROR):
        assert (await client.get("/readyz")).status == 503
    assert any("certificate verify failed" in r.getMessage() for r in caplog.records
               if r.name == "imgproxy.storage")


async def test_a_store_behind_an_unverifiable_certificate_is_a_logged_miss_and_the_image_is_rendered(
        over_https: ProxyFactory, https_endpoint: str, authority: Authority,
        caplog: pytest.LogCaptureFixture) -> None:
    client = await over_https(source={"ca_bundle": str(authority.ca)},
                              cache={"store": source_table(https_endpoint, "no-such-store", max_attempts=1)})
    with caplog.at_level(logging.WARNING, logger="imgproxy.store"):
        response = await client.get(signed(w="70"))
        assert client.app is not None
        await client.app[keys.STORE].drain()
    assert (response.status, response.headers["X-Cache"]) == (200, "MISS")
    lines = [r.getMessage() for r in caplog.records if r.name == "imgproxy.store"]
    assert any("error=TLS (certificate verify failed: unable to get local issuer certificate; "
               "is cache.store.ca_bundle right?)" in line for line in lines), lines


# --- verify_tls = false ---------------------------------------------------------------------------

async def test_verify_tls_false_serves_without_a_ca_and_warns_at_start_up(
        over_https: ProxyFactory, https_endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="imgproxy.storage"):
        client = await over_https(source={"verify_tls": False})
    [warning] = [r for r in caplog.records if r.name == "imgproxy.storage"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(
        f"sources.photos.verify_tls = false: the TLS certificate of {https_endpoint} is NOT VERIFIED")
    original = await client.get(signed())
    assert (original.status, await original.read()) == (200, PHOTO)
    assert (await client.head(signed())).status == 200
    assert (await client.get(signed(w="50"))).status == 200


def test_serve_with_verify_tls_false_warns_on_its_log_at_start_up(
        tmp_path: Path, https_endpoint: str, tls_bucket: str) -> None:
    server = launch_server(tmp_path, https_config(https_endpoint, tls_bucket, verify_tls=False))
    try:
        assert "WARNING" in server.process.stderr
        assert "sources.photos.verify_tls = false" in server.process.stderr
        url = UrlSigner(SIGNING_KEY, "k1", server.base_url).sign("photos", KEY)
        assert http_get(url).body == PHOTO
    finally:
        server.process.kill()


def test_serve_with_the_right_ca_bundle_serves_and_does_not_warn(
        tmp_path: Path, https_endpoint: str, tls_bucket: str, authority: Authority) -> None:
    server = launch_server(tmp_path, https_config(https_endpoint, tls_bucket, ca_bundle=str(authority.ca)))
    try:
        url = UrlSigner(SIGNING_KEY, "k1", server.base_url).sign("photos", KEY, params={"w": "64"})
        reply = http_get(url)
        assert (reply.status, reply.headers["Content-Type"]) == (200, "image/jpeg")
        assert "NOT VERIFIED" not in server.process.stderr
    finally:
        server.process.kill()
