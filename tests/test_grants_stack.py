"""Cookie grants through the whole stack: ``/session`` on a real socket, a real local IdP for the
JWTs, moto behind the proxy, and the app's clock the test's.

The test client's cookie jar is emptied before every request: each request carries exactly the
``Cookie`` header the test writes, as a hostile client would.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from idp import AUDIENCE, FakeIdp
from photos import photo_jpeg
from s3_gate import ManualClock
from support import SIGNING_KEY, TOKEN, ProxyFactory, metric_samples

from imgproxy.auth.grants import COOKIE, LINK, Grant, grant_link, seal
from imgproxy.config.model import Scope
from imgproxy.web.appkeys import METRICS

NOW = 1_900_000_000.0
JPEG = b"\xff\xd8\xff\xe0" + b"g" * 300
NAME = "__Host-imgproxy-grant"
DASH = "https://dash.example.com"
Client = TestClient[Any, Any]


def auth(idp: FakeIdp, **grants: Any) -> dict[str, Any]:
    return {
        "oidc": {"corp": {"issuer": idp.issuer, "audience": AUDIENCE, "rules": [
            {"claim": "groups", "equals": "hr", "scopes": ["photos:employees/*"]},
            {"scopes": ["photos:users/{sub}/*"]}]}},
        "grants": {"ttl": "1h", **grants},
        "plain_widths": [96, 192],
        "tokens": {"ops": {"token": TOKEN, "scopes": ["*"]},
                   "dash": {"token": "dash-token-0123456789abcdef0123456789abcd",
                            "sign_scopes": ["photos:employees/*"]}},
    }


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def client(proxy: ProxyFactory, s3: Any, bucket: str, idp: FakeIdp, clock: ManualClock) -> Client:
    for key in ("employees/ada.jpg", "other/x.jpg", "users/ada/me.jpg"):
        s3.put_object(Bucket=bucket, Key=key, Body=JPEG, ContentType="image/jpeg")
    return await proxy(clock=clock, auth=auth(idp), server={"cors_origins": [DASH]})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


JSON: dict[str, str] = {"Content-Type": "application/json"}


async def send(client: Client, method: str, path: str, cookie: str | None = None,
               headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    client.session.cookie_jar.clear()
    sent = dict(headers or {})
    if cookie is not None:
        sent["Cookie"] = f"{NAME}={cookie}"
    response = await client.request(method, path, headers=sent, allow_redirects=False, **kwargs)
    await response.read()
    client.session.cookie_jar.clear()
    return response


def set_cookie(response: Any) -> str | None:
    """The raw ``Set-Cookie`` header for the grant cookie, or None."""
    values = [v for v in response.headers.getall(hdrs.SET_COOKIE, []) if v.startswith(NAME + "=")]
    assert len(values) <= 1
    return values[0] if values else None


def cookie_value(response: Any) -> str:
    header = set_cookie(response)
    assert header is not None, "no grant cookie set"
    return header.split(";")[0].split("=", 1)[1]


async def session(client: Client, idp: FakeIdp, body: str = "{}", cookie: str | None = None,
                  at: float = NOW, **claims: Any) -> Any:
    """``POST /session`` with a JWT issued at ``at``."""
    return await send(client, "POST", "/session", cookie,
                      {**bearer(idp.token(at, **claims)), **JSON}, data=body)


async def error(response: Any) -> tuple[int, str | None]:
    if response.status < 400:
        return response.status, None
    return response.status, (await response.json())["error"]


# --- POST /session: a cookie for the JWT's user ----------------------------------------------

async def test_a_jwt_gets_a_host_prefixed_secure_httponly_lax_cookie(client: Client, idp: FakeIdp) -> None:
    response = await session(client, idp)
    assert response.status == 204
    header = set_cookie(response)
    assert header is not None
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite", "max-age"} <= attributes
    assert "domain" not in attributes
    assert re.search(r"(?i)samesite=lax", header)
    assert "Path=/" in header
    assert "Max-Age=3600" in header
    assert response.headers[hdrs.CACHE_CONTROL] == "no-store"


async def test_the_cookie_authorizes_plain_urls_privately_and_varies_by_cookie(
    client: Client, idp: FakeIdp,
) -> None:
    cookie = cookie_value(await session(client, idp))
    response = await send(client, "GET", "/img/photos/employees/ada.jpg", cookie)
    assert response.status == 200
    assert await response.read() == JPEG
    assert response.headers[hdrs.CACHE_CONTROL].startswith("private")
    assert "public" not in response.headers[hdrs.CACHE_CONTROL]
    assert "Cookie" in response.headers[hdrs.VARY]
    head = await send(client, "HEAD", "/img/photos/employees/ada.jpg", cookie)
    assert head.status == 200
    conditional = await send(client, "GET", "/img/photos/employees/ada.jpg", cookie,
                             {"If-None-Match": response.headers[hdrs.ETAG]})
    assert conditional.status == 304
    assert conditional.headers[hdrs.CACHE_CONTROL].startswith("private")


async def test_a_path_outside_the_grant_is_403_out_of_scope(client: Client, idp: FakeIdp) -> None:
    cookie = cookie_value(await session(client, idp))
    assert await error(await send(client, "GET", "/img/photos/other/x.jpg", cookie)) == (403, "out_of_scope")
    # Its template scope came along: the user's own prefix.
    assert (await send(client, "GET", "/img/photos/users/ada/me.jpg", cookie)).status == 200


async def test_a_subset_of_scopes_may_be_asked_for_but_never_more(client: Client, idp: FakeIdp) -> None:
    narrow = await session(client, idp, '{"scopes": ["photos:users/ada/*"]}')
    cookie = cookie_value(narrow)
    assert await error(await send(client, "GET", "/img/photos/employees/ada.jpg", cookie)) == \
        (403, "out_of_scope")
    assert (await send(client, "GET", "/img/photos/users/ada/me.jpg", cookie)).status == 200
    for wider in ('["photos:*"]', '["photos:users/*"]', '["*"]', '["photos:other/x.jpg"]'):
        assert await error(await session(client, idp, f'{{"scopes": {wider}}}')) == (403, "out_of_scope")


@pytest.mark.parametrize("body", ['{"sub": "bob"}', '{"scopes": []}', '{"scopes": "photos:*"}', "[]",
                                  '{"extra": 1}', '{"scopes": ["no colon*x"]}', "not json"])
async def test_a_bad_session_body_is_400_and_sets_nothing(client: Client, idp: FakeIdp, body: str) -> None:
    response = await session(client, idp, body)
    assert await error(response) == (400, "bad_request")
    assert set_cookie(response) is None


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain",
                                          "multipart/form-data; boundary=x"])
async def test_post_session_needs_a_json_content_type(
    client: Client, idp: FakeIdp, content_type: str | None,
) -> None:
    """A cross-site form can send urlencoded, multipart or text/plain without a preflight."""
    headers = bearer(idp.token(NOW))
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await send(client, "POST", "/session", headers=headers, data=b"{}")
    assert await error(response) == (415, "unsupported_media_type")
    assert set_cookie(response) is None


async def test_post_session_needs_a_bearer_and_a_good_one(client: Client, idp: FakeIdp) -> None:
    assert await error(await send(client, "POST", "/session", headers=JSON, data="{}")) == \
        (401, "unauthorized")
    cookie = cookie_value(await session(client, idp))
    # A valid cookie is no credential for minting another one.
    assert await error(await send(client, "POST", "/session", cookie, JSON, data="{}")) == \
        (401, "unauthorized")
    assert await error(await send(client, "POST", "/session", None, {**JSON, **bearer("x" * 40)},
                                  data="{}")) == (401, "invalid_token")


async def test_a_token_with_sign_scopes_grants_for_the_user_it_names(client: Client) -> None:
    headers = {**bearer("dash-token-0123456789abcdef0123456789abcd"), **JSON}
    response = await send(client, "POST", "/session", headers=headers, data='{"sub": "emp-42"}')
    cookie = cookie_value(response)
    assert (await send(client, "GET", "/img/photos/employees/ada.jpg", cookie)).status == 200
    assert await error(await send(client, "POST", "/session", headers=headers, data="{}")) == \
        (400, "bad_request")
    # A token that may read but not sign has nothing to grant.
    assert await error(await send(client, "POST", "/session", headers={**bearer(TOKEN), **JSON},
                                  data='{"sub": "x"}')) == (403, "out_of_scope")


async def test_a_fresh_cookie_is_kept_and_one_past_half_its_life_renewed(
    client: Client, idp: FakeIdp, clock: ManualClock,
) -> None:
    cookie = cookie_value(await session(client, idp))
    again = await session(client, idp, cookie=cookie)
    assert again.status == 204
    assert set_cookie(again) is None
    # Asking for other scopes is a new cookie at once.
    assert set_cookie(await session(client, idp, '{"scopes": ["photos:users/ada/*"]}', cookie)) is not None
    clock.advance(1801)
    renewed = await session(client, idp, cookie=cookie, at=NOW + 1801)
    assert renewed.status == 204
    assert set_cookie(renewed) is not None
    assert cookie_value(renewed) != cookie


async def test_delete_session_clears_the_cookie(client: Client, idp: FakeIdp) -> None:
    cookie = cookie_value(await session(client, idp))
    response = await send(client, "DELETE", "/session", cookie)
    assert response.status == 204
    header = set_cookie(response)
    assert header is not None
    assert "Max-Age=0" in header
    assert header.startswith((f'{NAME}=;', f'{NAME}="";'))


# --- Hostile cookies: every one a 401 invalid_grant, never a fall-through --------------------

def flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


async def test_a_tampered_cookie_is_401_invalid_grant(client: Client, idp: FakeIdp) -> None:
    cookie = cookie_value(await session(client, idp))
    version, kid, payload, mac = cookie.split(".")
    forged_payload = seal(Grant("k1", "ada", (Scope.parse("*", "t"),), int(NOW), int(NOW) + 60),
                          b"not-the-key-0123456789abcdef0123456789", COOKIE).split(".")[2]
    for bad in (flip(cookie, len(version) + len(kid) + 5), flip(cookie, len(cookie) - 3),
                f"{version}.other.{payload}.{mac}", f"{version}.{kid}.{forged_payload}.{mac}",
                f"g2.{kid}.{payload}.{mac}", cookie + "x", cookie[:-1], "", "garbage", "a.b.c.d",
                "é" * 10, "x" * 5000):
        response = await send(client, "GET", "/img/photos/employees/ada.jpg", bad)
        assert await error(response) == (401, "invalid_grant"), bad[:40]
    samples = metric_samples(client.app[METRICS].exposition().decode())
    assert samples[("imgproxy_auth_failures_total", frozenset({("reason", "grant_signature")}))] >= 3


async def test_a_cookie_sealed_with_another_key_or_purpose_is_refused(client: Client) -> None:
    grant = Grant("k1", "ada", (Scope.parse("photos:employees/*", "t"),), int(NOW), int(NOW) + 600)
    good = seal(grant, SIGNING_KEY.encode(), COOKIE)
    assert (await send(client, "GET", "/img/photos/employees/ada.jpg", good)).status == 200
    as_link = seal(grant, SIGNING_KEY.encode(), LINK)
    assert await error(await send(client, "GET", "/img/photos/employees/ada.jpg", as_link)) == \
        (401, "invalid_grant")


async def test_an_expired_cookie_is_401(client: Client, idp: FakeIdp, clock: ManualClock) -> None:
    cookie = cookie_value(await session(client, idp))
    clock.advance(3601)
    assert await error(await send(client, "GET", "/img/photos/employees/ada.jpg", cookie)) == \
        (401, "invalid_grant")


async def test_a_cookie_living_past_its_keys_max_ttl_is_refused(client: Client) -> None:
    forever = Grant("k1", "ada", (Scope.parse("photos:*", "t"),), int(NOW), int(NOW) + 10 * 86400)
    cookie = seal(forever, SIGNING_KEY.encode(), COOKIE)
    assert await error(await send(client, "GET", "/img/photos/employees/ada.jpg", cookie)) == \
        (401, "invalid_grant")


async def test_credentials_never_fall_through(client: Client, idp: FakeIdp, signer: Any) -> None:
    cookie = cookie_value(await session(client, idp))
    # A failing bearer is 401 although the cookie is good.
    response = await send(client, "GET", "/img/photos/employees/ada.jpg", cookie, bearer("y" * 40))
    assert await error(response) == (401, "invalid_token")
    # A sig means signature only: a bad one is 403 whatever the cookie.
    url = signer.sign("photos", "employees/ada.jpg", ttl=60, now=NOW)
    bad = url[: url.index("sig=") + 4] + "A" * 43
    assert await error(await send(client, "GET", bad, cookie)) == (403, "invalid_signature")
    # A failing cookie is 401 even where forward-auth or nothing else would apply.
    assert await error(await send(client, "GET", "/img/photos/employees/ada.jpg", "g1.k1.x.y")) == \
        (401, "invalid_grant")


async def test_the_cookie_does_not_authorize_post_sign(client: Client, idp: FakeIdp) -> None:
    cookie = cookie_value(await session(client, idp))
    body = '{"items": [{"source": "photos", "key": "employees/ada.jpg"}]}'
    assert await error(await send(client, "POST", "/sign", cookie, JSON, data=body)) == (401, "unauthorized")


# --- Plain URLs ask only for listed renders --------------------------------------------------

@pytest.mark.parametrize(("query", "expected"), [
    ("w=96", 200), ("w=192&h=96&fit=cover", 200), ("w=96&dpr=2&fmt=webp", 200),
    ("w=97", 403), ("h=1000", 403), ("w=96&q=37", 403), ("w=96&dpr=1.5", 403), ("w=096", 403),
    ("w=96&bg=ffffff", 403), ("w=96&gravity=north", 403),
    ("w=96&h=96&fit=cover&gravity=auto", 200), ("w=96&h=96&fit=cover&fp=0.5,0.5", 403),
])
async def test_plain_urls_of_users_accept_only_the_listed_widths(
    client: Client, idp: FakeIdp, s3: Any, bucket: str, query: str, expected: int,
) -> None:
    s3.put_object(Bucket=bucket, Key="employees/real.jpg", Body=photo_jpeg(400, 300),
                  ContentType="image/jpeg")
    cookie = cookie_value(await session(client, idp))
    path = f"/img/photos/employees/real.jpg?{query}"
    for headers, cookie_sent in (({}, cookie), (bearer(idp.token(NOW)), None)):
        response = await send(client, "GET", path, cookie_sent, headers)
        assert (await error(response))[0] == expected, (query, headers)
        if expected == 403:
            assert (await error(response))[1] == "params_not_allowed"
    # A service's static token is not limited.
    assert (await send(client, "GET", "/img/photos/employees/real.jpg?w=97&q=37", None,
                       bearer(TOKEN))).status == 200


# --- GET /session?grant=: single-use links a dashboard mints --------------------------------

def link(path_only: bool = True, **overrides: Any) -> str:
    arguments: dict[str, Any] = {"secret": SIGNING_KEY, "kid": "k1", "sub": "ada",
                                 "scopes": ["photos:employees/*"], "base_url": "", "ttl": 60,
                                 "return_to": DASH + "/directory?x=1", "now": NOW}
    arguments.update(overrides)
    return grant_link(**arguments)


async def test_a_grant_link_sets_the_cookie_and_returns_once(client: Client) -> None:
    url = link()
    response = await send(client, "GET", url)
    assert response.status == 303
    assert response.headers[hdrs.LOCATION] == DASH + "/directory?x=1"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers[hdrs.CACHE_CONTROL] == "no-store"
    cookie = cookie_value(response)
    assert (await send(client, "GET", "/img/photos/employees/ada.jpg", cookie)).status == 200
    again = await send(client, "GET", url)
    assert await error(again) == (401, "invalid_grant")
    assert set_cookie(again) is None
    assert again.headers["Referrer-Policy"] == "no-referrer"


async def test_a_link_without_return_answers_204(client: Client) -> None:
    response = await send(client, "GET", link(return_to=None))
    assert response.status == 204
    assert set_cookie(response) is not None


@pytest.mark.parametrize("target", [
    "https://evil.example.com/", "https://dash.example.com.evil.com/", "http://dash.example.com/",
    "https://dash.example.com:8443/", "//dash.example.com/", "/relative", "javascript:alert(1)",
    "https://user@dash.example.com/", "https://dash.example.com\\@evil.com/", "null",
])
async def test_a_link_returns_only_to_an_allowed_origin(client: Client, target: str) -> None:
    url = link(return_to=target)
    response = await send(client, "GET", url)
    assert await error(response) == (400, "return_not_allowed")
    assert set_cookie(response) is None
    # The refusal did not spend the link: the same grant with a good return still opens.
    good = url.split("&return=")[0] + "&return=" + DASH.replace(":", "%3A").replace("/", "%2F")
    assert (await send(client, "GET", good)).status == 303


async def test_expired_long_lived_or_forged_links_are_refused(client: Client, clock: ManualClock) -> None:
    assert await error(await send(client, "GET", link(ttl=3601))) == (401, "invalid_grant")
    assert await error(await send(client, "GET", link(secret="z" * 40))) == (401, "invalid_grant")
    assert await error(await send(client, "GET", link(kid="nope"))) == (401, "invalid_grant")
    late = link(ttl=30)
    clock.advance(31)
    assert await error(await send(client, "GET", late)) == (401, "invalid_grant")
    # A cookie is not a link.
    grant = Grant("k1", "ada", (Scope.parse("photos:*", "t"),), int(NOW), int(NOW) + 60, nonce="n")
    as_cookie = seal(grant, SIGNING_KEY.encode(), COOKIE)
    assert await error(await send(client, "GET", f"/session?grant={as_cookie}")) == (401, "invalid_grant")
    assert await error(await send(client, "GET", "/session")) == (400, "bad_request")


# --- Revocations apply to grants --------------------------------------------------------------

@pytest.mark.parametrize("entry", [
    {"kid": "k1", "before": int(NOW) + 1}, {"sub": "ada", "before": int(NOW) + 1},
    {"scope": "photos:employees/ada.jpg"},
])
async def test_revocations_reach_grant_cookies(
    proxy: ProxyFactory, s3: Any, bucket: str, idp: FakeIdp, clock: ManualClock, entry: dict[str, Any],
) -> None:
    s3.put_object(Bucket=bucket, Key="employees/ada.jpg", Body=JPEG, ContentType="image/jpeg")
    client = await proxy(clock=clock, auth={**auth(idp), "revocations": [entry]})
    cookie = cookie_value(await session(client, idp))
    assert await error(await send(client, "GET", "/img/photos/employees/ada.jpg", cookie)) == (403, "revoked")
    if "before" in entry:  # a cookie issued after the cutoff works again
        clock.advance(2)
        fresh = cookie_value(await session(client, idp, at=NOW + 2))
        assert (await send(client, "GET", "/img/photos/employees/ada.jpg", fresh)).status == 200


async def test_without_grants_the_routes_are_404_and_cookies_ignored(
    proxy: ProxyFactory, s3: Any, bucket: str, clock: ManualClock,
) -> None:
    s3.put_object(Bucket=bucket, Key="employees/ada.jpg", Body=JPEG, ContentType="image/jpeg")
    client = await proxy(clock=clock)
    grant = Grant("k1", "ada", (Scope.parse("photos:*", "t"),), int(NOW), int(NOW) + 60)
    cookie = seal(grant, SIGNING_KEY.encode(), COOKIE)
    assert await error(await send(client, "GET", "/img/photos/employees/ada.jpg", cookie)) == \
        (401, "unauthorized")
    assert await error(await send(client, "POST", "/session", headers={**bearer(TOKEN), **JSON},
                                  data="{}")) == (404, "not_found")
