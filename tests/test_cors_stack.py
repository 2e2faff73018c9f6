"""CORS through the whole stack: preflights and answers over real sockets, the objects in moto.

A dashboard on another origin (``DASH``) fetches images and signs URLs with a bearer token: the
browser preflights (``OPTIONS``), then sends ``Origin`` with the request itself. Every answer it
can get (200, 304, the errors) must carry the CORS headers for an allowed origin and none for
another; a request with ``Origin`` is streamed even where delivery would redirect it.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from PIL import Image
from support import SIGNING_KEY, TOKEN, ProxyClient, ProxyFactory

from imgproxy.auth.signing import UrlSigner
from imgproxy.errors import OriginNotAllowed
from imgproxy.protocol.cors import EXPOSED
from imgproxy.web import appkeys


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (20, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


DASH = "https://dash.example.com"
OTHER_DASH = "http://127.0.0.1:5173"
KEY = "employees/ada.png"
PHOTO = png_bytes()
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ACAO = "Access-Control-Allow-Origin"


@pytest.fixture
def cors(proxy: ProxyFactory, s3: Any, bucket: str) -> ProxyFactory:
    s3.put_object(Bucket=bucket, Key=KEY, Body=PHOTO, ContentType="image/png")
    return proxy.preset(server={"cors_origins": [DASH, OTHER_DASH], "cors_max_age": "15m"},
                        auth={"tokens": {"ops": {"token": TOKEN, "scopes": ["*"], "sign_scopes": ["*"]}}})


@pytest.fixture
async def client(cors: ProxyFactory) -> ProxyClient:
    return await cors()


def assert_allowed(headers: Any, origin: str = DASH) -> None:
    assert headers[ACAO] == origin
    assert "Origin" in [v.strip() for v in headers["Vary"].split(",")]
    assert headers["Access-Control-Expose-Headers"].split(", ") == list(EXPOSED)
    assert headers["Timing-Allow-Origin"] == origin
    assert "Access-Control-Allow-Credentials" not in headers


# --- preflights ------------------------------------------------------------------------------------

async def test_preflight_for_an_image_with_authorization_is_204_with_the_allowed_headers(
        client: ProxyClient) -> None:
    response = await client.options(f"/img/photos/{KEY}", headers={
        "Origin": DASH, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert response.status == 204
    assert response.headers[ACAO] == DASH
    assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"].split(", ")
    assert response.headers["Access-Control-Max-Age"] == "900"
    assert "Access-Control-Allow-Credentials" not in response.headers


async def test_preflight_for_sign_allows_post_with_authorization_and_content_type(
        client: ProxyClient) -> None:
    response = await client.options("/sign", headers={
        "Origin": OTHER_DASH, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status == 204
    assert response.headers[ACAO] == OTHER_DASH
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"


@pytest.mark.parametrize("origin", [
    "https://evil.example", "null", "https://DASH.example.com", "https://dash.example.com/",
    "https://dash.example.com:443", "http://dash.example.com", "http://127.0.0.1:5174",
])
async def test_preflight_from_another_origin_is_403_without_cors_headers(client: ProxyClient,
                                                                         origin: str) -> None:
    response = await client.options(f"/img/photos/{KEY}", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET"})
    assert response.status == 403
    assert (await response.json())["error"] == OriginNotAllowed.code
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]
    assert "Timing-Allow-Origin" not in response.headers


async def test_preflight_for_a_method_the_route_does_not_answer_is_405(client: ProxyClient) -> None:
    response = await client.options("/sign", headers={"Origin": DASH,
                                                      "Access-Control-Request-Method": "GET"})
    assert response.status == 405
    assert response.headers["Allow"] == "POST"


async def test_preflight_for_no_route_is_404(client: ProxyClient) -> None:
    response = await client.options("/nothing", headers={"Origin": DASH,
                                                         "Access-Control-Request-Method": "GET"})
    assert response.status == 404
    assert response.headers[ACAO] == DASH  # a 404 is readable too


async def test_preflight_without_cors_configured_is_403(proxy: ProxyFactory) -> None:
    client = await proxy()
    response = await client.options(f"/img/photos/{KEY}", headers={
        "Origin": DASH, "Access-Control-Request-Method": "GET"})
    assert response.status == 403
    assert ACAO not in response.headers
    assert "Vary" not in response.headers


async def test_options_without_a_requested_method_is_still_405(client: ProxyClient) -> None:
    response = await client.options(f"/img/photos/{KEY}", headers={"Origin": DASH})
    assert response.status == 405


# --- answers ---------------------------------------------------------------------------------------

async def test_get_with_an_allowed_origin_gets_cors_headers(client: ProxyClient) -> None:
    response = await client.get(f"/img/photos/{KEY}", headers={**BEARER, "Origin": DASH})
    assert response.status == 200
    assert await response.read() == PHOTO
    assert_allowed(response.headers)


async def test_get_with_another_origin_gets_vary_and_no_allow_origin(client: ProxyClient) -> None:
    response = await client.get(f"/img/photos/{KEY}", headers={**BEARER, "Origin": "null"})
    assert response.status == 200
    assert ACAO not in response.headers
    assert "Timing-Allow-Origin" not in response.headers
    assert response.headers["Vary"] == "Origin"


async def test_get_without_origin_lets_the_configured_origins_read_its_timing(client: ProxyClient) -> None:
    response = await client.get(f"/img/photos/{KEY}", headers=BEARER)
    assert response.status == 200
    assert ACAO not in response.headers
    assert response.headers["Timing-Allow-Origin"] == f"{DASH}, {OTHER_DASH}"
    assert response.headers["Vary"] == "Origin"


@pytest.mark.parametrize(("path", "headers", "status"), [
    (f"/img/photos/{KEY}", {}, 401),
    (f"/img/photos/{KEY}", {"Authorization": "Bearer " + "n" * 40}, 401),
    (UrlSigner("x" * 40, "k1").sign("photos", KEY), {}, 403),
    ("/img/photos/employees/nobody.png", BEARER, 404),
    ("/img/nowhere/x.png", BEARER, 404),
    ("/nothing", {}, 404),
], ids=["no-credentials", "bad-token", "bad-signature", "no-object", "no-source", "no-route"])
async def test_errors_carry_cors_headers_for_an_allowed_origin(client: ProxyClient, path: str,
                                                               headers: dict[str, str], status: int) -> None:
    response = await client.get(path, headers={**headers, "Origin": DASH})
    assert response.status == status
    assert_allowed(response.headers)
    assert (await response.json())["request_id"] == response.headers["X-Request-Id"]


async def test_not_modified_carries_cors_headers(client: ProxyClient) -> None:
    first = await client.get(f"/img/photos/{KEY}", headers={**BEARER, "Origin": DASH})
    etag = first.headers["ETag"]
    response = await client.get(f"/img/photos/{KEY}", headers={**BEARER, "Origin": DASH,
                                                               "If-None-Match": etag})
    assert response.status == 304
    assert_allowed(response.headers)


async def test_transformed_variant_keeps_vary_accept(cors: ProxyFactory) -> None:
    client = await cors()
    signer = UrlSigner(SIGNING_KEY, "k1")
    response = await client.get(signer.sign("photos", KEY, params={"fmt": "auto", "w": "8"}),
                                headers={"Origin": DASH, "Accept": "image/webp"})
    assert response.status == 200, await response.text()
    assert_allowed(response.headers)
    assert [v.strip() for v in response.headers["Vary"].split(",")] == ["Accept", "Origin"]


async def test_sign_answer_is_readable_by_the_allowed_origin(client: ProxyClient) -> None:
    body = json.dumps([{"source": "photos", "key": KEY}])
    response = await client.post("/sign", data=body, headers={
        **BEARER, "Origin": DASH, "Content-Type": "application/json"})
    assert response.status == 200, await response.text()
    assert_allowed(response.headers)


async def test_credentials_are_allowed_only_when_configured(cors: ProxyFactory) -> None:
    client = await cors(server={"cors_origins": [DASH], "cors_credentials": True})
    response = await client.get(f"/img/photos/{KEY}", headers={**BEARER, "Origin": DASH})
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    preflight = await client.options("/sign", headers={"Origin": DASH,
                                                       "Access-Control-Request-Method": "POST"})
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"


async def test_cross_origin_resource_policy_is_sent_when_configured(cors: ProxyFactory) -> None:
    client = await cors(server={"cross_origin_resource_policy": "same-site"})
    response = await client.get(f"/img/photos/{KEY}", headers=BEARER)
    assert response.headers["Cross-Origin-Resource-Policy"] == "same-site"


async def test_no_cross_origin_resource_policy_by_default(client: ProxyClient) -> None:
    response = await client.get(f"/img/photos/{KEY}", headers=BEARER)
    assert "Cross-Origin-Resource-Policy" not in response.headers


# --- delivery: a request with Origin is never redirected ----------------------------------------------

async def test_redirect_delivery_streams_a_request_with_origin(cors: ProxyFactory) -> None:
    client = await cors(source={"delivery": {"mode": "redirect"}})
    redirected = await client.get(f"/img/photos/{KEY}", headers=BEARER, allow_redirects=False)
    assert redirected.status == 302
    assert redirected.headers["X-Delivery"] == "redirect"
    streamed = await client.get(f"/img/photos/{KEY}", headers={**BEARER, "Origin": DASH},
                                allow_redirects=False)
    assert streamed.status == 200
    assert streamed.headers["X-Delivery"] == "stream"
    assert await streamed.read() == PHOTO
    assert_allowed(streamed.headers)


async def test_redirect_delivery_streams_even_a_disallowed_origin(cors: ProxyFactory) -> None:
    """After a redirect to S3 the browser would send Origin: null: no origin gains from one."""
    client = await cors(source={"delivery": {"mode": "redirect"}})
    response = await client.get(f"/img/photos/{KEY}", headers={**BEARER, "Origin": "null"},
                                allow_redirects=False)
    assert (response.status, response.headers["X-Delivery"]) == (200, "stream")


async def test_a_reload_changes_the_allowed_origins_for_new_requests(cors: ProxyFactory,
                                                                    client: ProxyClient) -> None:
    reloaded = cors.config(server={"cors_origins": [OTHER_DASH]})
    await client.app[appkeys.LIVE].switch(reloaded, "reloaded")
    dropped = await client.get(f"/img/photos/{KEY}", headers={**BEARER, "Origin": DASH})
    assert ACAO not in dropped.headers
    kept = await client.get(f"/img/photos/{KEY}", headers={**BEARER, "Origin": OTHER_DASH})
    assert_allowed(kept.headers, OTHER_DASH)


async def test_a_refused_preflight_is_logged_with_its_origin(client: ProxyClient,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imgproxy.error")
    response = await client.options(f"/img/photos/{KEY}", headers={
        "Origin": "https://typo.example.com", "Access-Control-Request-Method": "GET"})
    assert response.status == 403
    [line] = [r.getMessage() for r in caplog.records if "origin_not_allowed" in r.getMessage()]
    assert "https://typo.example.com" in line
    assert TOKEN not in line
