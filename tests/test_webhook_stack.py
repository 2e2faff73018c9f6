"""``[auth.webhook]`` through the whole stack: the app on a real socket, moto behind it, a local
IdP for JWTs, forward-auth from the test client's loopback address, and a fake webhook (a real
aiohttp server on a loopback port) that counts its calls. The app's clock is the test's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from idp import AUDIENCE, FakeIdp
from nginx_site import Authority
from processes import free_port
from s3_gate import ManualClock
from support import TOKEN, TOKENS, ProxyFactory, metric_samples
from webhook_server import FakeWebhook

from imgproxy.auth.signing import UrlSigner
from imgproxy.web.appkeys import LIVE, METRICS

NOW = 1_900_000_000.0
JPEG = b"\xff\xd8\xff\xe0" + b"w" * 300
Client = TestClient[Any, Any]
Make = Callable[..., Awaitable[Client]]
ADA = {"X-Forwarded-User": "ada", "X-Forwarded-Groups": "staff, employees"}
GRANT = "__Host-imgproxy-grant"
DASH_TOKEN = "dashboard-signing-token-0123456789abcdef0123"
KEYS = ("employees/ada.jpg", "employees/denied.jpg", "other/x.jpg")


def auth(idp: FakeIdp, webhook: dict[str, Any]) -> dict[str, Any]:
    rules = [{"claim": "groups", "equals": "hr", "scopes": ["photos:employees/*"]},
             {"claim": "groups", "equals": "employees", "scopes": ["photos:employees/*"]}]
    return {"oidc": {"corp": {"issuer": idp.issuer, "audience": AUDIENCE, "rules": rules}},
            "forward": {"trusted_proxies": ["127.0.0.1/32"], "rules": rules},
            "webhook": webhook}


@pytest.fixture
async def hook() -> AsyncIterator[FakeWebhook]:
    server = await FakeWebhook().start()
    yield server
    await server.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def seeded(s3: Any, bucket: str) -> None:
    for key in KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=JPEG, ContentType="image/jpeg")


@pytest.fixture
def make(proxy: ProxyFactory, idp: FakeIdp, hook: FakeWebhook, clock: ManualClock, seeded: None) -> Make:
    async def start(**webhook: Any) -> Client:
        return await proxy(clock=clock, auth=auth(idp, {"url": hook.url, **webhook}))
    return start


@pytest.fixture
async def client(make: Make) -> Client:
    return await make()


def bearer(token: str) -> dict[str, str]:
    return {hdrs.AUTHORIZATION: f"Bearer {token}"}


async def status_and_code(client: Client, key: str, headers: dict[str, str],
                          method: str = "GET") -> tuple[int, str | None]:
    response = await client.request(method, f"/img/photos/{key}", headers=headers)
    if response.status < 400:
        assert method == "HEAD" or await response.read() == JPEG
        return response.status, None
    return response.status, (await response.json())["error"] if method != "HEAD" else None


# --- Who is asked about, and what it is told ---------------------------------------------------

async def test_a_jwt_user_the_webhook_allows_reads_the_image(
        client: Client, idp: FakeIdp, hook: FakeWebhook) -> None:
    assert await status_and_code(client, "employees/ada.jpg", bearer(idp.token(NOW))) == (200, None)
    assert hook.calls == [{"sub": "ada", "groups": ["staff", "hr"], "source": "photos",
                           "key": "employees/ada.jpg", "method": "GET", "kind": "jwt",
                           "issuer": idp.issuer}]


async def test_a_jwt_user_the_webhook_denies_is_403_before_storage(
        client: Client, idp: FakeIdp, hook: FakeWebhook) -> None:
    assert await status_and_code(client, "employees/denied.jpg", bearer(idp.token(NOW))) \
        == (403, "webhook_denied")
    # No such object: allowed, it would be 404; denied, storage is never asked.
    assert await status_and_code(client, "employees/denied-missing.jpg", bearer(idp.token(NOW))) \
        == (403, "webhook_denied")
    hook.decide = lambda fields, key: True
    assert await status_and_code(client, "employees/missing.jpg", bearer(idp.token(NOW))) \
        == (404, "not_found")


async def test_a_forwarded_user_is_asked_about_with_its_groups(client: Client, hook: FakeWebhook) -> None:
    assert await status_and_code(client, "employees/ada.jpg", ADA) == (200, None)
    assert await status_and_code(client, "employees/denied.jpg", ADA) == (403, "webhook_denied")
    assert hook.calls[0] == {"sub": "ada", "groups": ["staff", "employees"], "source": "photos",
                             "key": "employees/ada.jpg", "method": "GET", "kind": "forward",
                             "issuer": None}


async def grant_cookie(client: Client, token: str) -> str:
    response = await client.post("/session", data="{}", headers={**bearer(token),
                                                                 "Content-Type": "application/json"})
    assert response.status == 204, await response.text()
    [header] = [v for v in response.headers.getall(hdrs.SET_COOKIE) if v.startswith(GRANT + "=")]
    client.session.cookie_jar.clear()
    return header.split(";")[0]


async def test_a_grant_is_asked_about_with_the_groups_it_was_minted_with(
        proxy: ProxyFactory, idp: FakeIdp, hook: FakeWebhook, clock: ManualClock, seeded: None) -> None:
    client = await proxy(clock=clock, auth={**auth(idp, {"url": hook.url}), "grants": {"ttl": "1h"}})
    cookie = {"Cookie": await grant_cookie(client, idp.token(NOW))}
    assert hook.calls == []  # POST /session reads no image
    assert await status_and_code(client, "employees/ada.jpg", cookie) == (200, None)
    assert await status_and_code(client, "employees/denied.jpg", cookie) == (403, "webhook_denied")
    assert hook.calls[0] == {"sub": "ada", "groups": ["staff", "hr"], "source": "photos",
                             "key": "employees/ada.jpg", "method": "GET", "kind": "grant",
                             "issuer": None}


async def test_a_jwt_with_more_groups_than_a_cookie_holds_gets_a_stable_grant_without_them(
        proxy: ProxyFactory, idp: FakeIdp, hook: FakeWebhook, clock: ManualClock, seeded: None) -> None:
    client = await proxy(clock=clock, auth={**auth(idp, {"url": hook.url}), "grants": {"ttl": "1h"}})
    token = idp.token(NOW, groups=["hr", *(f"team-{i:03d}-" + "x" * 40 for i in range(40))])
    cookie = await grant_cookie(client, token)
    again = await client.post("/session", data="{}", headers={**bearer(token), "Cookie": cookie,
                                                              "Content-Type": "application/json"})
    assert again.status == 204
    assert hdrs.SET_COOKIE not in again.headers  # the same grant: the cookie stays
    assert await status_and_code(client, "employees/ada.jpg", {"Cookie": cookie}) == (200, None)
    assert hook.calls[0]["groups"] == []


async def test_the_groups_claim_is_the_providers_groups_claim(
        proxy: ProxyFactory, idp: FakeIdp, hook: FakeWebhook, clock: ManualClock, seeded: None) -> None:
    config = auth(idp, {"url": hook.url})
    config["oidc"]["corp"]["groups_claim"] = "roles"
    client = await proxy(clock=clock, auth=config)
    token = idp.token(NOW, roles=["editor", "viewer"])
    assert await status_and_code(client, "employees/ada.jpg", bearer(token)) == (200, None)
    assert hook.calls[0]["groups"] == ["editor", "viewer"]


async def test_signed_urls_and_static_tokens_never_call_it(
        client: Client, hook: FakeWebhook, signer: UrlSigner) -> None:
    response = await client.get(signer.sign("photos", "employees/denied.jpg", now=NOW))
    assert response.status == 200
    assert await status_and_code(client, "employees/denied.jpg", bearer(TOKEN)) == (200, None)
    assert hook.calls == []


async def test_a_path_outside_the_scopes_is_refused_without_asking(
        client: Client, idp: FakeIdp, hook: FakeWebhook) -> None:
    assert await status_and_code(client, "other/x.jpg", bearer(idp.token(NOW))) == (403, "out_of_scope")
    assert hook.calls == []


async def test_an_https_webhook_is_trusted_through_its_ca_bundle_and_not_without(
        proxy: ProxyFactory, idp: FakeIdp, clock: ManualClock, seeded: None, authority: Authority) -> None:
    secure = await FakeWebhook().start(tls=authority)
    try:
        trusting = await proxy(clock=clock, auth=auth(idp, {"url": secure.url, "ca_bundle": str(authority.ca),
                                                             "timeout": "2s"}))
        assert await status_and_code(trusting, "employees/ada.jpg", bearer(idp.token(NOW))) == (200, None)
        system_cas = await proxy(clock=clock, auth=auth(idp, {"url": secure.url, "timeout": "2s"}))
        assert await status_and_code(system_cas, "employees/ada.jpg", bearer(idp.token(NOW))) \
            == (403, "webhook_denied")
        assert len(secure.calls) == 1
    finally:
        await secure.close()


# --- Failures: never allowed, never a hang -----------------------------------------------------

async def test_a_slow_webhook_is_denied_within_its_timeout(
        client: Client, idp: FakeIdp, hook: FakeWebhook) -> None:
    hook.delay = 2.0
    started = time.monotonic()
    assert await status_and_code(client, "employees/ada.jpg", bearer(idp.token(NOW))) \
        == (403, "webhook_denied")
    assert time.monotonic() - started < 1.5  # the default timeout is 200 ms


async def test_a_slow_webhook_is_503_with_on_error_unavailable(
        make: Make, idp: FakeIdp, hook: FakeWebhook) -> None:
    client = await make(on_error="unavailable", timeout="100ms")
    hook.delay = 2.0
    started = time.monotonic()
    response = await client.get("/img/photos/employees/ada.jpg", headers=bearer(idp.token(NOW)))
    assert time.monotonic() - started < 1.5
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"] == "webhook_unavailable"


@pytest.mark.parametrize("on_error", ["deny", "unavailable"])
async def test_a_webhook_that_is_down_is_never_an_allow(
        proxy: ProxyFactory, idp: FakeIdp, clock: ManualClock, seeded: None, on_error: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/allow"
    client = await proxy(clock=clock, auth=auth(idp, {"url": dead, "on_error": on_error}))
    expected = (403, "webhook_denied") if on_error == "deny" else (503, "webhook_unavailable")
    assert await status_and_code(client, "employees/ada.jpg", bearer(idp.token(NOW))) == expected


@pytest.mark.parametrize(("status", "body"), [
    (200, b"allow"),
    (200, b'{"result": "yes"}'),
    (200, b'{"result": 1}'),
    (200, b'{"result": null}'),
    (200, b'{"result": [true]}'),
    (200, b'[true]'),
    (500, b'{"result": true}'),
    (302, b'{"result": true}'),
    (200, b'{"result": true, "pad": "' + b"a" * 70_000 + b'"}'),
], ids=["not-json", "string", "one", "null", "list", "bare-list", "500", "302", "huge"])
async def test_an_answer_that_is_not_exactly_true_or_false_is_an_error(
        client: Client, idp: FakeIdp, hook: FakeWebhook, status: int, body: bytes) -> None:
    hook.status, hook.body = status, body
    token = idp.token(NOW)
    assert await status_and_code(client, "employees/ada.jpg", bearer(token)) == (403, "webhook_denied")
    assert await status_and_code(client, "employees/ada.jpg", bearer(token)) == (403, "webhook_denied")
    assert len(hook.calls) == 2  # errors are not cached
    hook.status, hook.body = 200, None  # the control: the same request, a clear answer
    assert await status_and_code(client, "employees/ada.jpg", bearer(token)) == (200, None)


async def test_a_failure_is_logged_once_a_minute_by_kind_without_the_url(
        client: Client, idp: FakeIdp, hook: FakeWebhook, clock: ManualClock,
        caplog: pytest.LogCaptureFixture) -> None:
    hook.body = b"nope"
    with caplog.at_level(logging.WARNING, logger="imgproxy.webhook"):
        for _ in range(3):
            await status_and_code(client, "employees/ada.jpg", bearer(idp.token(NOW)))
        clock.advance(61)
        await status_and_code(client, "employees/ada.jpg", bearer(idp.token(NOW)))
    lines = [r.getMessage() for r in caplog.records if r.name == "imgproxy.webhook"]
    assert len(lines) == 2
    assert "not_json" in lines[0]
    assert str(hook.port) not in lines[0]


# --- Decisions kept, questions shared ----------------------------------------------------------

async def test_a_decision_is_reused_within_cache_ttl_and_asked_again_after(
        client: Client, idp: FakeIdp, hook: FakeWebhook, clock: ManualClock) -> None:
    token = idp.token(NOW, exp=int(NOW) + 3600)
    for method in ("GET", "HEAD", "GET"):
        assert (await status_and_code(client, "employees/ada.jpg", bearer(token), method))[0] == 200
        assert (await status_and_code(client, "employees/denied.jpg", bearer(token), method))[0] == 403
    assert len(hook.calls) == 2  # one per object; HEAD shares GET's decision
    clock.advance(59)
    assert (await status_and_code(client, "employees/ada.jpg", bearer(token)))[0] == 200
    assert len(hook.calls) == 2
    clock.advance(2)  # past the default 60 s
    assert (await status_and_code(client, "employees/ada.jpg", bearer(token)))[0] == 200
    assert len(hook.calls) == 3


async def test_another_user_or_other_groups_are_asked_again(
        client: Client, idp: FakeIdp, hook: FakeWebhook) -> None:
    await status_and_code(client, "employees/ada.jpg", bearer(idp.token(NOW)))
    await status_and_code(client, "employees/ada.jpg", bearer(idp.token(NOW, sub="bob")))
    await status_and_code(client, "employees/ada.jpg", bearer(idp.token(NOW, groups=["hr"])))
    await status_and_code(client, "employees/ada.jpg", ADA)  # a forwarded ada is another principal
    assert len(hook.calls) == 4


async def test_cache_ttl_zero_asks_every_time(make: Make, idp: FakeIdp, hook: FakeWebhook) -> None:
    client = await make(cache_ttl=0)
    for _ in range(3):
        assert await status_and_code(client, "employees/ada.jpg", bearer(idp.token(NOW))) == (200, None)
    assert len(hook.calls) == 3


async def test_identical_questions_in_flight_share_one_call(
        make: Make, idp: FakeIdp, hook: FakeWebhook) -> None:
    client = await make(timeout="5s")
    hook.delay = 0.3
    token = idp.token(NOW)
    answers = await asyncio.gather(*(status_and_code(client, "employees/ada.jpg", bearer(token))
                                     for _ in range(20)))
    assert answers == [(200, None)] * 20
    assert len(hook.calls) == 1


async def test_a_reload_drops_the_decisions_and_can_turn_the_webhook_off(
        proxy: ProxyFactory, client: Client, idp: FakeIdp, hook: FakeWebhook) -> None:
    token = idp.token(NOW)
    assert await status_and_code(client, "employees/ada.jpg", bearer(token)) == (200, None)
    hook.decide = lambda fields, key: False
    changed = proxy.config(auth=auth(idp, {"url": hook.url, "timeout": "300ms"}))
    await client.app[LIVE].switch(changed, "reloaded")
    assert await status_and_code(client, "employees/ada.jpg", bearer(token)) == (403, "webhook_denied")
    assert len(hook.calls) == 2
    without = auth(idp, {})
    del without["webhook"]
    await client.app[LIVE].switch(proxy.config(auth=without), "off")
    assert await status_and_code(client, "employees/ada.jpg", bearer(token)) == (200, None)
    assert len(hook.calls) == 2


# --- POST /sign ---------------------------------------------------------------------------------

def items(count: int) -> list[dict[str, str]]:
    return [{"source": "photos", "key": f"employees/{'denied-' if i % 10 == 0 else ''}p{i}.jpg"}
            for i in range(count)]


async def sign(client: Client, token: str, body: list[dict[str, str]]) -> list[dict[str, str]]:
    response = await client.post("/sign", json=body, headers=bearer(token))
    assert response.status == 200, await response.text()
    answer: list[dict[str, str]] = (await response.json())["items"]
    return answer


async def test_sign_asks_once_per_item_and_refuses_the_denied_ones(
        make: Make, idp: FakeIdp, hook: FakeWebhook) -> None:
    client = await make(timeout="5s")
    body = [*items(200), {"source": "photos", "key": "employees/p1.jpg"},
            {"source": "photos", "key": "other/x.jpg"}]
    answers = await sign(client, idp.token(NOW), body)
    assert len(hook.calls) == 200  # the repeated item is asked once; the out-of-scope one never
    assert [a.get("error") for a in answers[:200]] == \
        ["webhook_denied" if i % 10 == 0 else None for i in range(200)]
    assert "url" in answers[200]
    assert answers[201]["error"] == "out_of_scope"
    await sign(client, idp.token(NOW), body)
    assert len(hook.calls) == 200  # all cached


async def test_sign_in_batch_mode_asks_in_one_call(make: Make, idp: FakeIdp, hook: FakeWebhook) -> None:
    client = await make(batch=True)
    answers = await sign(client, idp.token(NOW), items(200))
    [call] = hook.calls
    assert len(call["keys"]) == 200
    assert "key" not in call
    assert call["sub"] == "ada"
    assert [a.get("error") for a in answers] == \
        ["webhook_denied" if i % 10 == 0 else None for i in range(200)]


async def test_in_batch_mode_an_image_request_asks_with_a_list_of_one(
        make: Make, idp: FakeIdp, hook: FakeWebhook) -> None:
    client = await make(batch=True)
    assert await status_and_code(client, "employees/ada.jpg", bearer(idp.token(NOW))) == (200, None)
    assert await status_and_code(client, "employees/denied.jpg", bearer(idp.token(NOW))) \
        == (403, "webhook_denied")
    assert [call["keys"] for call in hook.calls] == [["employees/ada.jpg"], ["employees/denied.jpg"]]


async def test_a_wrong_batch_answer_is_an_error_for_every_item(
        make: Make, idp: FakeIdp, hook: FakeWebhook) -> None:
    client = await make(batch=True, on_error="unavailable")
    hook.body = b'{"result": [true, true]}'  # two answers for five keys
    answers = await sign(client, idp.token(NOW), items(5))
    assert {a["error"] for a in answers} == {"webhook_unavailable"}


async def test_sign_with_a_static_token_does_not_ask(
        proxy: ProxyFactory, idp: FakeIdp, hook: FakeWebhook, clock: ManualClock) -> None:
    config = auth(idp, {"url": hook.url})
    config["tokens"] = {**TOKENS, "dash": {"token": DASH_TOKEN, "sign_scopes": ["photos:employees/*"]}}
    client = await proxy(clock=clock, auth=config)
    answers = await sign(client, DASH_TOKEN, items(3))
    assert all("url" in a for a in answers)
    assert hook.calls == []


# --- Secrets and observability ------------------------------------------------------------------

async def test_the_urls_credentials_and_header_values_never_reach_logs_or_answers(
        proxy: ProxyFactory, idp: FakeIdp, hook: FakeWebhook, clock: ManualClock, seeded: None,
        caplog: pytest.LogCaptureFixture) -> None:
    password, header_secret = "pw-s3cr3t-in-url", "hdr-s3cr3t-token"
    # A generous timeout: this test is about secrets, and its first call (DEBUG logging on, a
    # cold connection) once took 657 ms on a busy host, past the 200 ms default.
    webhook = {"url": hook.url_with_credentials("imgproxy", password),
               "headers": {"X-Api-Key": header_secret}, "timeout": "5s"}
    client = await proxy(clock=clock, auth=auth(idp, webhook))
    bodies = []
    with caplog.at_level(logging.DEBUG):
        response = await client.get("/img/photos/employees/ada.jpg", headers=bearer(idp.token(NOW)))
        assert response.status == 200
        hook.body = b"garbage"
        response = await client.get("/img/photos/employees/x.jpg", headers=bearer(idp.token(NOW)))
        bodies.append(await response.text())
        await hook.close()
        response = await client.get("/img/photos/employees/y.jpg", headers=bearer(idp.token(NOW)))
        bodies.append(await response.text())
    assert hook.headers[0]["X-Api-Key"] == header_secret  # both were sent
    assert hook.headers[0]["Authorization"].startswith("Basic ")
    text = "\n".join([r.getMessage() for r in caplog.records] + [repr(client.app[LIVE].current)] + bodies)
    assert "imgproxy.webhook" in {r.name for r in caplog.records}  # the failures were logged
    for secret in (password, header_secret, "imgproxy:" + password):
        assert secret not in text


async def test_the_access_log_and_metrics_count_the_outcomes(
        client: Client, idp: FakeIdp, caplog: pytest.LogCaptureFixture) -> None:
    token = idp.token(NOW)
    with caplog.at_level(logging.INFO, logger="imgproxy.access"):
        for key in ("employees/ada.jpg", "employees/ada.jpg", "employees/denied.jpg"):
            await status_and_code(client, key, bearer(token))
    lines = [r.getMessage() for r in caplog.records if r.name == "imgproxy.access"]
    assert [line.split(" webhook=")[1].split()[0] for line in lines] == ["allow", "cached", "deny"]
    scrape = metric_samples(client.app[METRICS].exposition().decode())
    for outcome, count in (("allow", 1), ("cached", 1), ("deny", 1)):
        assert scrape[("imgproxy_webhook_requests_total", frozenset({("outcome", outcome)}))] == count
    assert scrape[("imgproxy_webhook_call_duration_seconds_count", frozenset({("result", "ok")}))] == 2
