"""Every error a client can provoke, as it arrives over HTTP: status, JSON shape, no internals.

Attack paths are sent byte for byte (``raw_request``), and the source reaches moto through a
``TcpRelay`` so "rejected before S3" is observed, not assumed.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import ClientResponse, hdrs
from aiohttp.test_utils import TestClient
from support import TOKEN, ProxyFactory, RawRequest, RelayFactory
from tcp_relay import TcpRelay

from imgproxy.auth.signing import UrlSigner
from imgproxy.protocol.paths import image_path
from imgproxy.storage.s3 import S3Source

BEARER = {hdrs.AUTHORIZATION: f"Bearer {TOKEN}"}
JPEG = b"\xff\xd8\xff\xe0" + b"x" * 100


@pytest.fixture
async def watched(proxy: ProxyFactory, relay_to: RelayFactory,
                  moto_endpoint: str) -> tuple[TestClient[Any, Any], TcpRelay]:
    """A client whose every S3 call passes a relay, so tests can tell whether S3 was asked."""
    relay = await relay_to(moto_endpoint)
    client = await proxy(source={"endpoint_url": relay.endpoint})
    return client, relay


async def assert_error(response: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """The response is ``status`` with the one JSON error shape, and returns the body."""
    assert response.status == status
    assert response.headers[hdrs.CONTENT_TYPE].startswith("application/json")
    body: dict[str, Any] = await response.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == code
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body


# --- Routing: 404, 405 -------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_a_write_method_on_an_image_is_405(client: TestClient[Any, Any], method: str) -> None:
    response = await client.request(method, "/img/photos/a.jpg", headers=BEARER)
    await assert_error(response, 405, "method_not_allowed")


async def test_a_405_lists_the_allowed_methods(client: TestClient[Any, Any]) -> None:
    response = await client.post("/img/photos/a.jpg", headers=BEARER)
    assert set(response.headers[hdrs.ALLOW].split(", ")) == {"GET", "HEAD"}


async def test_a_405_is_not_cacheable(client: TestClient[Any, Any]) -> None:
    response = await client.post("/img/photos/a.jpg")
    assert response.headers[hdrs.CACHE_CONTROL] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "/nope", "/img", "/img/", "/healthz/extra", "/IMG/photos/a.jpg"])
async def test_an_unknown_route_is_404_json(client: TestClient[Any, Any], path: str) -> None:
    response = await client.get(path)
    await assert_error(response, 404, "not_found")


# --- 404: no such key ---------------------------------------------------------------------------

async def test_a_missing_key_is_404_not_found(client: TestClient[Any, Any], signer: UrlSigner) -> None:
    response = await client.get(signer.sign("photos", "nobody/here.jpg"))
    await assert_error(response, 404, "not_found")


async def test_a_missing_key_on_head_is_404(client: TestClient[Any, Any], signer: UrlSigner) -> None:
    response = await client.head(signer.sign("photos", "nobody/here.jpg"))
    assert response.status == 404


async def test_a_404_does_not_echo_the_key_or_bucket(client: TestClient[Any, Any], signer: UrlSigner,
                                                     bucket: str) -> None:
    response = await client.get(signer.sign("photos", "nobody/here.jpg"))
    text = await response.text()
    assert "nobody/here.jpg" not in text
    assert bucket not in text


# --- 500: the unexpected ---------------------------------------------------------------------------

@pytest.fixture
def broken_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(S3Source, "get", explode)


@pytest.mark.usefixtures("broken_storage")
async def test_an_unexpected_exception_is_500_internal_error(client: TestClient[Any, Any],
                                                             signer: UrlSigner) -> None:
    response = await client.get(signer.sign("photos", "a.jpg"))
    await assert_error(response, 500, "internal_error")


@pytest.mark.usefixtures("broken_storage")
async def test_an_unexpected_exception_shows_no_detail(client: TestClient[Any, Any],
                                                       signer: UrlSigner) -> None:
    response = await client.get(signer.sign("photos", "a.jpg"))
    text = await response.text()
    assert "secret detail" not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text


@pytest.mark.usefixtures("broken_storage")
async def test_an_unexpected_exception_is_logged_with_its_request_id(
    client: TestClient[Any, Any], signer: UrlSigner, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="imgproxy"):
        response = await client.get(signer.sign("photos", "a.jpg"))
    request_id = response.headers["X-Request-Id"]
    [record] = [r for r in caplog.records if request_id in r.getMessage() and r.exc_info]
    assert "secret detail" in caplog.text  # the operator sees what the client does not
    assert record.levelno == logging.ERROR


async def test_an_unauthorized_request_never_reaches_storage(
    client: TestClient[Any, Any], broken_storage: None
) -> None:
    response = await client.get("/img/photos/a.jpg")
    assert response.status == 401  # authorization comes before any storage call


# --- 400: paths rejected before S3 -----------------------------------------------------------------

@pytest.mark.parametrize(
    "target",
    [
        "/img/photos/..",
        "/img/photos/../a.jpg",
        "/img/photos/a/../../b.jpg",
        "/img/photos/%2E%2E/a.jpg",
        "/img/photos/./a.jpg",
        "/img/photos/a/%2E/b.jpg",
        "/img/photos/a\\b.jpg",
        "/img/photos/a%5Cb.jpg",
        "/img/photos/..%5Ca.jpg",
        "/img/photos/a%00.jpg",
        "/img/photos/a%01b.jpg",
        "/img/photos/a%0Ab.jpg",
        "/img/photos/a%7Fb.jpg",
        "/img/photos/a%C2%85b.jpg",  # U+0085, a C1 control
        "/img/photos/a%zzb.jpg",
        "/img/photos/a%ffb.jpg",
        "/img/photos/a%C3.jpg",
        "/img/photos/" + "a" * 1025,
        "/img/photos/" + "%C3%A9" * 513,  # 'é' x 513: 513 characters, 1026 bytes
        "/img/photos/",
        "/img/photos",
    ],
)
async def test_an_invalid_path_is_400_and_never_reaches_s3(
    watched: tuple[TestClient[Any, Any], TcpRelay], raw_request: RawRequest, target: str
) -> None:
    client, relay = watched
    response = await raw_request(client, "GET", target, headers=BEARER)
    await assert_error(response, 400, "invalid_path")
    assert relay.links == []


async def test_a_key_of_exactly_1024_bytes_is_accepted(watched: tuple[TestClient[Any, Any], TcpRelay],
                                                       s3: Any, bucket: str) -> None:
    client, _ = watched
    key = "é" * 511 + "ab"  # 1022 + 2 bytes
    assert len(key.encode()) == 1024
    s3.put_object(Bucket=bucket, Key=key, Body=JPEG, ContentType="image/jpeg")
    response = await client.get(image_path("photos", key), headers=BEARER)
    assert response.status == 200
    assert await response.read() == JPEG


async def test_an_invalid_path_is_400_even_without_credentials(
    watched: tuple[TestClient[Any, Any], TcpRelay], raw_request: RawRequest
) -> None:
    client, relay = watched
    response = await raw_request(client, "GET", "/img/photos/../a.jpg")
    await assert_error(response, 400, "invalid_path")
    assert relay.links == []


async def test_an_invalid_path_message_names_no_internal_detail(
    watched: tuple[TestClient[Any, Any], TcpRelay], raw_request: RawRequest, bucket: str
) -> None:
    client, _ = watched
    response = await raw_request(client, "GET", "/img/photos/../a.jpg", headers=BEARER)
    body = await response.json()
    assert "'..'" in body["message"]
    assert bucket not in body["message"]


# --- 400: query parameters --------------------------------------------------------------------------

async def test_a_duplicated_query_parameter_is_400(client: TestClient[Any, Any], signer: UrlSigner) -> None:
    url = signer.sign("photos", "a.jpg")
    response = await client.get(url + "&exp=1")
    await assert_error(response, 400, "invalid_parameter")


async def test_too_many_query_parameters_is_400(client: TestClient[Any, Any]) -> None:
    query = "&".join(f"p{i}=1" for i in range(40))
    response = await client.get(f"/img/photos/a.jpg?{query}", headers=BEARER)
    await assert_error(response, 400, "invalid_parameter")


async def test_a_malformed_expiry_is_400(client: TestClient[Any, Any], signer: UrlSigner) -> None:
    url = signer.sign("photos", "a.jpg")
    exp = url.split("exp=", 1)[1].split("&", 1)[0]
    response = await client.get(url.replace(f"exp={exp}", "exp=tomorrow"))
    await assert_error(response, 400, "invalid_parameter")


# --- Every error shares the safe headers -----------------------------------------------------------------

async def test_error_responses_are_not_cacheable_and_not_sniffable(client: TestClient[Any, Any],
                                                                   signer: UrlSigner) -> None:
    response = await client.get(signer.sign("photos", "nobody/here.jpg"))
    assert response.headers[hdrs.CACHE_CONTROL] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
