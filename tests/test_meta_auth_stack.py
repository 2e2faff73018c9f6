"""/meta authorized as /img through the stack: a grant cookie's plain URL (and its scopes),
revocations, rate limits, CORS preflights; the same checklist (web/access.py), nothing forked."""

from __future__ import annotations

import io
from typing import Any, Final

import pytest
from aiohttp import hdrs
from PIL import Image
from s3_gate import ManualClock
from support import SIGNING_KEY, ProxyFactory

from imgproxy.auth.grants import COOKIE, Grant, seal
from imgproxy.auth.signing import UrlSigner
from imgproxy.config.model import Scope

NOW: Final = 1_900_000_000.0
KEY: Final = "employees/ada.jpg"
GRANT_COOKIE: Final = "__Host-imgproxy-grant"
DASH: Final = "https://dash.example.com"


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 90), (10, 120, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def _objects(s3: Any, bucket: str) -> None:
    for key in (KEY, "other/x.jpg"):
        s3.put_object(Bucket=bucket, Key=key, Body=jpeg(), ContentType="image/jpeg")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


def signed(clock: ManualClock, key: str = KEY, **params: str) -> str:
    signer = UrlSigner(SIGNING_KEY, "k1")
    return signer.sign("photos", key, params=params or None, now=clock.now, route="meta")


async def test_a_grant_cookies_plain_meta_url_with_placeholder_is_answered_privately(
        proxy: ProxyFactory, clock: ManualClock) -> None:
    client = await proxy(clock=clock, auth={"grants": {"ttl": "1h"}}, transform={"workers": 1})
    grant = Grant("k1", "ada", (Scope.parse("photos:employees/*", "t"),), int(NOW), int(NOW) + 600)
    cookie = {hdrs.COOKIE: f"{GRANT_COOKIE}={seal(grant, SIGNING_KEY.encode(), COOKIE)}"}
    async with client.get(f"/meta/photos/{KEY}?placeholder=1", headers=cookie) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
        assert response.headers[hdrs.CACHE_CONTROL].startswith("private")
        assert "cookie" in response.headers[hdrs.VARY].lower()
    assert (body["width"], body["height"]) == (120, 90)
    assert body["placeholder"]
    async with client.get("/meta/photos/other/x.jpg", headers=cookie) as outside:
        assert outside.status == 403
        assert (await outside.json())["error"] == "out_of_scope"


async def test_a_revoked_meta_url_is_403_revoked(proxy: ProxyFactory, clock: ManualClock) -> None:
    url = signed(clock)
    sig = url.rpartition("&sig=")[2]
    client = await proxy(clock=clock, auth={"revocations": [{"sig": sig}]})
    async with client.get(url) as response:
        assert response.status == 403
        assert (await response.json())["error"] == "revoked"


async def test_an_expired_meta_url_is_403(proxy: ProxyFactory, clock: ManualClock) -> None:
    client = await proxy(clock=clock)
    url = signed(clock)
    clock.advance(7200)
    async with client.get(url) as response:
        assert response.status == 403
        assert (await response.json())["error"] == "expired"


async def test_meta_spends_the_originals_budget(proxy: ProxyFactory, clock: ManualClock) -> None:
    client = await proxy(clock=clock, limits={"originals": {"per_signature": "2/min"}})
    url = signed(clock)
    statuses = []
    for _ in range(3):
        async with client.get(url) as response:
            statuses.append(response.status)
            if response.status == 429:
                assert (await response.json())["error"] == "rate_limited"
                assert response.headers[hdrs.RETRY_AFTER].isdigit()
    assert statuses == [200, 200, 429]


async def test_a_key_scoped_elsewhere_cannot_sign_for_meta(proxy: ProxyFactory, clock: ManualClock) -> None:
    other = "another-signing-key-0123456789abcdef-01234567"
    client = await proxy(clock=clock, auth={"keys": {"k1": SIGNING_KEY, "bi": {"secret": other,
                                                                              "scopes": ["photos:other/*"]}}})
    url = UrlSigner(other, "bi").sign("photos", KEY, now=clock.now, route="meta")
    async with client.get(url) as response:
        assert response.status == 403
        assert (await response.json())["error"] == "out_of_scope"


async def test_a_cors_preflight_for_meta_is_answered_like_imgs(proxy: ProxyFactory) -> None:
    client = await proxy(server={"cors_origins": [DASH]})
    headers = {hdrs.ORIGIN: DASH, hdrs.ACCESS_CONTROL_REQUEST_METHOD: "GET"}
    async with client.options(f"/meta/photos/{KEY}", headers=headers) as response:
        assert response.status == 204
        assert response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] == DASH
        assert "GET" in response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS]
